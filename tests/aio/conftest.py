"""Fixtures shared by the loopback tests of ``meet443 serve``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .test_serve import EchoPeer


@pytest.fixture
def echo_peer() -> Iterator[EchoPeer]:
    """A UDP echo peer on loopback, for relayed round trips."""
    peer = EchoPeer()
    yield peer
    peer.close()
