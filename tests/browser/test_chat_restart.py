"""Chat across a server restart (issue 10 §5), with the real client modules (``js/chat_restart.mjs``
under node) against the real signaling service, composed as ``meet443 serve`` composes it, on
127.0.0.1. The restart is a new service on the same port and data dir: in-memory state gone, the
server epoch taken from disk again.

Before: the first messages after a restart (as many as before it) never appeared, because the
client dropped every ``seq`` it already held. After: all of them, in order.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from aiohttp import web

from meet443.app import build_service
from meet443.config import load_serve_config
from meet443.store.sqlite import SqliteStore

SCRIPT = Path(__file__).with_name("js") / "chat_restart.mjs"
TIMEOUT = 30.0


def node_command() -> list[str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (apt-get install nodejs)")
    # Node 20 has WebSocket behind a flag; later versions have it always.
    probe = subprocess.run([node, "-p", "typeof WebSocket"], capture_output=True, text=True, check=True)
    return [node, *(["--experimental-websocket"] if probe.stdout.strip() != "function" else [])]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def start(data_dir: Path, store: SqliteStore, port: int) -> web.AppRunner:
    config = load_serve_config(
        ["--data-dir", str(data_dir), "--listen", "127.0.0.1", "--public-ip", "127.0.0.1"], {}
    )
    app = web.Application()
    (await build_service(config, store)).signaling.add_routes(app)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def test_chat_survives_a_restart(tmp_path: Path) -> None:
    command = node_command()

    async def scenario() -> dict[str, list[list[object]]]:
        port = free_port()
        async with SqliteStore.open(tmp_path) as store:
            runner = await start(tmp_path, store, port)
            node = await asyncio.create_subprocess_exec(
                *command,
                str(SCRIPT),
                f"ws://127.0.0.1:{port}/v1/ws",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            assert node.stdin is not None and node.stdout is not None and node.stderr is not None
            try:
                line = await asyncio.wait_for(node.stdout.readline(), TIMEOUT)
                assert line == b"restart\n", line + await node.stderr.read()
                await runner.cleanup()  # every socket closes with 1012, as on SIGTERM
                runner = await start(tmp_path, store, port)
                node.stdin.write(b"restarted\n")
                await node.stdin.drain()
                line = await asyncio.wait_for(node.stdout.readline(), TIMEOUT)
                assert line, await node.stderr.read()
                assert await asyncio.wait_for(node.wait(), TIMEOUT) == 0
            finally:
                if node.returncode is None:
                    node.kill()
                    await node.wait()
                await runner.cleanup()
        result: dict[str, list[list[object]]] = json.loads(line)
        return result

    views = asyncio.run(scenario())
    first, second = 1 << 32, 2 << 32  # server epochs 1 and 2, one room made in each run
    expected = [[first, seq, f"m{seq}"] for seq in range(1, 6)] + [
        [second, seq, f"n{seq}"] for seq in range(1, 4)
    ]
    assert views == {"ann": expected, "bob": expected}
