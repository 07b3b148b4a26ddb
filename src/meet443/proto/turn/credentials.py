"""TURN credentials: static long-term users and ephemeral TURN REST API credentials.

The REST form follows draft-uberti-behave-turn-rest-00 §2.2, as coturn implements it for
``--use-auth-secret`` / ``--static-auth-secret``:

* username = ``"<expiry>:<user>"``, or just ``"<expiry>"``, where ``<expiry>`` is a UNIX time in seconds;
* password = ``base64(HMAC-SHA1(key=shared secret, msg=username))``.

The resulting pair is then used as ordinary long-term credentials (RFC 8489 §9.2), so the TURN server only
needs :meth:`CredentialStore.password_for` to learn the password for a USERNAME attribute.

Pure: no clock (``now`` is a parameter), no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

__all__ = [
    "CredentialStore",
    "rest_credentials",
    "rest_password",
    "rest_username_expiry",
]

#: draft-uberti-behave-turn-rest-00 §2.2 and coturn's default ``--rest-api-separator``.
REST_SEPARATOR = ":"


def rest_password(secret: str, username: str) -> str:
    """draft-uberti-behave-turn-rest-00 §2.2: ``base64(HMAC-SHA1(secret, username))``."""
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def rest_credentials(secret: str, user: str | None, ttl: int, now: float) -> tuple[str, str]:
    """Return ``(username, password)`` valid for ``ttl`` seconds from ``now`` (a UNIX time).

    ``user`` is an opaque label for logs and per-user quotas; ``None`` or ``""`` gives the bare
    ``"<expiry>"`` form.
    """
    if ttl <= 0:
        raise ValueError(f"ttl must be positive, not {ttl}")
    expiry = int(now) + ttl
    username = f"{expiry}{REST_SEPARATOR}{user}" if user else str(expiry)
    return username, rest_password(secret, username)


def rest_username_expiry(username: str) -> int | None:
    """The expiry UNIX time of a REST-form username, or ``None`` if it is not in REST form.

    Only the draft's order (timestamp first) is accepted; coturn also tolerates ``"<user>:<expiry>"``.
    """
    timestamp, _, _ = username.partition(REST_SEPARATOR)
    # str.isdigit() also accepts non-ASCII digits such as "²"; the wire form is ASCII only.
    if not timestamp or not timestamp.isascii() or not timestamp.isdigit():
        return None
    return int(timestamp)


class CredentialStore:
    """Answers "which password goes with this USERNAME?" for the TURN server.

    Static users (``--turn-user``) are looked up first; then, if a shared secret is set, a username in
    REST form gets its HMAC password and an ``expired`` flag. Unknown usernames give ``None``.
    """

    __slots__ = ("_secret", "_static_users")

    def __init__(self, secret: str | None, static_users: Mapping[str, str]) -> None:
        self._secret = secret or None
        self._static_users = dict(static_users)

    def __repr__(self) -> str:
        # Never show the secret or passwords, even in a debugger or a crash log.
        return (
            f"CredentialStore(secret={'<set>' if self._secret else None}, "
            f"static_users={sorted(self._static_users)!r})"
        )

    @property
    def has_secret(self) -> bool:
        return self._secret is not None

    def password_for(self, username: str, now: float) -> tuple[str, bool] | None:
        """Return ``(password, expired)`` for ``username`` at UNIX time ``now``, or ``None`` if unknown.

        A REST credential is expired once ``now`` reaches its expiry time; static users never expire.
        What an expired credential may still do is the TURN server's policy, not this store's.
        """
        static = self._static_users.get(username)
        if static is not None:
            return static, False
        if self._secret is None:
            return None
        expiry = rest_username_expiry(username)
        if expiry is None:
            return None
        return rest_password(self._secret, username), now >= expiry
