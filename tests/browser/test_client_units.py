"""The browser client's pure modules (URL parameters, ICE configuration, the signaling client against
a fake WebSocket), tested with ``node --test``: milliseconds, no browser, no network."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

JS_TESTS = Path(__file__).with_name("js")


def test_client_modules_with_node() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (apt-get install nodejs); the browser tests cover these too")
    done = subprocess.run(
        [node, "--test", *sorted(str(p) for p in JS_TESTS.glob("*.test.mjs"))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
