"""Global caps with a per-address share (issue 10 §2), counted for the whole server."""

from __future__ import annotations

import logging

import pytest

from meet443.proto.addresses import address_key
from meet443.proto.shares import Grant, LocalSharedCap, RefusalTally, default_share


class TestLocalSharedCap:
    def test_share_then_cap(self) -> None:
        cap = LocalSharedCap(cap=5, share=2)
        assert [cap.acquire("a") for _ in range(3)] == [Grant.GRANTED, Grant.GRANTED, Grant.ADDRESS_SHARE]
        assert [cap.acquire("b") for _ in range(2)] == [Grant.GRANTED, Grant.GRANTED]
        assert cap.acquire("c") is Grant.GRANTED
        assert cap.acquire("d") is Grant.CAP
        assert (cap.held(), cap.held("a"), cap.held("d")) == (5, 2, 0)
        cap.release("a")
        assert cap.acquire("d") is Grant.GRANTED

    def test_keys_holding_nothing_are_forgotten(self) -> None:
        cap = LocalSharedCap(cap=10, share=10)
        for key in map(str, range(10)):
            cap.acquire(key)
            cap.release(key)
        assert cap.held() == 0 and not cap._by_key

    def test_release_without_acquire_is_a_bug(self) -> None:
        with pytest.raises(ValueError, match="release without acquire"):
            LocalSharedCap(cap=1, share=1).release("a")

    def test_share_never_above_the_cap(self) -> None:
        assert LocalSharedCap(cap=8, share=32).share == 8
        with pytest.raises(ValueError):
            LocalSharedCap(cap=0, share=1)


def test_default_share() -> None:
    assert default_share(1024, 32) == 103
    assert default_share(2000, 100) == 200
    assert default_share(100, 32) == 32
    assert default_share(8, 32) == 8


def test_address_key() -> None:
    assert address_key("192.0.2.1") == "192.0.2.1"
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_key("2001:db8::1") == "2001:db8::/64"
    assert address_key("fe80::1%eth0") == "fe80::/64"
    assert address_key("") == ""


def test_refusals_are_one_line_per_interval_with_counts(caplog: pytest.LogCaptureFixture) -> None:
    tally = RefusalTally(logging.getLogger("test.tally"), "connections refused", interval=10.0)
    with caplog.at_level(logging.WARNING):
        for i in range(1000):
            tally.refused("address-share" if i % 2 else "cap", 100.0 + i * 0.025)  # 25 s of refusals
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and tally.total == 1000
    assert lines[0].startswith("connections refused: 1 cap")
    assert "200 address-share, 200 cap" in lines[1]
