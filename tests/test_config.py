"""``meet443 serve`` configuration: flags > environment > TOML file > defaults."""

from __future__ import annotations

import argparse
import ipaddress
import json
import stat
from collections.abc import Mapping
from pathlib import Path

import pytest

import meet443.config
from meet443.config import (
    SERVE_OPTIONS,
    ServeConfig,
    add_serve_arguments,
    default_public_url,
    discover_public_ip,
    ip_literal_warning,
    load_serve_config,
    load_store_settings,
    parse_database_url,
    turn_uris_for,
)
from meet443.exceptions import ConfigError
from meet443.proto.signaling.admission import RoomMode

DISCOVERED_IP = "203.0.113.5"


@pytest.fixture(autouse=True)
def _fixed_public_ip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(meet443.config, "discover_public_ip", lambda: DISCOVERED_IP)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def load(data_dir: Path, *argv: str, env: Mapping[str, str] | None = None) -> ServeConfig:
    return load_serve_config(["--data-dir", str(data_dir), *argv], env or {})


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "meet443.toml"
    path.write_text(text)
    return path


class TestDefaults:
    def test_defaults(self, data_dir: Path) -> None:
        config = load(data_dir)
        assert config.listen == "0.0.0.0"
        assert config.port == 8443
        assert config.public_ip == DISCOVERED_IP
        assert config.relay_ports == (49152, 65535)
        assert config.public_url == f"https://{DISCOVERED_IP}:8443"
        assert config.realm == DISCOVERED_IP
        assert config.turn_users == {}
        assert config.allow_peers == ()
        assert config.cert is None
        assert config.key is None
        assert config.data_dir == data_dir
        assert config.metrics_listen is None
        assert config.log_level == "info"
        assert config.max_allocations_per_user == 10
        assert config.max_allocations == 10_000
        assert config.allocation_bandwidth == 2_000_000
        assert config.unauth_rate == 20
        assert config.unauth_burst == 40
        assert config.max_pending_connections == 1024
        assert config.pending_connections_per_address is None  # 10% of the cap, at least 32
        assert config.signaling_sockets_per_address is None  # 10% of 2 x participants, at least 100
        assert config.credential_ttl == 3600
        assert config.config_file is None

    def test_specific_listen_address_is_the_public_ip(self, data_dir: Path) -> None:
        config = load(data_dir, "--listen", "192.0.2.10")
        assert config.public_ip == "192.0.2.10"
        assert config.public_url == "https://192.0.2.10:8443"

    def test_ipv6_wildcard_listen_discovers(self, data_dir: Path) -> None:
        assert load(data_dir, "--listen", "::").public_ip == DISCOVERED_IP

    def test_data_dir_default_uses_home_of_given_environment(self, tmp_path: Path) -> None:
        config = load_serve_config([], {"HOME": str(tmp_path)})
        assert config.data_dir == tmp_path / ".local/share/meet443"
        assert (config.data_dir / "turn-secret").is_file()

    def test_data_dir_tilde(self, tmp_path: Path) -> None:
        config = load_serve_config(["--data-dir", "~/state"], {"HOME": str(tmp_path)})
        assert config.data_dir == tmp_path / "state"


class TestDerivedNames:
    """The public URL is the one source of host names for links and TURN URIs (RFC 7065)."""

    def test_port_443_is_omitted(self, data_dir: Path) -> None:
        config = load(data_dir, "--public-ip", "198.51.100.1", "--port", "443")
        assert config.public_url == "https://198.51.100.1"
        assert config.turn_uris() == [
            "turn:198.51.100.1:443?transport=udp",
            "turn:198.51.100.1:443?transport=tcp",
            "turns:198.51.100.1:443?transport=tcp",
        ]

    def test_ipv6_in_brackets(self, data_dir: Path) -> None:
        config = load(data_dir, "--public-ip", "2001:db8::1")
        assert config.public_url == "https://[2001:db8::1]:8443"
        assert config.realm == "2001:db8::1"
        assert config.public_host == "2001:db8::1"
        assert config.turn_uris() == [
            "turn:[2001:db8::1]:8443?transport=udp",
            "turn:[2001:db8::1]:8443?transport=tcp",
            "turns:[2001:db8::1]:8443?transport=tcp",
        ]

    def test_ipv6_port_443(self) -> None:
        assert default_public_url("2001:db8::1", 443) == "https://[2001:db8::1]"

    def test_public_url_host_drives_turn_uris_and_realm(self, data_dir: Path) -> None:
        config = load(data_dir, "--public-url", "https://Meet.Example.org/", "--port", "443")
        assert config.public_url == "https://Meet.Example.org"
        assert config.realm == "meet.example.org"
        assert config.turn_uris()[2] == "turns:meet.example.org:443?transport=tcp"

    def test_turn_uris_use_the_server_port(self, data_dir: Path) -> None:
        config = load(data_dir, "--public-url", "https://meet.example.org")
        assert config.turn_uris()[0] == "turn:meet.example.org:8443?transport=udp"

    def test_explicit_realm(self, data_dir: Path) -> None:
        assert load(data_dir, "--realm", "example.org").realm == "example.org"

    def test_an_ip_address_as_public_url_is_warned_about(self) -> None:
        """Firefox ignores turns: at an IP literal: only a host name serves TLS-only networks."""
        warning = ip_literal_warning("https://192.0.2.7")
        assert warning is not None
        assert (
            "turns:192.0.2.7" in warning and "Firefox" in warning and "--public-url https://<name>" in warning
        )
        assert "turns:[2001:db8::2]" in (ip_literal_warning("https://[2001:db8::2]:8443") or "")
        assert ip_literal_warning("https://meet.example.org") is None

    def test_shared_helper(self) -> None:
        assert turn_uris_for("https://[2001:db8::2]:9000/room", 9000) == [
            "turn:[2001:db8::2]:9000?transport=udp",
            "turn:[2001:db8::2]:9000?transport=tcp",
            "turns:[2001:db8::2]:9000?transport=tcp",
        ]


class TestPrecedence:
    """flag > MEET443_<FLAG> > TOML file > default."""

    CASES = [
        # (option, toml value, env value, flag value, field, expected from toml, env, flag)
        ("port", "1111", "2222", "3333", "port", 1111, 2222, 3333),
        ("log-level", '"debug"', "warning", "error", "log_level", "debug", "warning", "error"),
        ("relay-ports", '"10000-10100"', "20000-20100", "30000-30100", "relay_ports",
         (10000, 10100), (20000, 20100), (30000, 30100)),
        ("realm", '"toml.example"', "env.example", "flag.example", "realm",
         "toml.example", "env.example", "flag.example"),
        ("max-allocations-per-user", "3", "4", "5", "max_allocations_per_user", 3, 4, 5),
        ("unauth-rate", "1.5", "2.5", "3.5", "unauth_rate", 1.5, 2.5, 3.5),
        ("metrics-listen", '"127.0.0.1:9100"', "[::1]:9101", "0.0.0.0:9102", "metrics_listen",
         ("127.0.0.1", 9100), ("::1", 9101), ("0.0.0.0", 9102)),
    ]  # fmt: skip

    @pytest.mark.parametrize(
        ("option", "toml", "env", "flag", "field", "from_toml", "from_env", "from_flag"), CASES
    )
    def test_levels(
        self,
        tmp_path: Path,
        data_dir: Path,
        option: str,
        toml: str,
        env: str,
        flag: str,
        field: str,
        from_toml: object,
        from_env: object,
        from_flag: object,
    ) -> None:
        config_file = write_toml(tmp_path, f"{option} = {toml}\n")
        env_name = "MEET443_" + option.upper().replace("-", "_")
        with_file = ["--config", str(config_file)]
        default = getattr(load(data_dir), field)
        assert getattr(load(data_dir, *with_file), field) == from_toml != default
        assert getattr(load(data_dir, *with_file, env={env_name: env}), field) == from_env
        assert (
            getattr(load(data_dir, *with_file, f"--{option}", flag, env={env_name: env}), field) == from_flag
        )

    def test_config_file_from_environment(self, tmp_path: Path, data_dir: Path) -> None:
        config_file = write_toml(tmp_path, "sfu_last_n = 3\n")
        config = load(data_dir, env={"MEET443_CONFIG": str(config_file)})
        assert config.sfu_last_n == 3
        assert config.config_file == config_file

    def test_per_address_shares_from_flag_environment_and_toml(self, tmp_path: Path, data_dir: Path) -> None:
        config = load(
            data_dir,
            "--pending-connections-per-address",
            "40",
            env={"MEET443_SIGNALING_SOCKETS_PER_ADDRESS": "300"},
        )
        assert (config.pending_connections_per_address, config.signaling_sockets_per_address) == (40, 300)
        config_file = write_toml(tmp_path, "pending-connections-per-address = 50\n")
        assert load(data_dir, "--config", str(config_file)).pending_connections_per_address == 50
        with pytest.raises(ConfigError, match="--signaling-sockets-per-address: must be at least 1"):
            load(data_dir, "--signaling-sockets-per-address", "0")

    def test_toml_underscore_keys(self, tmp_path: Path, data_dir: Path) -> None:
        config_file = write_toml(tmp_path, "max_pending_connections = 7\ncredential_ttl = 60\n")
        config = load(data_dir, "--config", str(config_file))
        assert (config.max_pending_connections, config.credential_ttl) == (7, 60)

    def test_toml_data_dir_and_relative_paths(self, tmp_path: Path) -> None:
        (tmp_path / "users.txt").write_text("carol:c\n")
        config_file = write_toml(tmp_path, 'data-dir = "state"\nturn-users-file = "users.txt"\n')
        config = load_serve_config(["--config", str(config_file)], {})
        assert config.data_dir == tmp_path / "state"
        assert config.turn_users == {"carol": "c"}

    def test_empty_environment_variable_is_unset(self, data_dir: Path) -> None:
        assert load(data_dir, env={"MEET443_PORT": "", "MEET443_TURN_USER": " "}).port == 8443

    def test_other_environment_is_ignored(self, data_dir: Path) -> None:
        assert load(data_dir, env={"PORT": "1", "MEET443PORT": "2"}).port == 8443


class TestRepeatable:
    def test_flags(self, data_dir: Path) -> None:
        config = load(data_dir, "--turn-user", "a:1", "--turn-user", "b:2:with:colons")
        assert config.turn_users == {"a": "1", "b": "2:with:colons"}

    def test_environment_is_comma_separated(self, data_dir: Path) -> None:
        config = load(
            data_dir, env={"MEET443_TURN_USER": "a:1, b:2", "MEET443_ALLOW_PEER": "10.0.0.0/8,fd00::/8"}
        )
        assert config.turn_users == {"a": "1", "b": "2"}
        assert config.allow_peers == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))

    def test_toml_lists(self, tmp_path: Path, data_dir: Path) -> None:
        config_file = write_toml(tmp_path, 'turn-user = ["a:1", "b:2"]\nallow_peer = "192.168.0.0/16"\n')
        config = load(data_dir, "--config", str(config_file))
        assert config.turn_users == {"a": "1", "b": "2"}
        assert config.allow_peers == (ipaddress.ip_network("192.168.0.0/16"),)

    def test_higher_level_replaces_the_list(self, tmp_path: Path, data_dir: Path) -> None:
        config_file = write_toml(tmp_path, 'turn-user = ["a:1", "b:2"]\n')
        env = {"MEET443_TURN_USER": "c:3,d:4"}
        assert load(data_dir, "--config", str(config_file), env=env).turn_users == {"c": "3", "d": "4"}
        config = load(data_dir, "--config", str(config_file), "--turn-user", "e:5", env=env)
        assert config.turn_users == {"e": "5"}

    def test_single_ip_is_a_host_network(self, data_dir: Path) -> None:
        assert load(data_dir, "--allow-peer", "127.0.0.1").allow_peers == (
            ipaddress.ip_network("127.0.0.1/32"),
        )


class TestUsersFile:
    def test_comments_and_blank_lines(self, tmp_path: Path, data_dir: Path) -> None:
        users = tmp_path / "users"
        users.write_text("# operators\n\nalice:wonder:land\n   bob:builder  # not a comment\n")
        config = load(data_dir, "--turn-users-file", str(users), "--turn-user", "carol:c")
        assert config.turn_users == {"alice": "wonder:land", "bob": "builder  # not a comment", "carol": "c"}

    def test_bad_line_names_file_and_line(self, tmp_path: Path, data_dir: Path) -> None:
        users = tmp_path / "users"
        users.write_text("alice:ok\nbob-has-no-password\n")
        with pytest.raises(ConfigError, match=r"users:2: expected USER:PASS"):
            load(data_dir, "--turn-users-file", str(users))

    def test_duplicate_user(self, tmp_path: Path, data_dir: Path) -> None:
        users = tmp_path / "users"
        users.write_text("alice:one\n")
        with pytest.raises(ConfigError, match=r"'alice' is defined twice \(--turn-user and .*users:1\)"):
            load(data_dir, "--turn-user", "alice:two", "--turn-users-file", str(users))

    def test_missing_file(self, tmp_path: Path, data_dir: Path) -> None:
        with pytest.raises(ConfigError, match="cannot read TURN users file"):
            load(data_dir, "--turn-users-file", str(tmp_path / "nope"))


class TestTurnSecret:
    def test_generated_once_and_reused(self, data_dir: Path) -> None:
        first = load(data_dir)
        secret_file = data_dir / "turn-secret"
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        assert len(first.turn_secret) >= 43  # 32 random bytes in URL-safe base64
        assert first.turn_secret_origin == str(secret_file)
        assert load(data_dir).turn_secret == first.turn_secret

    def test_generated_secrets_differ_between_data_dirs(self, tmp_path: Path) -> None:
        assert load(tmp_path / "a").turn_secret != load(tmp_path / "b").turn_secret

    def test_empty_secret_file_in_data_dir(self, data_dir: Path) -> None:
        data_dir.mkdir()
        (data_dir / "turn-secret").write_text("\n")
        with pytest.raises(ConfigError, match="empty"):
            load(data_dir)

    def test_flag(self, data_dir: Path) -> None:
        config = load(data_dir, "--turn-secret", "s3cret")
        assert config.turn_secret == "s3cret"
        assert config.turn_secret_origin == "--turn-secret"
        assert not (data_dir / "turn-secret").exists()

    def test_file(self, tmp_path: Path, data_dir: Path) -> None:
        secret_file = tmp_path / "secret"
        secret_file.write_text("from-file\n")
        config = load(data_dir, "--turn-secret-file", str(secret_file))
        assert config.turn_secret == "from-file"

    def test_secret_and_file_at_one_level_conflict(self, tmp_path: Path, data_dir: Path) -> None:
        with pytest.raises(ConfigError, match="--turn-secret and --turn-secret-file are mutually exclusive"):
            load(data_dir, "--turn-secret", "a", "--turn-secret-file", str(tmp_path / "s"))

    def test_flag_file_overrides_environment_secret(self, tmp_path: Path, data_dir: Path) -> None:
        secret_file = tmp_path / "secret"
        secret_file.write_text("from-file")
        config = load(
            data_dir, "--turn-secret-file", str(secret_file), env={"MEET443_TURN_SECRET": "from-env"}
        )
        assert config.turn_secret == "from-file"

    def test_environment_secret_overrides_toml_file(self, tmp_path: Path, data_dir: Path) -> None:
        config_file = write_toml(tmp_path, 'turn-secret-file = "/nonexistent/secret"\n')
        config = load(data_dir, "--config", str(config_file), env={"MEET443_TURN_SECRET": "from-env"})
        assert config.turn_secret == "from-env"


class TestResumeKey:
    """docs/signaling.md "Node restarts": resume tokens are signed with a key kept across restarts."""

    def test_generated_once_0600_and_reused(self, data_dir: Path) -> None:
        first = load(data_dir)
        key_file = data_dir / "resume-key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert len(first.resume_key) >= 43
        assert first.resume_key != first.turn_secret.encode()
        assert load(data_dir).resume_key == first.resume_key
        assert first.resume_key_origin == str(key_file)

    def test_file(self, tmp_path: Path, data_dir: Path) -> None:
        key_file = tmp_path / "key"
        key_file.write_text("k" * 40 + "\n")
        config = load(data_dir, "--resume-key-file", str(key_file))
        assert config.resume_key == b"k" * 40
        assert not (data_dir / "resume-key").exists()

    def test_short_key_refused(self, tmp_path: Path, data_dir: Path) -> None:
        key_file = tmp_path / "key"
        key_file.write_text("short\n")
        with pytest.raises(ConfigError, match="less than 32 characters"):
            load(data_dir, "--resume-key-file", str(key_file))

    def test_redacted(self, data_dir: Path) -> None:
        config = load(data_dir)
        assert config.redacted()["resume_key"] == "<redacted>"
        assert config.resume_key.decode() not in repr(config)

    def test_shutdown_timeout(self, data_dir: Path) -> None:
        assert load(data_dir).shutdown_timeout == 10.0
        assert load(data_dir, "--shutdown-timeout", "2.5").shutdown_timeout == 2.5


class TestRedaction:
    def test_redacted_hides_secret_and_passwords(self, data_dir: Path) -> None:
        config = load(data_dir, "--turn-secret", "s3cret-value", "--turn-user", "alice:pa55word")
        view = config.redacted()
        text = json.dumps(view)  # also proves it is JSON-friendly
        assert "s3cret-value" not in text
        assert "pa55word" not in text
        assert view["turn_secret"] == "<redacted>"
        assert view["turn_users"] == ["alice"]
        assert view["port"] == 8443
        assert view["data_dir"] == str(data_dir)

    def test_database_password_never_shows(self, data_dir: Path, tmp_path: Path) -> None:
        config = load(data_dir, "--database", "postgresql://meet:pa%40ss-in-url@db.internal:5433/meet443")
        assert config.database == "postgresql://meet@db.internal:5433/meet443"
        assert config.database_password == "pa@ss-in-url"
        for text in (json.dumps(config.redacted()), repr(config)):
            assert "pa%40ss" not in text and "pa@ss" not in text
        assert config.redacted()["database"] == "postgresql://meet@db.internal:5433/meet443"
        assert config.redacted()["database_password"] == "<redacted>"
        (tmp_path / "pw").write_text("from-file\n")
        config = load(
            data_dir, "--database", "postgres://meet@db/m", "--database-password-file", str(tmp_path / "pw")
        )
        assert (config.database, config.database_password) == ("postgres://meet@db/m", "from-file")
        assert load(data_dir).database is None  # the single node: SQLite in the data dir

    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (["--database", "mysql://u:hidden@db/m"], "--database: expected postgresql://"),
            (["--database", "postgresql://u:hidden@/m"], "no host"),
            (["--database-password-file", "/x"], "needs --database"),
            (["--database", "postgresql://u:hidden@db/m", "--database-password-file", "/x"], "both in"),
            (
                ["--database", "postgresql://u@db/m", "--database-password-file", "/nonexistent"],
                "cannot read",
            ),
        ],
    )
    def test_bad_database_settings(self, data_dir: Path, argv: list[str], message: str) -> None:
        with pytest.raises(ConfigError, match=message) as caught:
            load(data_dir, *argv)
        assert "hidden" not in str(caught.value)

    def test_database_url_by_socket(self) -> None:
        assert parse_database_url("postgresql://m@/meet?host=/run/postgresql") == (
            "postgresql://m@/meet?host=/run/postgresql",
            None,
        )

    def test_repr_hides_secret_and_passwords(self, data_dir: Path) -> None:
        config = load(data_dir, "--turn-secret", "s3cret-value", "--turn-user", "alice:pa55word")
        assert "s3cret-value" not in repr(config)
        assert "pa55word" not in repr(config)

    def test_bad_turn_user_does_not_echo_the_password(self, data_dir: Path) -> None:
        with pytest.raises(ConfigError) as caught:
            load(data_dir, "--turn-user", ":pa55word")
        assert "pa55word" not in str(caught.value)


class TestErrors:
    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (["--port", "0"], r"--port: must be at least 1 and at most 65535, got 0"),
            (["--port", "https"], r"--port: expected an integer, got 'https'"),
            (["--relay-ports", "6000-5000"], r"--relay-ports: the low port 6000 is above the high port 5000"),
            (["--relay-ports", "5000"], r"--relay-ports: expected LO-HI"),
            (["--relay-ports", "0-10"], r"--relay-ports: must be at least 1"),
            (["--listen", "localhost"], r"--listen: expected an IP address, got 'localhost'"),
            (["--public-ip", "example.org"], r"--public-ip: expected an IP address"),
            (["--allow-peer", "10.0.0.1/8"], r"--allow-peer: expected a CIDR"),
            (["--public-url", "ftp://example.org"], r"--public-url: .* must start with https://"),
            (["--public-url", "https://user:pw@example.org"], r"--public-url: .* user information"),
            (["--public-url", "https://example.org:99999"], r"--public-url: .* not a valid URL"),
            (["--public-url", "https://"], r"--public-url: .* has no host"),
            (["--metrics-listen", "9100"], r"--metrics-listen: expected HOST:PORT"),
            (["--metrics-listen", "::1:9100"], r"--metrics-listen: put an IPv6 address in brackets"),
            (["--sfu-last-n", "0"], r"--sfu-last-n: must be at least 1"),
            (["--log-level", "loud"], r"--log-level: expected one of debug, info"),
            (["--unauth-rate", "-1"], r"--unauth-rate: must be a positive number"),
            (["--unauth-rate", "nan"], r"--unauth-rate: must be a positive number"),
            (["--allocation-bandwidth", "fast"], r"--allocation-bandwidth: expected an integer"),
            (["--credential-ttl", "0"], r"--credential-ttl: must be at least 1"),
            (["--turn-user", "alice"], r"--turn-user: expected USER:PASS"),
            (["--turn-user", "x" * 509 + ":p"], r"--turn-user: user name longer than 508 bytes"),
            (["--realm", " "], r"--realm: must not be empty"),
            (["--no-such-flag"], r"unrecognized arguments: --no-such-flag"),
            (["--por", "1"], r"unrecognized arguments"),  # no abbreviations: env and TOML have none
            (["--cert", "c.pem"], r"--cert and --key go together"),
        ],
    )
    def test_bad_flag(self, data_dir: Path, argv: list[str], message: str) -> None:
        with pytest.raises(ConfigError, match=message):
            load(data_dir, *argv)

    def test_bad_environment_value_names_the_variable(self, data_dir: Path) -> None:
        with pytest.raises(ConfigError, match=r"MEET443_SFU_LAST_N: expected an integer, got 'many'"):
            load(data_dir, env={"MEET443_SFU_LAST_N": "many"})

    def test_bad_toml_value_names_file_and_key(self, tmp_path: Path, data_dir: Path) -> None:
        config_file = write_toml(tmp_path, 'port = "eighty"\n')
        with pytest.raises(ConfigError, match=r"meet443\.toml: port: expected an integer, got 'eighty'"):
            load(data_dir, "--config", str(config_file))

    def test_unknown_toml_key(self, tmp_path: Path, data_dir: Path) -> None:
        config_file = write_toml(tmp_path, "port = 1\nprot = 2\n")
        with pytest.raises(ConfigError, match=r"unknown key 'prot'"):
            load(data_dir, "--config", str(config_file))

    def test_config_key_inside_toml_is_unknown(self, tmp_path: Path, data_dir: Path) -> None:
        config_file = write_toml(tmp_path, 'config = "other.toml"\n')
        with pytest.raises(ConfigError, match=r"unknown key 'config'"):
            load(data_dir, "--config", str(config_file))

    def test_toml_key_twice(self, tmp_path: Path, data_dir: Path) -> None:
        config_file = write_toml(tmp_path, "log-level = 'info'\nlog_level = 'debug'\n")
        with pytest.raises(ConfigError, match=r"given twice"):
            load(data_dir, "--config", str(config_file))

    @pytest.mark.parametrize("value", ["true", "{ a = 1 }", "[1, 2]", "1979-05-27"])
    def test_toml_wrong_type(self, tmp_path: Path, data_dir: Path, value: str) -> None:
        config_file = write_toml(tmp_path, f"port = {value}\n")
        with pytest.raises(ConfigError, match=r"port: expected a string or a number"):
            load(data_dir, "--config", str(config_file))

    def test_invalid_toml(self, tmp_path: Path, data_dir: Path) -> None:
        config_file = write_toml(tmp_path, "port = \n")
        with pytest.raises(ConfigError, match=r"invalid TOML"):
            load(data_dir, "--config", str(config_file))

    def test_missing_config_file(self, tmp_path: Path, data_dir: Path) -> None:
        with pytest.raises(ConfigError, match=r"cannot read config file"):
            load(data_dir, "--config", str(tmp_path / "absent.toml"))

    def test_missing_cert_file(self, tmp_path: Path, data_dir: Path) -> None:
        key = tmp_path / "key.pem"
        key.write_text("x")
        with pytest.raises(ConfigError, match=r"--cert: .* is not a readable file"):
            load(data_dir, "--cert", str(tmp_path / "cert.pem"), "--key", str(key))

    def test_cert_and_key(self, tmp_path: Path, data_dir: Path) -> None:
        cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
        cert.write_text("c")
        key.write_text("k")
        config = load(data_dir, "--cert", str(cert), "--key", str(key))
        assert (config.cert, config.key) == (cert, key)


class TestOptionTable:
    def test_names_derive_from_the_flag(self) -> None:
        (option,) = [o for o in SERVE_OPTIONS if o.name == "relay-ports"]
        assert (option.flag, option.env, option.dest) == (
            "--relay-ports",
            "MEET443_RELAY_PORTS",
            "relay_ports",
        )

    def test_every_option_reaches_the_config(self, data_dir: Path) -> None:
        """Each table entry is read by the builder: none is declared and then forgotten."""
        fields = set(ServeConfig.__dataclass_fields__)
        for option in SERVE_OPTIONS:
            assert {option.dest, option.dest + "s", option.dest + "_file"} & fields or option.dest in {
                "turn_secret_file",
                "turn_users_file",
                "resume_key_file",
                "database_password_file",
            }, option.name


def test_discover_public_ip_is_an_address() -> None:
    # The real function, not the fixture's stand-in; it sends no packet.
    ipaddress.ip_address(discover_public_ip())


class TestMeetingOptions:
    """--embed-origin, --require-api-key, --default-room-mode, --force-relay, --max-participants."""

    def test_defaults(self, data_dir: Path) -> None:
        config = load(data_dir)
        assert config.embed_origins == ()
        assert config.require_api_key is False
        assert config.default_room_mode is RoomMode.NORMAL
        assert config.force_relay is False
        assert config.max_participants == 1000

    @pytest.mark.parametrize("option", ["require-api-key", "force-relay"])
    def test_switch_at_every_level(self, tmp_path: Path, data_dir: Path, option: str) -> None:
        field = option.replace("-", "_")
        env_name = "MEET443_" + field.upper()
        on_file = ["--config", str(write_toml(tmp_path, f"{option} = true\n"))]
        assert getattr(load(data_dir, f"--{option}"), field) is True
        assert getattr(load(data_dir, *on_file), field) is True
        for word in ("1", "true", "YES", "on", " True "):
            assert getattr(load(data_dir, env={env_name: word}), field) is True, word
        for word in ("0", "false", "no", "Off"):
            assert getattr(load(data_dir, *on_file, env={env_name: word}), field) is False, word
        # The --no- form beats a lower level's "on"; the flag beats the environment.
        assert getattr(load(data_dir, *on_file, f"--no-{option}"), field) is False
        assert getattr(load(data_dir, f"--{option}", env={env_name: "0"}), field) is True

    def test_switch_as_toml_string(self, tmp_path: Path, data_dir: Path) -> None:
        config_file = write_toml(tmp_path, 'force_relay = "yes"\nrequire-api-key = false\n')
        config = load(data_dir, "--config", str(config_file))
        assert (config.force_relay, config.require_api_key) == (True, False)

    def test_bad_switch_names_the_variable(self, data_dir: Path) -> None:
        with pytest.raises(
            ConfigError, match=r"MEET443_FORCE_RELAY: expected 1, true, yes, on or 0, .*'maybe'"
        ):
            load(data_dir, env={"MEET443_FORCE_RELAY": "maybe"})

    def test_switch_takes_no_value(self, data_dir: Path) -> None:
        with pytest.raises(ConfigError, match="unrecognized arguments: yes"):
            load(data_dir, "--force-relay", "yes")

    def test_room_mode_and_participants(self, tmp_path: Path, data_dir: Path) -> None:
        config_file = write_toml(tmp_path, 'default-room-mode = "group"\nmax-participants = 50\n')
        config = load(data_dir, "--config", str(config_file))
        assert (config.default_room_mode, config.max_participants) == (RoomMode.GROUP, 50)
        config = load(data_dir, "--default-room-mode", "Normal", env={"MEET443_MAX_PARTICIPANTS": "7"})
        assert (config.default_room_mode, config.max_participants) == (RoomMode.NORMAL, 7)

    def test_embed_origins(self, tmp_path: Path, data_dir: Path) -> None:
        config = load(
            data_dir,
            "--embed-origin",
            "https://Intranet.Example.com/",
            "--embed-origin",
            "https://[2001:DB8::1]:8443",
            "--embed-origin",
            "https://intranet.example.com:443",
        )
        assert config.embed_origins == ("https://intranet.example.com", "https://[2001:db8::1]:8443")
        env = {"MEET443_EMBED_ORIGIN": "https://a.example, https://b.example:9443"}
        assert load(data_dir, env=env).embed_origins == ("https://a.example", "https://b.example:9443")
        config_file = write_toml(tmp_path, 'embed-origin = ["https://c.example"]\n')
        assert load(data_dir, "--config", str(config_file)).embed_origins == ("https://c.example",)

    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (["--embed-origin", "http://a.example"], r"--embed-origin: expected https://host\[:port\]"),
            (["--embed-origin", "https://a.example/app"], r"--embed-origin: an origin has no path"),
            (["--embed-origin", "https://a.example?x"], r"--embed-origin: an origin has no path"),
            (["--embed-origin", "a.example"], r"--embed-origin: expected https://host\[:port\]"),
            (["--embed-origin", "https://*.example"], r"--embed-origin: .* no valid host name"),
            (["--embed-origin", "https://a.example'"], r"--embed-origin: .* no valid host name"),
            (["--embed-origin", "https://a.example:99999"], r"--embed-origin: .* not a valid origin"),
            (["--embed-origin", "https://a.example:0"], r"--embed-origin: .* port 0"),
            (["--embed-origin", "https://u:p@a.example"], r"--embed-origin: .* user information"),
            (["--embed-origin", "https://[::1"], r"--embed-origin: .* not a valid origin"),
            (["--embed-origin", "https://[fe80::1%25eth0]"], r"--embed-origin: .* zone"),
            (["--default-room-mode", "mesh"], r"--default-room-mode: expected normal or group, got 'mesh'"),
            (["--max-participants", "0"], r"--max-participants: must be at least 1"),
        ],
    )
    def test_bad_values(self, data_dir: Path, argv: list[str], message: str) -> None:
        with pytest.raises(ConfigError, match=message):
            load(data_dir, *argv)

    def test_redacted_view_is_json(self, data_dir: Path) -> None:
        view = load(
            data_dir, "--default-room-mode", "group", "--embed-origin", "https://a.example"
        ).redacted()
        assert json.loads(json.dumps(view))["default_room_mode"] == "group"
        assert view["embed_origins"] == ["https://a.example"]

    def test_help(self, capsys: pytest.CaptureFixture[str]) -> None:
        parser = argparse.ArgumentParser()
        add_serve_arguments(parser)
        parser.print_help()
        text = " ".join(capsys.readouterr().out.split())
        assert "--require-api-key, --no-require-api-key" in text
        assert "--default-room-mode MODE" in text
        assert "(default normal) [MEET443_DEFAULT_ROOM_MODE]" in text
        assert "(default False)" not in text


class TestLoadStoreSettings:
    """``meet443 api-key`` finds the store where ``serve`` does."""

    def namespace(self, *argv: str) -> argparse.Namespace:
        parser = argparse.ArgumentParser()
        add_serve_arguments(parser, only=("config", "data-dir", "database", "database-password-file"))
        return parser.parse_args(list(argv))

    def test_levels(self, tmp_path: Path) -> None:
        env = {"HOME": str(tmp_path)}

        def data_dir(*argv: str) -> Path:
            settings = load_store_settings(self.namespace(*argv), env)
            assert settings.database is None
            return settings.data_dir

        assert data_dir() == tmp_path / ".local/share/meet443"
        config_file = write_toml(tmp_path, 'data-dir = "toml-state"\n')
        with_file = ["--config", str(config_file)]
        assert data_dir(*with_file) == tmp_path / "toml-state"
        env["MEET443_DATA_DIR"] = "~/env-state"
        assert data_dir(*with_file) == tmp_path / "env-state"
        flag = ["--data-dir", str(tmp_path / "flag-state")]
        assert data_dir(*with_file, *flag) == tmp_path / "flag-state"

    def test_database_and_its_password_file(self, tmp_path: Path) -> None:
        (tmp_path / "pw").write_text("from-file\n")
        config_file = write_toml(
            tmp_path, 'database = "postgresql://m@db/meet"\ndatabase-password-file = "pw"\n'
        )
        settings = load_store_settings(self.namespace("--config", str(config_file)), {})
        assert (settings.database, settings.database_password) == ("postgresql://m@db/meet", "from-file")
        assert "from-file" not in repr(settings)

    def test_only_declares_the_named_options(self) -> None:
        parser = argparse.ArgumentParser()
        add_serve_arguments(parser, only=("data-dir",))
        assert {action.dest for action in parser._actions} == {"help", "data_dir"}


def test_public_ipv6(tmp_path: Path) -> None:
    base = ["--data-dir", str(tmp_path), "--listen", "127.0.0.1"]
    assert load_serve_config(base, {}).public_ipv6 is None
    assert load_serve_config([*base, "--public-ipv6", "fd00::1"], {}).public_ipv6 == "fd00::1"
    assert load_serve_config(base, {"MEET443_PUBLIC_IPV6": "2001:db8::5"}).public_ipv6 == "2001:db8::5"
    with pytest.raises(ConfigError, match="IPv6"):
        load_serve_config([*base, "--public-ipv6", "192.0.2.1"], {})


def test_joins_per_minute(tmp_path: Path) -> None:
    base = ["--data-dir", str(tmp_path), "--listen", "127.0.0.1"]
    assert load_serve_config(base, {}).joins_per_minute == 10
    assert load_serve_config([*base, "--joins-per-minute", "600"], {}).joins_per_minute == 600
    with pytest.raises(ConfigError):
        load_serve_config([*base, "--joins-per-minute", "0"], {})


class TestRegions:
    def test_a_single_node_is_one_region_itself(self, data_dir: Path) -> None:
        config = load(data_dir, "--public-url", "https://meet.example.org")
        regions = config.region_map()
        assert regions.local == "default"
        assert [(r.name, r.url) for r in regions.regions] == [("default", "https://meet.example.org")]
        assert regions.regions[0].turn_uris == tuple(config.turn_uris())

    def test_region_nodes_from_flags_and_environment(self, data_dir: Path) -> None:
        config = load(
            data_dir,
            "--public-url", "https://eu.meet.example.org",
            "--region", "eu",
            "--region-node", "us=https://us.meet.example.org",
            env={"MEET443_REGION_NODE": "ap=https://ap.meet.example.org:8443"},
        )  # fmt: skip
        regions = config.region_map()
        assert [(r.name, r.url) for r in regions.regions] == [
            ("eu", "https://eu.meet.example.org"),
            ("us", "https://us.meet.example.org"),
        ]
        config = load(data_dir, "--region", "eu", env={"MEET443_REGION_NODE": "ap=https://ap.example:8443"})
        ap = config.region_map().regions[1]
        assert ap.turn_uris[2] == "turns:ap.example:8443?transport=tcp"

    @pytest.mark.parametrize(
        "argv",
        [
            ["--region", "no spaces"],
            ["--region-node", "us"],
            ["--region-node", "us=http://us.example"],
            ["--region-node", "bad name=https://us.example"],
        ],
    )
    def test_bad_regions_are_config_errors(self, data_dir: Path, argv: list[str]) -> None:
        with pytest.raises(ConfigError):
            load(data_dir, *argv)

    def test_a_region_given_twice_is_an_error(self, data_dir: Path) -> None:
        with pytest.raises(ConfigError, match="each region once"):
            load(data_dir, "--region", "eu", "--region-node", "eu=https://eu2.example")


class TestClusterMode:
    """docs/cluster.md "How to run a node in a cluster"."""

    def shared(self, tmp_path: Path) -> list[str]:
        (tmp_path / "secret").write_text("s" * 40)
        (tmp_path / "resume").write_text("r" * 40)
        return [
            "--turn-secret-file", str(tmp_path / "secret"), "--resume-key-file", str(tmp_path / "resume"),
            "--database", "postgresql://meet443@db.example.test/meet443",
        ]  # fmt: skip

    def test_a_node_of_a_cluster(self, data_dir: Path, tmp_path: Path) -> None:
        config = load(
            data_dir,
            "--redis", "rediss://:hunter2-pass@redis.example.test:6380/1",
            "--node-url", "https://n1.example.test/",
            "--region", "eu-west",
            "--drain-timeout", "30",
            *self.shared(tmp_path),
        )  # fmt: skip
        assert config.cluster and config.node_url == "https://n1.example.test"
        assert (config.region, config.drain_timeout) == ("eu-west", 30.0)
        assert "hunter2-pass" not in json.dumps(config.redacted())
        assert "hunter2-pass" not in repr(config)

    def test_single_node_by_default(self, data_dir: Path) -> None:
        config = load(data_dir)
        assert not config.cluster and config.node_url is None and config.drain_timeout == 600.0

    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (["--redis", "redis://r:6379"], "--turn-secret-file"),
            (["--redis", "http://r:6379"], "redis://"),
            (["--node-url", "https://n1.example.test"], "only for cluster mode"),
        ],
    )
    def test_refusals(self, data_dir: Path, argv: list[str], message: str) -> None:
        with pytest.raises(ConfigError, match=message):
            load(data_dir, *argv)

    def test_shared_secrets_a_node_url_and_a_database_are_required(
        self, data_dir: Path, tmp_path: Path
    ) -> None:
        turn, resume, database = (
            self.shared(tmp_path)[0:2],
            self.shared(tmp_path)[2:4],
            self.shared(tmp_path)[4:],
        )
        cluster = ["--redis", "redis://r", "--node-url", "https://n1.test"]
        with pytest.raises(ConfigError, match="--resume-key-file"):
            load(data_dir, *cluster, *turn, *database)
        with pytest.raises(ConfigError, match="--database"):
            load(data_dir, *cluster, *turn, *resume)
        with pytest.raises(ConfigError, match="--node-url"):
            load(data_dir, "--redis", "redis://r", *turn, *resume, *database)
