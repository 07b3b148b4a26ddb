"""``python -m tests.proto.sdp.aiortc_capture`` rewrites ``fixtures/aiortc_offer.sdp``.

aiortc (an independent WebRTC stack) offers audio, video and a data channel.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

FIXTURE = Path(__file__).parent / "fixtures" / "aiortc_offer.sdp"


async def capture() -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTrack(AudioStreamTrack())
        pc.addTrack(VideoStreamTrack())
        pc.createDataChannel("meet443")
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


def main() -> None:
    FIXTURE.write_bytes(asyncio.run(capture()).encode())
    print(FIXTURE)


if __name__ == "__main__":
    main()
