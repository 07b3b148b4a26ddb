"""Opens rooms on the node a client namespace reaches, and stays in them (tests/browser/test_failover.py).

The first join of a room places it on the node it reached (docs/cluster.md "Placement"), so a
participant run from the namespace whose public name resolves to node n1 makes n1 the rooms' home
while the browsers reach it through other nodes. Prints one line ``joined <room> <participant id>``
per room, then stays in each room until ``--leave-after`` others joined it, and leaves (the room
stays where it is while anyone is in it; the opener sends and receives no media).

    python room_opener.py --ca CA --public meet.cx.test --leave-after 2 ROOM [ROOM ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl

import aiohttp


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ca", required=True)
    parser.add_argument("--public", required=True)
    parser.add_argument("--leave-after", type=int, required=True)
    parser.add_argument("rooms", nargs="+")
    args = parser.parse_args()
    context = ssl.create_default_context(cafile=args.ca)
    async with aiohttp.ClientSession() as http:
        sockets = []
        for room in args.rooms:
            ws = await http.ws_connect(f"wss://{args.public}/v1/ws", ssl=context)
            await ws.send_str(json.dumps({"type": "join", "v": 1, "room": room, "displayName": "Opener"}))
            while True:
                message = json.loads((await ws.receive(timeout=10)).data)
                if message["type"] == "joined":
                    break
            print("joined", room, message["selfId"], flush=True)
            sockets.append(ws)
        await asyncio.gather(*(_stay(ws, args.leave_after) for ws in sockets))


async def _stay(ws: aiohttp.ClientWebSocketResponse, others: int) -> None:
    joined = 0
    async for message in ws:
        if (
            message.type is aiohttp.WSMsgType.TEXT
            and json.loads(message.data)["type"] == "participant-joined"
        ):
            joined += 1
            if joined == others:
                await ws.send_str(json.dumps({"type": "leave"}))
                print("left", flush=True)
                await ws.close()
                return


if __name__ == "__main__":
    asyncio.run(main())
