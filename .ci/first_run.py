"""What a newcomer's first command must give: checks a running ``meet443 serve`` from outside.

Run by ``.ci/run`` with the interpreter of a plain install (the README's first command in a fresh
clone: no test extras), so it may use only meet443 itself and its runtime dependencies.

    python .ci/first_run.py imports
    python .ci/first_run.py serve --port N --data-dir DIR --meet443 PATH
    python .ci/first_run.py web --port N

Each step prints one line; the first failing step is named on stderr and the exit status is 1.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib
import os
import pkgutil
import ssl
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

import meet443
from meet443.proto.stun.message import Message, StunClass
from meet443.proto.turn.client import (
    TurnClientSession,
    binding_request,
    describe_error,
    mapped_address,
    relayed_address,
)

HOST = "127.0.0.1"
TIMEOUT = 10.0


class StepFailed(Exception):
    """One step of the check did not give what it must."""


def import_every_module() -> str:
    """Imports every module of the installed package: one needing a test-only package fails here."""

    broken = []
    count = 0
    for module in pkgutil.walk_packages(meet443.__path__, "meet443."):
        if module.name == "meet443.__main__":
            continue  # importing it runs the command line
        count += 1
        try:
            importlib.import_module(module.name)
        except Exception as error:
            broken.append(f"{module.name}: {type(error).__name__}: {error}")
    if broken:
        raise StepFailed("cannot import " + "; ".join(broken))
    return f"{count} modules"


def tls_context(data_dir: Path) -> ssl.SSLContext:
    """Trusts the self-signed certificate the server made in its data dir, and nothing else."""
    return ssl.create_default_context(cafile=str(data_dir / "tls" / "cert.pem"))


async def https_get(port: int, path: str, context: ssl.SSLContext | None) -> tuple[int, str, bytes]:

    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session,
        session.get(f"https://{HOST}:{port}{path}", ssl=context if context else False) as response,
    ):
        return response.status, response.headers.get("Content-Type", ""), await response.read()


async def udp_exchange(port: int, request: bytes) -> bytes:
    """Sends one datagram to the main port, returns the first answer (retransmitting as RFC 8489 §6.2.1)."""
    loop = asyncio.get_running_loop()
    answers: asyncio.Queue[bytes] = asyncio.Queue()

    class Receiver(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            answers.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(Receiver, remote_addr=(HOST, port))
    try:
        wait = 0.5
        for _ in range(5):
            transport.sendto(request)
            try:
                return await asyncio.wait_for(answers.get(), wait)
            except TimeoutError:
                wait *= 2
        raise StepFailed(f"no answer from udp {HOST}:{port}")
    finally:
        transport.close()


async def stun_binding(port: int) -> str:

    transaction = os.urandom(12)
    answer = Message.parse(await udp_exchange(port, binding_request(transaction)))
    mapped = mapped_address(answer)
    if answer.transaction_id != transaction or answer.klass != StunClass.SUCCESS or mapped is None:
        raise StepFailed(f"not a Binding success with XOR-MAPPED-ADDRESS: {answer!r}")
    return f"mapped {mapped}"


def create_api_key(meet443: Path) -> str:
    made = subprocess.run(  # noqa: S603 (our own command, no shell)
        [str(meet443), "api-key", "create", "--label", "first-run"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if made.returncode != 0:
        raise StepFailed(f"meet443 api-key create: {made.stderr.strip()}")
    return made.stdout.strip().splitlines()[-1]


async def create_group_meeting(port: int, context: ssl.SSLContext, key: str) -> str:

    end = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    body = {"endDate": end.strftime("%Y-%m-%dT%H:%M:%SZ"), "roomMode": "group"}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session,
        session.post(
            f"https://{HOST}:{port}/v1/meetings",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            ssl=context,
        ) as response,
    ):
        if response.status != 201:
            raise StepFailed(f"POST /v1/meetings: {response.status} {await response.text()}")
        meeting = await response.json()
    return str(meeting["roomUrl"]).rstrip("/").rsplit("/", 1)[-1]


async def join_group_room_and_allocate(port: int, context: ssl.SSLContext, room: str) -> str:
    """Joins ``room`` over WSS and, while still in it, allocates with the TURN credentials that
    ``joined`` carries (they stop working once the participant leaves: docs/signaling.md)."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session,
        session.ws_connect(f"wss://{HOST}:{port}/v1/ws", ssl=context) as socket,
    ):
        await socket.send_json({"type": "join", "v": 1, "room": room, "displayName": "first run"})
        joined = await socket.receive_json(timeout=TIMEOUT)
        if joined.get("type") != "joined":
            raise StepFailed(f"join answered with {joined}")
        if joined["room"].get("mode") != "group":
            raise StepFailed(f"the room is not a group room: {joined['room']}")
        try:
            relayed = await turn_allocate(port, *turn_credentials(joined))
        except StepFailed as error:
            raise StepFailed(f"TURN Allocate over UDP with the joined credentials: {error}") from None
        await socket.send_json({"type": "leave"})
    return f"room {room}, {len(joined['iceServers'])} ICE servers; TURN {relayed}"


def turn_credentials(joined: dict[str, object]) -> tuple[str, str]:
    for server in joined.get("iceServers", []):  # type: ignore[attr-defined]
        urls = server["urls"] if isinstance(server["urls"], list) else [server["urls"]]
        if any(url.startswith("turn:") and "transport=udp" in url for url in urls):
            return server["username"], server["credential"]
    raise StepFailed(f"joined carries no TURN-over-UDP server: {joined.get('iceServers')}")


async def turn_allocate(port: int, username: str, password: str) -> str:

    session = TurnClientSession(username, password, os.urandom)
    _, request = session.allocate()
    answer = Message.parse(await udp_exchange(port, request))
    if session.learn_challenge(answer):
        _, request = session.allocate()
        answer = Message.parse(await udp_exchange(port, request))
    relayed = relayed_address(answer)
    if answer.klass != StunClass.SUCCESS or relayed is None or not session.authentic(answer):
        raise StepFailed(f"Allocate refused: {describe_error(answer)}")
    _, request = session.delete()
    await udp_exchange(port, request)
    return f"relayed {relayed}"


async def check_serve(port: int, data_dir: Path, meet443: Path) -> None:
    context = tls_context(data_dir)

    async def healthz() -> str:
        status, _, _ = await https_get(port, "/healthz", context)
        if status != 200:
            raise StepFailed(f"status {status}")
        return "200"

    async def meeting_page() -> str:
        status, kind, body = await https_get(port, "/first-run-room", context)
        if status != 200 or not kind.startswith("text/html") or b"room.js" not in body:
            raise StepFailed(f"status {status}, {kind}, {len(body)} bytes")
        return f"{len(body)} bytes of {kind}"

    async def group_join_and_allocate() -> str:
        key = await asyncio.to_thread(create_api_key, meet443)
        room = await create_group_meeting(port, context, key)
        return await join_group_room_and_allocate(port, context, room)

    await run_steps(
        [
            ("HTTPS GET /healthz", healthz),
            ("HTTPS meeting page", meeting_page),
            ("STUN Binding over UDP", lambda: stun_binding(port)),
            ("WSS join to a group room, then a TURN Allocate over UDP while in it", group_join_and_allocate),
        ]
    )


async def check_web(port: int) -> None:
    """The web client is in the installed package (a wheel, not the source tree)."""

    async def page(path: str, wanted: bytes) -> str:
        status, kind, body = await https_get(port, path, None)
        if status != 200 or wanted not in body:
            raise StepFailed(f"status {status}, {kind}, {len(body)} bytes")
        return f"{len(body)} bytes"

    await run_steps(
        [
            ("wheel: landing page", lambda: page("/", b"landing.js")),
            ("wheel: meeting page", lambda: page("/first-run-room", b"room.js")),
            ("wheel: client module", lambda: page("/static/js/room.js", b"import")),
        ]
    )


async def run_steps(steps: list[tuple[str, Callable[[], Awaitable[str]]]]) -> None:
    for name, step in steps:
        try:
            detail = await asyncio.wait_for(step(), 3 * TIMEOUT)
        except StepFailed as error:
            raise StepFailed(f"{name}: {error}") from None
        except Exception as error:
            raise StepFailed(f"{name}: {type(error).__name__}: {error}") from None
        print(f"ok   {name}: {detail}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    steps = parser.add_subparsers(dest="what", required=True)
    steps.add_parser("imports")
    serve = steps.add_parser("serve")
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--data-dir", type=Path, required=True)
    serve.add_argument("--meet443", type=Path, required=True)
    web = steps.add_parser("web")
    web.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        if args.what == "imports":
            print(f"ok   import every module: {import_every_module()}")
        elif args.what == "serve":
            asyncio.run(check_serve(args.port, args.data_dir, args.meet443))
        else:
            asyncio.run(check_web(args.port))
    except StepFailed as error:
        print(f"FAILED {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
