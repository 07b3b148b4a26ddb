"""A real PostgreSQL for tests and labs: ``with PostgresServer() as pg: ... pg.url ...``.

``initdb`` runs once per process (:func:`template_cluster`, ~1-2 s); every server copies that cluster
(~0.1 s) and starts on it. A server listens on a unix socket in its own directory, and also on TCP at
``listen:port`` when a port is given (with password authentication: ``.password``); the socket
always trusts local connections. Debian's postgres refuses to run as root, so under root it runs as
the ``postgres`` user, in a directory under /tmp that user can reach.

``fsync`` stays on: the durability tests kill PostgreSQL and need what it acknowledged on disk.
``command_prefix`` runs the server in a lab namespace (``["ip", "netns", "exec", "ns1"]``); the
server then runs through ``runuser``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import types
from collections.abc import Mapping, Sequence
from pathlib import Path

import asyncpg

__all__ = ["PG_BIN", "PostgresServer", "free_tcp_port", "template_cluster"]

_BINS = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
PG_BIN = _BINS[-1].parent if _BINS else Path("/usr/lib/postgresql/bin")
#: The password of the ``postgres`` user over TCP (scram-sha-256).
PASSWORD = "pg-test-password-do-not-log"
SOCKET_PORT = 5432
START_SECONDS = 15.0

_template: Path | None = None


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, for ``PostgresServer(port=...)``."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _as_root() -> bool:
    return os.geteuid() == 0


def _give_to_postgres(path: Path) -> None:
    if _as_root():
        shutil.chown(path, "postgres", "postgres")
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                shutil.chown(Path(root) / name, "postgres", "postgres")


def _run_as_postgres(argv: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        argv, user="postgres" if _as_root() else None, capture_output=True, check=True, cwd="/"
    )


def template_cluster() -> Path:
    """A data directory made by ``initdb`` once per process, removed when the process exits."""
    global _template  # noqa: PLW0603 -- one initdb per test session
    if _template is None:
        root = Path(tempfile.mkdtemp(prefix="meet443-pg-template-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        (root / "password").write_text(PASSWORD)
        _give_to_postgres(root)
        _run_as_postgres(
            [
                str(PG_BIN / "initdb"), "-D", str(root / "data"), "-U", "postgres",
                "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={root / 'password'}",
                "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
            ]
        )  # fmt: skip
        _template = root / "data"
    return _template


class PostgresServer:
    """One PostgreSQL server on a copy of :func:`template_cluster`.

    ``directory``: where its data and socket go (default: a new directory under /tmp, removed on
    :meth:`close`); under root the ``postgres`` user must reach it, which pytest's ``tmp_path``
    (below a 0700 directory) does not allow; the path of the socket must stay under 100 bytes.
    ``settings``: extra ``postgresql.conf`` settings, e.g. the defaults a test wants
    the store to override.
    """

    def __init__(
        self,
        directory: Path | None = None,
        *,
        port: int | None = None,
        listen: str = "127.0.0.1",
        settings: Mapping[str, str] | None = None,
        command_prefix: Sequence[str] = (),
    ) -> None:
        self._owns_directory = directory is None
        self.directory = Path(tempfile.mkdtemp(prefix="meet443-pg-")) if directory is None else directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.data = self.directory / "data"
        self.port = port
        self.listen = listen
        self.password = PASSWORD
        self._settings = dict(settings or {})
        self._prefix = list(command_prefix)
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.directory / "postgres.log"
        self._databases = 0
        shutil.copytree(template_cluster(), self.data)
        _give_to_postgres(self.directory)

    @property
    def socket_dir(self) -> Path:
        return self.directory

    @property
    def url(self) -> str:
        """A URL for ``--database``: TCP when the server has a port, else its unix socket."""
        if self.port is not None:
            host = f"[{self.listen}]" if ":" in self.listen else self.listen
            return f"postgresql://postgres@{host}:{self.port}/postgres"
        return self.socket_url()

    def socket_url(self, database: str = "postgres") -> str:
        """The unix socket, where the ``postgres`` user needs no password."""
        return f"postgresql://postgres@/{database}?host={self.socket_dir}&port={SOCKET_PORT}"

    async def fresh_database(self) -> str:
        """A new, empty database; its socket URL."""
        self._databases += 1
        name = f"meet443_{self._databases}"
        admin = await asyncpg.connect(self.socket_url())
        try:
            await admin.execute(f"CREATE DATABASE {name}")
        finally:
            await admin.close()
        return self.socket_url(name)

    def start(self) -> None:
        listen = self.listen if self.port is not None else ""
        argv = [
            str(PG_BIN / "postgres"), "-D", str(self.data), "-k", str(self.socket_dir),
            "-p", str(self.port or SOCKET_PORT), "-c", f"listen_addresses={listen}", "-c", "fsync=on",
        ]  # fmt: skip
        for name, value in self._settings.items():
            argv += ["-c", f"{name}={value}"]
        pid_file = self.data / "postmaster.pid"
        # A server that was killed leaves its pid file behind, "ready".
        stale = pid_file.read_text() if pid_file.exists() else None
        user: str | None = None
        if self._prefix and _as_root():
            argv = [*self._prefix, "runuser", "-u", "postgres", "--", *argv]
        elif _as_root():
            user = "postgres"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                argv, user=user, stdout=log, stderr=subprocess.STDOUT, cwd="/", start_new_session=True
            )
        self._wait_ready(pid_file, stale)

    def _wait_ready(self, pid_file: Path, stale: str | None) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited:\n{self.log.read_text()}")
            try:
                text = pid_file.read_text()
            except FileNotFoundError:
                text = ""
            lines = text.splitlines()
            # postmaster.pid's 8th line is the server's status (PostgreSQL 10 and later).
            if text != stale and len(lines) >= 8 and lines[7].strip() == "ready":
                return
            time.sleep(0.02)
        raise RuntimeError(f"postgres did not get ready:\n{self.log.read_text()}")

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])

    def kill(self) -> None:
        """SIGKILL the postmaster and every process it forked, at once, as a crash would: what was
        not written to the WAL on disk is gone."""
        assert self.process is not None
        postmaster = self.postmaster_pid()
        doomed = [postmaster, *_children(postmaster)]
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(5)
        self.process = None
        _wait_gone(doomed)

    def stop(self, *, immediate: bool = False) -> None:
        """Fast shutdown (SIGINT: a checkpoint first), or an immediate one (SIGQUIT: the next start
        recovers from the WAL), if running."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.postmaster_pid(), signal.SIGQUIT if immediate else signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        self.process = None

    def close(self) -> None:
        # Nobody will start a server on a directory that goes away: skip the final checkpoint.
        self.stop(immediate=self._owns_directory)
        if self._owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        self.close()


def _state_and_parent(pid: int) -> tuple[str, int] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The fields after the command name (in parentheses, which may contain spaces): state, ppid.
    state, ppid = stat.rsplit(")", 1)[1].split()[:2]
    return state, int(ppid)


def _children(parent: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            found = _state_and_parent(int(entry.name))
            if found is not None and found[1] == parent:
                children.append(int(entry.name))
    return children


def _wait_gone(pids: list[int]) -> None:
    """Until each is dead: gone, or a zombie its new parent has not reaped yet."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        states = [_state_and_parent(pid) for pid in pids]
        if all(state is None or state[0] == "Z" for state in states):
            return
        time.sleep(0.01)
