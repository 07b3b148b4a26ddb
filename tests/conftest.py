"""Fixtures shared by the test tree: an event loop per test, and the meetings store on both backends.

``async def`` tests run on the test's :func:`runner`, the loop its fixtures opened their stores on
(an asyncpg pool belongs to one loop). ``store`` and ``open_store`` are parametrized: every test that
uses them runs on SQLite and on a real PostgreSQL (marked ``postgresql``), which one session-wide
server provides (``postgres``, :class:`tests.postgres.PostgresServer`).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from secrets import token_bytes
from typing import Any

import asyncpg
import pytest

from meet443.meetings import RandomBytes
from meet443.store.postgres import PostgresStore
from meet443.store.sqlite import SqliteStore
from meet443.store.tables import TableStore
from tests.postgres import PostgresServer

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgresql),
]
SHARED_DATABASE = "meet443_tests"

OpenStore = Callable[..., Coroutine[Any, Any, TableStore]]


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run an ``async def`` test on its ``runner`` (a new loop if it has none)."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    runner = pyfuncitem.funcargs.get("runner")
    if isinstance(runner, asyncio.Runner):
        runner.run(pyfuncitem.obj(**arguments))
    else:
        asyncio.run(pyfuncitem.obj(**arguments))
    return True


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as loop:
        yield loop


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL for the session. Its default is ``synchronous_commit = off``: the store must
    set it on for its own sessions, whatever the server says."""
    with PostgresServer(settings={"synchronous_commit": "off"}) as server:
        yield server


@pytest.fixture(scope="session")
def shared_database(postgres: PostgresServer) -> str:
    """The database the parametrized store tests share (with the schema), emptied before each."""

    async def create() -> str:
        admin = await asyncpg.connect(postgres.socket_url())
        try:
            await admin.execute(f"CREATE DATABASE {SHARED_DATABASE}")
        finally:
            await admin.close()
        url = postgres.socket_url(SHARED_DATABASE)
        await (await PostgresStore.connect(url)).close()
        return url

    return asyncio.run(create())


async def _empty(url: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("TRUNCATE meetings, api_keys; ALTER SEQUENCE server_epoch RESTART")
    finally:
        await connection.close()


@pytest.fixture(params=BACKENDS)
def open_store(request: pytest.FixtureRequest, tmp_path: Path, runner: asyncio.Runner) -> Iterator[OpenStore]:
    """Opens the test's store (one place per test: opening again reopens it) on the parametrized
    backend; every store opened is closed after the test."""
    opened: list[TableStore] = []
    url = None
    if request.param == "postgresql":
        url = request.getfixturevalue("shared_database")
        runner.run(_empty(url))

    async def open_(random_bytes: RandomBytes = token_bytes) -> TableStore:
        store: TableStore
        if url is None:
            store = SqliteStore.open(tmp_path / "data", random_bytes=random_bytes)
        else:
            store = await PostgresStore.connect(url, random_bytes=random_bytes)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        runner.run(store.close())


@pytest.fixture
def store(open_store: OpenStore, runner: asyncio.Runner) -> TableStore:
    return runner.run(open_store())
