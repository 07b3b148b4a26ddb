"""The control ↔ worker messages (src/meet443/ipc.py): every message round-trips, unknown fields
are tolerated, garbage is a ParseError; the forwarded-datagram record round-trips."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meet443 import ipc
from meet443.exceptions import ParseError
from meet443.proto.signaling.messages import Pause, Speaker, SubscribeAnswer

SETTINGS = ipc.WorkerSettings(
    index=1,
    count=2,
    listen="0.0.0.0",
    public_ip="203.0.113.1",
    public_ipv6=None,
    port=443,
    sfu_ports=[3478, 3479],
    relay_ports=(57344, 65535),
    all_relay_ports=(49152, 65535),
    realm="meet.example",
    turn_secret="s3cret",
    turn_users={"alice": "wonderland"},
    allow_peers=["10.0.0.0/8"],
    max_allocations_per_user=10,
    max_allocations=5000,
    allocation_bandwidth=2_000_000,
    unauth_rate=20.0,
    sfu_last_n=9,
    sfu_nack=True,
    log_level="info",
    max_pending=512,
    pending_per_address=52,
    tls_files=ipc.TlsFiles("/var/lib/meet443/tls/cert.pem", "/var/lib/meet443/tls/key.pem"),
)

MESSAGES: list[ipc.IpcMessage] = [
    ipc.Hello(ipc.VERSION, SETTINGS),
    ipc.Ready(4242),
    ipc.SfuCall("room", "p1", None),
    ipc.SfuCall("room", "p1", SubscribeAnswer("v=0\r\n")),
    ipc.SfuCall("room", "p1", Pause("1", True)),
    ipc.SfuLeave("room", "p1"),
    ipc.Revoke("p1", 1_800_000_000.5),
    ipc.ClusterTurn([], []),
    ipc.ClusterTurn(
        [(["10.200.120.2", "2001:db8::2"], [443, 3478, 3479], (51000, 51100))], [("10.200.120.2", 443)]
    ),
    ipc.TurnConnection("tls", ("2001:db8::1", 50000), 0.25),
    ipc.HttpConnection(("2001:db8::1", 50000), 0.5),
    ipc.TlsFiles("/etc/meet443/cert.pem", "/etc/meet443/key.pem"),
    ipc.SfuSignal("room", "p1", Speaker("p2")),
    ipc.RoomSignal("room", Speaker("p2")),
    ipc.RelaysChanged(1, [50000, 50002], [50004]),
    ipc.QuotaHeld(0, "user:p1", 2),
    ipc.WorkerGone(1),
    ipc.MetricsQuery(7),
    ipc.MetricsReport(7, "meet443_workers 2\n"),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(message: ipc.IpcMessage) -> None:
    assert ipc.decode(ipc.encode(message)) == message


def test_unknown_fields_are_tolerated() -> None:
    newer = msgspec.msgpack.encode({"kind": "revoke", "participant": "p1", "until": 5.0, "reason": "x"})
    assert ipc.decode(newer) == ipc.Revoke("p1", 5.0)


@pytest.mark.parametrize(
    "record",
    [b"", b"\xc1", msgspec.msgpack.encode({"kind": "nope"}), msgspec.msgpack.encode({"kind": "ready"})],
)
def test_garbage_is_a_parse_error(record: bytes) -> None:
    with pytest.raises(ParseError):
        ipc.decode(record)


class TestForwardedDatagram:
    @given(
        st.sampled_from(["192.0.2.1", "2001:db8::7", "255.255.255.255"]),
        st.integers(0, 65535),
        st.binary(max_size=1500),
    )
    def test_round_trip(self, ip: str, port: int, data: bytes) -> None:
        record = bytes(ipc.ForwardedDatagram((ip, port), data))
        assert ipc.ForwardedDatagram.parse(record) == ipc.ForwardedDatagram((ip, port), data)

    @pytest.mark.parametrize(
        "record", [b"", b"\x00\x01", b"\x00\x00\x01x", b"\x09\x00\x01short", b"\x01\x00\x01\xff"]
    )
    def test_malformed(self, record: bytes) -> None:
        with pytest.raises(ParseError):
            ipc.ForwardedDatagram.parse(record)
