"""STYLE.md §1: proto/sdp, proto/ice and proto/dtls import no I/O, clocks, randomness or event loop.

OpenSSL (``OpenSSL``, ``cryptography``) is the documented exception in proto/dtls: its DTLS timer
reads the wall clock and key generation uses its CSPRNG.
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
ROOT = Path(meet443.__file__).parent / "proto"
PATHS = sorted(p for name in ("sdp", "ice", "dtls") for p in (ROOT / name).glob("*.py"))


@pytest.mark.parametrize("path", PATHS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_io_imports(path: Path) -> None:
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN


def test_every_package_is_checked() -> None:
    assert {p.parent.name for p in PATHS} == {"sdp", "ice", "dtls"}
