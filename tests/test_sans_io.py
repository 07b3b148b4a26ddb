"""STYLE.md §1: nothing in proto/ or sfu/, nor the node core that composes them (node.py), imports
sockets, clocks, randomness or an event loop.

(``datetime`` is allowed: certificates turn the ``now`` they are given into validity dates.)

Time and randomness come in as arguments. OpenSSL (``OpenSSL``, ``cryptography``) in proto/dtls is
the documented exception: its DTLS timer reads the wall clock and key generation uses its CSPRNG.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import meet443

FORBIDDEN = {
    "asyncio",
    "socket",
    "time",
    "random",
    "secrets",
    "os",
    "selectors",
    "threading",
    "uvloop",
    "aiohttp",
}
PACKAGE = Path(meet443.__file__).parent
PATHS = sorted(
    [
        *(PACKAGE / "proto").rglob("*.py"),
        *(PACKAGE / "sfu").rglob("*.py"),
        PACKAGE / "node.py",
        PACKAGE / "regions.py",
    ]
)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_io_imports(path: Path) -> None:
    imported: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN


def test_every_core_package_is_checked() -> None:
    checked = {p.parent.relative_to(PACKAGE).as_posix() for p in PATHS}
    assert {"proto/stun", "proto/turn", "proto/signaling", "proto/rtp", "proto/sdp", "proto/ice"} <= checked
    assert {"proto/dtls", "sfu", "."} <= checked
