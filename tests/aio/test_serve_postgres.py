"""``meet443 serve --database``: a meeting acknowledged with 201 survives PostgreSQL crashing right
after, and the server answers 503 (not a crash) while PostgreSQL is down (docs/cluster.md).

PostgreSQL runs here with ``synchronous_commit = off`` and the WAL writer asleep for 10 s: only the
store's own ``synchronous_commit = on`` puts the COMMIT on disk before the 201. ``fsync`` stays on.
The crash is SIGKILL to the postmaster and all its processes at once.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from meet443.cli import main
from tests.aio.test_serve import HOST, Server, start_server, stop_server
from tests.aio.test_signaling import Peer
from tests.postgres import PostgresServer, free_tcp_port

pytestmark = pytest.mark.postgresql


async def meeting_survives_a_crash(server: Server, postgres: PostgresServer, api_key: str) -> None:
    base = f"https://{HOST}:{server.port}"
    auth = {"Authorization": f"Bearer {api_key}"}
    connector = aiohttp.TCPConnector(ssl=server.tls_context())
    tomorrow = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    async with aiohttp.ClientSession(base, connector=connector) as session:
        response = await session.post(
            "/v1/meetings", json={"endDate": tomorrow.isoformat(), "roomMode": "group"}, headers=auth
        )
        assert response.status == 201, await response.text()
        postgres.kill()
        created: dict[str, Any] = await response.json()
        path = f"/v1/meetings/{created['meetingId']}"

        # Down: a clear 503, and a join is told to come back later.
        down = await session.get(path, headers=auth)
        assert down.status == 503
        assert down.headers["Retry-After"] == "5"
        assert (await down.json())["error"]["code"] == "store-unavailable"
        peer = await Peer.open(session, "/v1/ws")
        await peer.send("join", v=1, room=created["roomName"], displayName="Ada")
        assert await peer.closed() == 1013
        assert (await session.get("/healthz")).status == 200

        postgres.start()
        back = await session.get(path, headers=auth)
        assert back.status == 200, await back.text()
        assert await back.json() == {k: v for k, v in created.items() if k != "hostRoomUrl"}
        host_key = created["hostRoomUrl"].partition("?roomKey=")[2]
        peer = await Peer.open(session, "/v1/ws")
        joined = await peer.join(created["roomName"], roomKey=host_key)
        assert joined["type"] == "joined", joined
        assert joined["host"] is True
        assert joined["room"]["mode"] == "group"


def test_acknowledged_meeting_survives_a_postgres_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = {"synchronous_commit": "off", "wal_writer_delay": "10s"}
    with PostgresServer(port=free_tcp_port(), settings=settings) as postgres:
        password_file = tmp_path / "pg-password"
        password_file.write_text(postgres.password + "\n")
        database = ["--database", postgres.url, "--database-password-file", str(password_file)]
        assert main(["api-key", "create", *database]) == 0
        api_key = capsys.readouterr().out.strip()
        server = start_server(tmp_path, *database, "--require-api-key")
        try:
            asyncio.run(meeting_survives_a_crash(server, postgres, api_key))
        finally:
            stop_server(server)
        log = server.log.read_text()
        assert f"meetings and API keys in {postgres.url}" in log
        assert postgres.password not in log
        assert json.dumps(postgres.password)[1:-1] not in log


def test_unreachable_database_stops_the_start_without_showing_the_password(tmp_path: Path) -> None:
    port = free_tcp_port()  # nothing listens there
    finished = subprocess.run(
        [
            sys.executable, "-m", "meet443", "serve", "--listen", HOST, "--port", str(free_tcp_port()),
            "--data-dir", str(tmp_path), "--database", f"postgresql://meet:hunter2-pw@{HOST}:{port}/meet443",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip
    assert finished.returncode == 2, finished.stderr
    assert (
        f"meet443 serve: error: cannot open the meetings database postgresql://meet@{HOST}:{port}/meet443"
        in finished.stderr
    )
    assert "hunter2" not in finished.stderr
