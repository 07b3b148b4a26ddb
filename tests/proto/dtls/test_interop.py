"""End to end with independent WebRTC stacks: SDP answer/offer, ICE-lite, DTLS-SRTP, SRTP keys.

The peer (aiortc) talks over real UDP on 127.0.0.1 to ``UdpEdge``, a few lines
of asyncio around the sans-I/O mux and DTLS sessions. The SRTP keys exported by our DTLS server
must decrypt what the peer sends (pylibsrtp). Chromium as a peer belongs in a namespace test (it
picks the machine's interface address for media otherwise), which comes with the SFU's wiring.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aioice.ice
import pylibsrtp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from meet443.proto.dtls.certificate import DtlsCertificate
from meet443.proto.dtls.events import HandshakeCompleted
from meet443.proto.dtls.session import DtlsRole, DtlsSrtpSession
from meet443.proto.ice.events import IceState
from meet443.proto.rtp.srtp import SrtpKeyingMaterial, SrtpProfile
from meet443.proto.sdp.description import SessionDescription
from meet443.proto.sdp.negotiation import (
    LocalTransport,
    build_answer,
    remote_transport,
)
from tests.proto.ice.udp_edge import UdpEdge

FIXTURES = Path(__file__).parents[1] / "sdp" / "fixtures"
LIBSRTP_PROFILES = {
    SrtpProfile.AEAD_AES_128_GCM: pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    SrtpProfile.AES128_CM_SHA1_80: pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
}


def run(test: Callable[[], Awaitable[None]], timeout: float = 40) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout))


def inbound(keys: SrtpKeyingMaterial, *, server: bool = True) -> pylibsrtp.Session:
    """What our side (the DTLS server unless told otherwise) receives with."""
    return pylibsrtp.Session(
        pylibsrtp.Policy(
            key=keys.master(client=server),
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
            srtp_profile=LIBSRTP_PROFILES[keys.profile],
        )
    )


def outbound(keys: SrtpKeyingMaterial, *, server: bool = True) -> pylibsrtp.Session:
    return pylibsrtp.Session(
        pylibsrtp.Policy(
            key=keys.master(client=not server),
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
            srtp_profile=LIBSRTP_PROFILES[keys.profile],
        )
    )


def decrypt_all(keys: SrtpKeyingMaterial, packets: list[bytes]) -> tuple[set[int], int]:
    """Unprotect every SRTP/SRTCP packet (RFC 5761 §4: RTCP has payload types 64-95); return the
    RTP SSRCs seen and the number of RTCP packets. Any authentication failure raises."""
    session = inbound(keys)
    ssrcs: set[int] = set()
    rtcp = 0
    for packet in packets:
        if 64 <= packet[1] & 0x7F <= 95:
            session.unprotect_rtcp(packet)
            rtcp += 1
        else:
            plain = session.unprotect(packet)
            ssrcs.add(struct.unpack_from("!I", plain, 8)[0])
    return ssrcs, rtcp


def certificate() -> DtlsCertificate:
    return DtlsCertificate.generate(time.time(), os.urandom)


class TestAiortcPublisher:
    """aiortc offers audio + video, the SFU answers; aioice's full agent, aiortc's DTLS client."""

    @pytest.fixture(autouse=True)
    def loopback_only(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
        monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
        yield

    def test_publish(self) -> None:
        async def test() -> None:
            cert = certificate()
            edge = await UdpEdge.open(cert)
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            try:
                pc.addTrack(AudioStreamTrack())
                pc.addTrack(VideoStreamTrack())
                await pc.setLocalDescription(await pc.createOffer())
                offer = SessionDescription.parse(pc.localDescription.sdp)
                remote = remote_transport(offer)
                dtls = DtlsSrtpSession(cert, DtlsRole.SERVER, remote.fingerprints, label="aiortc")
                ufrag, pwd = edge.add_session("aiortc", dtls, remote.ice_ufrag)
                answer = build_answer(
                    offer, LocalTransport(ufrag, pwd, cert.fingerprint, (edge.address,)), session_id=1
                )
                await pc.setRemoteDescription(RTCSessionDescription(str(answer), "answer"))

                event = await asyncio.wait_for(edge.sessions["aiortc"].handshake, 15)
                assert isinstance(event, HandshakeCompleted), event
                assert event.remote_fingerprint in remote.fingerprints
                assert edge.mux.sessions["aiortc"].state is IceState.CONNECTED
                # Wait for audio and video, then check our keys open every packet.
                media = edge.sessions["aiortc"].media
                for _ in range(200):
                    if len(decrypt_all(event.keys, media)[0]) >= 2:
                        break
                    await asyncio.sleep(0.05)
                ssrcs, _ = decrypt_all(event.keys, media)
                offered = set(offer.media[0].ssrcs()) | set(offer.media[1].ssrcs())
                assert ssrcs and ssrcs <= offered
                assert len(ssrcs) >= 2  # audio and video
            finally:
                await pc.close()
                edge.close()

        run(test)
