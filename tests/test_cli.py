"""The ``meet443`` command line."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
import types
from pathlib import Path

import pytest

import meet443
import meet443.cli
from meet443.cli import main
from meet443.config import ServeConfig
from meet443.meetings import ApiKey
from meet443.proto.turn.credentials import rest_password
from meet443.store import open_store
from tests.conftest import BACKENDS
from tests.postgres import PostgresServer


@pytest.fixture(params=BACKENDS)
def location(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    """Where ``api-key`` keeps keys: ``--data-dir`` (SQLite) or ``--database`` (a fresh PostgreSQL
    database)."""
    if request.param == "sqlite":
        return ["--data-dir", str(tmp_path / "data")]
    server: PostgresServer = request.getfixturevalue("postgres")
    return ["--database", asyncio.run(server.fresh_database())]


def verify(location: list[str], api_key: str) -> ApiKey | None:
    """What the store at ``location`` says about ``api_key``, as a server sharing it would."""

    async def check() -> ApiKey | None:
        flag, value = location
        if flag == "--data-dir":
            store = await open_store(Path(value))
        else:
            store = await open_store(Path("/nonexistent"), value)
        try:
            return await store.api_keys.verify(api_key)
        finally:
            await store.close()

    return asyncio.run(check())


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main(list(argv)) == 0
    out = capsys.readouterr().out
    answer = json.loads(out)
    assert isinstance(answer, dict)
    return answer


class TestTurnCredentials:
    def test_json_answer(self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(time, "time", lambda: 1_699_996_400.5)
        answer = run_json(
            capsys,
            "turn-credentials",
            "--secret",
            "north",
            "--user",
            "alice",
            "--public-url",
            "https://meet.example.org",
            "--port",
            "443",
        )
        # draft-uberti-behave-turn-rest-00 §2.2 response, with the vector of test_credentials.py.
        assert answer == {
            "username": "1700000000:alice",
            "password": "Cd/49soE35ICqcJF/bCTn8Z4OyE=",
            "ttl": 3600,
            "uris": [
                "turn:meet.example.org:443?transport=udp",
                "turn:meet.example.org:443?transport=tcp",
                "turns:meet.example.org:443?transport=tcp",
            ],
        }

    def test_secret_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        secret_file = tmp_path / "turn-secret"
        secret_file.write_text("file-secret\n")
        before = int(time.time())
        answer = run_json(
            capsys,
            "turn-credentials",
            "--secret-file",
            str(secret_file),
            "--ttl",
            "60",
            "--public-url",
            "https://[2001:db8::1]:8443",
        )
        username = answer["username"]
        assert isinstance(username, str)
        assert before + 60 <= int(username) <= int(time.time()) + 60
        assert answer["password"] == rest_password("file-secret", username)
        assert answer["ttl"] == 60
        assert answer["uris"] == [
            "turn:[2001:db8::1]:8443?transport=udp",
            "turn:[2001:db8::1]:8443?transport=tcp",
            "turns:[2001:db8::1]:8443?transport=tcp",
        ]

    def test_default_url_from_discovered_address(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(meet443.cli, "discover_public_ip", lambda: "198.51.100.9")
        answer = run_json(capsys, "turn-credentials", "--secret", "s")
        assert answer["uris"] == [
            "turn:198.51.100.9:8443?transport=udp",
            "turn:198.51.100.9:8443?transport=tcp",
            "turns:198.51.100.9:8443?transport=tcp",
        ]

    def test_missing_secret_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["turn-credentials", "--secret-file", str(tmp_path / "absent")]) == 2
        assert "cannot read secret file" in capsys.readouterr().err

    def test_empty_secret_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        secret_file = tmp_path / "empty"
        secret_file.write_text("\n")
        assert main(["turn-credentials", "--secret-file", str(secret_file)]) == 2
        assert "is empty" in capsys.readouterr().err

    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (["turn-credentials"], "one of the arguments --secret --secret-file is required"),
            (["turn-credentials", "--secret", "a", "--secret-file", "f"], "not allowed with argument"),
            (["turn-credentials", "--secret", "a", "--port", "0"], "must be between 1 and 65535"),
            (["turn-credentials", "--secret", "a", "--ttl", "soon"], "expected an integer"),
            (["turn-credentials", "--secret", "a", "--public-url", "ftp://x"], "must start with https://"),
            ([], "the following arguments are required: COMMAND"),
            (["fly"], "invalid choice: 'fly'"),
        ],
    )
    def test_usage_errors_exit_2(
        self, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
    ) -> None:
        with pytest.raises(SystemExit) as caught:
            main(argv)
        assert caught.value.code == 2
        assert message in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.strip() == f"meet443 {meet443.__version__}"


class TestServe:
    @pytest.fixture
    def served(self, monkeypatch: pytest.MonkeyPatch) -> list[ServeConfig]:
        """Stand in for ``meet443.app`` and record the configs it is given."""
        calls: list[ServeConfig] = []
        fake_app = types.ModuleType("meet443.app")

        def serve(config: ServeConfig) -> int:
            calls.append(config)
            return 0

        fake_app.serve = serve  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "meet443.app", fake_app)
        for name in [name for name in os.environ if name.startswith("MEET443_")]:
            monkeypatch.delenv(name)
        return calls

    def test_builds_config_from_flags_and_environment(
        self, tmp_path: Path, served: list[ServeConfig], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("MEET443_SFU_LAST_N", "3")
        argv = ["serve", "--data-dir", str(tmp_path), "--listen", "127.0.0.1", "--port", "9443"]
        assert main(argv) == 0
        (config,) = served
        assert (config.listen, config.port, config.sfu_last_n) == ("127.0.0.1", 9443, 3)
        assert config.public_url == "https://127.0.0.1:9443"

    def test_config_error_exits_2(
        self, tmp_path: Path, served: list[ServeConfig], capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main(["serve", "--data-dir", str(tmp_path), "--relay-ports", "9-1"]) == 2
        assert "meet443 serve: error: --relay-ports: the low port 9 is above the high port 1" in (
            capsys.readouterr().err
        )
        assert served == []

    def test_unknown_flag_is_a_usage_error(
        self, served: list[ServeConfig], capsys: pytest.CaptureFixture[str]
    ) -> None:
        with pytest.raises(SystemExit) as caught:
            main(["serve", "--bogus"])
        assert caught.value.code == 2
        assert "unrecognized arguments: --bogus" in capsys.readouterr().err
        assert served == []

    def test_help_lists_environment_names(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit):
            main(["serve", "--help"])
        out = capsys.readouterr().out
        assert "--relay-ports LO-HI" in out
        assert "MEET443_RELAY_PORTS" in out


class TestApiKey:
    """``meet443 api-key create|list|revoke`` against ``<data-dir>/meetings.sqlite3`` or ``--database``."""

    @pytest.fixture(autouse=True)
    def _clean_environment(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        for name in [name for name in os.environ if name.startswith("MEET443_")]:
            monkeypatch.delenv(name)
        monkeypatch.setenv("HOME", str(tmp_path / "home"))

    def create(self, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[str, str]:
        assert main(["api-key", "create", *argv]) == 0
        captured = capsys.readouterr()
        api_key = captured.out.strip()
        match = re.fullmatch(r"m443_([0-9a-f]{12})_[a-z2-7]{52}", api_key)
        assert match is not None, captured.out
        assert "cannot be shown again" in captured.err
        return match.group(1), api_key

    def list_keys(self, capsys: pytest.CaptureFixture[str], *argv: str) -> list[str]:
        assert main(["api-key", "list", *argv]) == 0
        return capsys.readouterr().out.splitlines()

    def test_create_list_revoke(self, location: list[str], capsys: pytest.CaptureFixture[str]) -> None:
        data_dir = location
        key_id, api_key = self.create(capsys, "--label", "ci bot", *data_dir)
        other_id, _ = self.create(capsys, *data_dir)
        verified = verify(location, api_key)
        assert verified is not None and verified.key_id == key_id
        lines = self.list_keys(capsys, *data_dir)
        assert len(lines) == 2
        assert re.fullmatch(rf"{key_id}  created \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ  active  ci bot", lines[0])
        assert lines[1].startswith(other_id) and lines[1].endswith("active")
        assert all(api_key.rsplit("_", 1)[1] not in line for line in lines)

        assert main(["api-key", "revoke", key_id, *data_dir]) == 0
        assert " revoked " in capsys.readouterr().out
        assert verify(location, api_key) is None
        assert " revoked " in self.list_keys(capsys, *data_dir)[0]

    def test_admin_key(self, location: list[str], capsys: pytest.CaptureFixture[str]) -> None:
        data_dir = location
        admin_id, api_key = self.create(capsys, "--admin", "--label", "ops", *data_dir)
        scoped_id, scoped_key = self.create(capsys, *data_dir)
        verified = verify(location, api_key)
        assert verified is not None and verified.scope is None
        verified = verify(location, scoped_key)
        assert verified is not None and verified.scope == scoped_id
        lines = self.list_keys(capsys, *data_dir)
        assert lines[0].startswith(admin_id) and lines[0].endswith("  active admin  ops")
        assert lines[1].endswith("  active")

    def test_revoke_unknown_key(self, location: list[str], capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["api-key", "revoke", "feedfeedfeed", *location]) == 1
        assert "no API key 'feedfeedfeed'" in capsys.readouterr().err

    def test_empty_list(self, location: list[str], capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["api-key", "list", *location]) == 0
        captured = capsys.readouterr()
        assert captured.out == ""
        assert "no API keys" in captured.err

    def test_data_dir_as_serve_finds_it(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # The default, under the HOME of the environment.
        key_id, _ = self.create(capsys)
        assert (tmp_path / "home/.local/share/meet443/meetings.sqlite3").is_file()
        # The environment variable beats the default.
        monkeypatch.setenv("MEET443_DATA_DIR", str(tmp_path / "from-env"))
        env_id, _ = self.create(capsys)
        assert (tmp_path / "from-env/meetings.sqlite3").is_file()
        # A TOML file given with --config, its relative path against the file's directory.
        monkeypatch.delenv("MEET443_DATA_DIR")
        (tmp_path / "etc").mkdir()
        (tmp_path / "etc/meet443.toml").write_text('data-dir = "state"\nport = 443\n')
        toml_id, _ = self.create(capsys, "--config", str(tmp_path / "etc/meet443.toml"))
        assert (tmp_path / "etc/state/meetings.sqlite3").is_file()
        assert [line.split()[0] for line in self.list_keys(capsys)] == [key_id]
        assert [
            line.split()[0] for line in self.list_keys(capsys, "--data-dir", str(tmp_path / "from-env"))
        ] == [env_id]
        listed = self.list_keys(capsys, "--config", str(tmp_path / "etc/meet443.toml"))
        assert [line.split()[0] for line in listed] == [toml_id]

    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (["api-key"], "the following arguments are required: ACTION"),
            (["api-key", "revoke"], "the following arguments are required: KEY_ID"),
            (["api-key", "create", "--label", "x" * 101], "at most 100 characters"),
            (["api-key", "create", "--port", "1"], "unrecognized arguments: --port"),
        ],
    )
    def test_usage_errors_exit_2(
        self, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
    ) -> None:
        with pytest.raises(SystemExit) as caught:
            main(argv)
        assert caught.value.code == 2
        assert message in capsys.readouterr().err

    def test_unusable_data_dir_exits_2(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        (tmp_path / "file").write_text("")
        assert main(["api-key", "list", "--data-dir", str(tmp_path / "file/data")]) == 2
        assert "meet443 api-key: error: cannot create" in capsys.readouterr().err

    def test_bad_toml_exits_2(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        (tmp_path / "bad.toml").write_text("prot = 1\n")
        assert main(["api-key", "list", "--config", str(tmp_path / "bad.toml")]) == 2
        assert "unknown key 'prot'" in capsys.readouterr().err


class TestDrain:
    """docs/cluster.md "Drain": ``meet443 drain`` needs the cluster's Redis and the node's URL."""

    def test_needs_redis_and_a_node_url(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["drain", "--node-url", "https://n1.example.test"]) == 2
        assert "--redis and --node-url" in capsys.readouterr().err

    def test_unreachable_redis_is_a_clear_failure(self, capsys: pytest.CaptureFixture[str]) -> None:
        # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
        argv = [
            "drain",
            "--redis",
            "redis://:secret-pw@127.0.0.1:9/0",
            "--node-url",
            "https://n1.example.test",
        ]
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "meet443 drain: error: redis" in err and "secret-pw" not in err
