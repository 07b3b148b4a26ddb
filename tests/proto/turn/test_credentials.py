"""TURN REST API credentials (draft-uberti-behave-turn-rest-00 §2.2) and the credential store."""

from __future__ import annotations

import base64
import hashlib
import hmac
import shutil
import subprocess

import pytest

from meet443.proto.turn.credentials import (
    CredentialStore,
    rest_credentials,
    rest_password,
    rest_username_expiry,
)

# coturn's README.turnserver ("TURN REST API", https://github.com/coturn/coturn/blob/master/README.turnserver)
# defines usercombo = "timestamp:userid", password = base64(hmac(usercombo, shared secret)). These values
# were computed outside Python with the usual shell form of that recipe:
#   printf '%s' "$username" | openssl dgst -binary -sha1 -hmac "$secret" | openssl base64
SECRET = "north"
VECTORS = [
    ("1700000000:alice", "Cd/49soE35ICqcJF/bCTn8Z4OyE="),
    ("1700000000", "CWyHi3zCeWqXBir9thl4m+iZPRY="),
]


class TestRestPassword:
    """draft-uberti-behave-turn-rest-00 §2.2: password = base64(HMAC-SHA1(secret, username))."""

    @pytest.mark.parametrize(("username", "password"), VECTORS)
    def test_known_vectors(self, username: str, password: str) -> None:
        assert rest_password(SECRET, username) == password

    @pytest.mark.parametrize(("username", "password"), VECTORS)
    def test_matches_hmac_computed_by_hand(self, username: str, password: str) -> None:
        digest = hmac.new(SECRET.encode(), username.encode(), hashlib.sha1).digest()
        assert base64.b64encode(digest).decode() == password

    @pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")
    def test_matches_openssl_recipe(self) -> None:
        username = "1800000000:bob"
        mac = subprocess.run(
            ["openssl", "dgst", "-binary", "-sha1", "-hmac", "another secret"],
            input=username.encode(),
            capture_output=True,
            check=True,
        ).stdout
        assert rest_password("another secret", username) == base64.b64encode(mac).decode()

    def test_non_ascii_is_utf8(self) -> None:
        digest = hmac.new("sécret".encode(), "1:zoë".encode(), hashlib.sha1).digest()
        assert rest_password("sécret", "1:zoë") == base64.b64encode(digest).decode()


class TestRestCredentials:
    def test_username_is_expiry_colon_user(self) -> None:
        username, password = rest_credentials(SECRET, "alice", ttl=3600, now=1_699_996_400.75)
        assert username == "1700000000:alice"
        assert password == "Cd/49soE35ICqcJF/bCTn8Z4OyE="

    @pytest.mark.parametrize("user", [None, ""])
    def test_without_user_is_bare_expiry(self, user: str | None) -> None:
        assert rest_credentials(SECRET, user, ttl=100, now=1_699_999_900) == (
            "1700000000",
            "CWyHi3zCeWqXBir9thl4m+iZPRY=",
        )

    def test_ttl_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match="ttl"):
            rest_credentials(SECRET, "alice", ttl=0, now=0)


class TestRestUsernameExpiry:
    @pytest.mark.parametrize(
        ("username", "expiry"),
        [
            ("1700000000:alice", 1_700_000_000),
            ("1700000000", 1_700_000_000),
            ("1700000000:alice:with:colons", 1_700_000_000),
            ("alice", None),
            ("alice:1700000000", None),
            (":alice", None),
            ("", None),
            ("-5:alice", None),
            ("12a:alice", None),
            ("١٢٣:alice", None),  # Arabic-Indic digits pass str.isdigit() but are not a timestamp
        ],
    )
    def test_parse(self, username: str, expiry: int | None) -> None:
        assert rest_username_expiry(username) == expiry


class TestCredentialStore:
    def test_static_user(self) -> None:
        store = CredentialStore(None, {"alice": "wonderland"})
        assert store.password_for("alice", now=0) == ("wonderland", False)
        assert store.password_for("bob", now=0) is None

    def test_rest_user_without_secret_is_unknown(self) -> None:
        store = CredentialStore(None, {})
        assert store.password_for("1700000000:alice", now=0) is None
        assert CredentialStore("", {}).password_for("1700000000:alice", now=0) is None

    def test_rest_user_valid_until_expiry(self) -> None:
        store = CredentialStore(SECRET, {})
        password = "Cd/49soE35ICqcJF/bCTn8Z4OyE="
        assert store.password_for("1700000000:alice", now=1_699_999_999.9) == (password, False)
        assert store.password_for("1700000000:alice", now=1_700_000_000) == (password, True)
        assert store.password_for("1700000000:alice", now=1_800_000_000) == (password, True)

    def test_non_rest_username_with_secret_is_unknown(self) -> None:
        assert CredentialStore(SECRET, {}).password_for("alice", now=0) is None

    def test_static_users_come_first(self) -> None:
        store = CredentialStore(SECRET, {"1700000000:alice": "static"})
        assert store.password_for("1700000000:alice", now=2_000_000_000) == ("static", False)

    def test_round_trip_with_rest_credentials(self) -> None:
        username, password = rest_credentials(SECRET, "carol", ttl=60, now=1000)
        store = CredentialStore(SECRET, {})
        assert store.password_for(username, now=1059) == (password, False)
        assert store.password_for(username, now=1060) == (password, True)

    def test_store_copies_static_users(self) -> None:
        users = {"alice": "wonderland"}
        store = CredentialStore(None, users)
        users["alice"] = "changed"
        assert store.password_for("alice", now=0) == ("wonderland", False)

    def test_repr_hides_secret_and_passwords(self) -> None:
        text = repr(CredentialStore("topsecret", {"alice": "wonderland"}))
        assert "topsecret" not in text
        assert "wonderland" not in text
        assert "alice" in text
