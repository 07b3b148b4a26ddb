"""Network-check credentials: short-lived TURN REST credentials that can only reach this server.

``POST /v1/network/check-credentials`` hands them to anyone (rate limited per address), so that
``meet443 check`` and the ``/check`` page can test the TURN paths before a call. Their username is
``<expiry>:check-<random>``: the TURN core recognises the ``check-`` label and lets such an
allocation relay only to the server's own addresses, and there only to the relayed address of
another check allocation (the relayed round trip of the check), never to a participant or anyone
else. The credential itself is an ordinary
REST credential (draft-uberti-behave-turn-rest-00 §2.2), so no second secret is needed.

Pure: time and randomness are parameters.
"""

from __future__ import annotations

from meet443.proto.turn.credentials import REST_SEPARATOR, rest_credentials, rest_username_expiry

__all__ = ["CHECK_CREDENTIAL_TTL", "CHECK_LABEL", "check_credentials", "is_check_username"]

#: The user part of a check username starts with this.
CHECK_LABEL = "check-"
#: Seconds a check credential can create allocations; the check itself takes a few seconds.
CHECK_CREDENTIAL_TTL = 60


def check_credentials(
    secret: str, token: str, now: float, ttl: int = CHECK_CREDENTIAL_TTL
) -> tuple[str, str]:
    """``(username, password)`` for a network check: ``<now + ttl>:check-<token>``.

    ``token`` is random text from the caller (URL-safe, no ``:``), so that two checks never share
    a username and its per-user allocation quota.
    """
    if not token or REST_SEPARATOR in token:
        raise ValueError("the token must be non-empty and must not contain ':'")
    return rest_credentials(secret, CHECK_LABEL + token, ttl, now)


def is_check_username(username: str) -> bool:
    """Is this a REST username made by :func:`check_credentials`?"""
    if rest_username_expiry(username) is None:
        return False
    return username.partition(REST_SEPARATOR)[2].startswith(CHECK_LABEL)
