"""docs/STYLE.md §1: nothing in proto/rtp or sfu imports I/O, clocks or randomness."""

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
PACKAGES = [Path(meet443.__file__).parent / "proto" / "rtp", Path(meet443.__file__).parent / "sfu"]


@pytest.mark.parametrize(
    "path", sorted(p for package in PACKAGES for p in package.glob("*.py")), ids=lambda p: p.name
)
def test_no_io_imports(path: Path) -> None:
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN
