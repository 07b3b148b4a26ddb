"""Browser tests: headless Chromium in network namespaces against ``python -m meet443 serve``.

Each test module builds its own lab (namespaces, links, one server) once and shares it between its
tests; one Playwright driver serves the whole session and keeps one Chromium per namespace. Every
browser and every media packet stays inside namespaces the lab created; the lab stops only the
processes it started and deletes only its own namespaces.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parents[1]
if str(TESTS_DIR) not in sys.path:  # `lab` lives in tests/; importlib import mode does not add it
    sys.path.insert(0, str(TESTS_DIR))

from lab.netns import unavailable_reason  # noqa: E402
from lab.pki import LabPki, make_test_pki  # noqa: E402

from .lab_extra import BrowserPool, browser_tools_missing, nss_home  # noqa: E402

#: Every address a server of these tests listens on; all must be in the certificate.
SERVER_IPS = ("10.200.61.1", "10.200.73.2", "10.200.73.3", "127.0.0.1")
#: The host names servers of these tests are reached by (through the clients' hosts files).
SERVER_NAMES = ("localhost", "meet.lab443.test", *(f"r{k}.lab443.test" for k in (1, 2, 3)))


def require_lab() -> None:
    """Skip when not root (namespaces need it) — except in CI (CI=true), which must run these.
    Anything else missing (Chromium, certutil, Playwright, nft) is a broken set-up: fail, saying what."""
    if os.geteuid() != 0 and os.environ.get("CI", "").lower() not in {"1", "true", "yes"}:
        pytest.skip("browser tests run Chromium in network namespaces: they need root (ip netns add)")
    reason = unavailable_reason() or browser_tools_missing()
    if reason is not None:
        pytest.fail(f"cannot run the browser tests: {reason}", pytrace=False)


# Package scope, not session: while Playwright's sync API is open, its event loop counts as
# running in this thread, and every later test that calls asyncio.run() would fail.
@pytest.fixture(scope="package")
def browser_pki(tmp_path_factory: pytest.TempPathFactory) -> LabPki:
    require_lab()
    return make_test_pki(tmp_path_factory.mktemp("browser-pki"), ips=SERVER_IPS, dns=SERVER_NAMES)


@pytest.fixture(scope="package")
def browsers(tmp_path_factory: pytest.TempPathFactory, browser_pki: LabPki) -> Iterator[BrowserPool]:
    require_lab()
    home = nss_home(browser_pki, tmp_path_factory.mktemp("browser-home"))
    pool = BrowserPool(tmp_path_factory.mktemp("browser-bin"), home)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def console_log(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """Browser console lines of this test; printed when it fails.

    Any Content-Security-Policy violation or uncaught page error fails the test that caused it.
    """
    lines: list[str] = []
    yield lines
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and lines:
        print("\n--- browser console ---\n" + "\n".join(lines[-200:]))
    bad = [line for line in lines if "Content Security Policy" in line or "pageerror:" in line]
    assert not bad, "\n".join(bad)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    setattr(item, f"rep_{report.when}", report)
    return report
