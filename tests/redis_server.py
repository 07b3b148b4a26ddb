"""A real redis-server on loopback for one test module or session, stopped by its PID."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisServer:
    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    password: str | None = None
    #: ``(cert, key)``: serve TLS only (``rediss://``) with this certificate.
    tls: tuple[Path, Path] | None = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://{HOST}:{self.port}/0"

    def start(self) -> None:
        """Start (or start again, on the same port) with no persistence."""
        command = [
            shutil.which("redis-server") or "redis-server",
            "--bind", HOST, "--port", str(self.port), "--save", "", "--appendonly", "no",
            "--dir", str(self.directory), "--daemonize", "no", "--loglevel", "warning",
        ]  # fmt: skip
        if self.password is not None:
            command += ["--requirepass", self.password]
        if self.tls is not None:
            cert, key = self.tls
            command += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert)]
            command += ["--tls-key-file", str(key), "--tls-auth-clients", "no"]
        with (self.directory / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), timeout=0.2):
                return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def info_commandstats(self) -> dict[str, int]:
        """``INFO commandstats`` calls per command, read over a plain socket (RESP inline)."""
        reply = self.command(b"INFO commandstats")
        calls: dict[str, int] = {}
        for line in reply.decode().splitlines():
            if line.startswith("cmdstat_"):
                name, _, fields = line.partition(":")
                values = dict(f.split("=") for f in fields.split(","))
                calls[name.removeprefix("cmdstat_")] = int(values["calls"])
        return calls

    def command(self, line: bytes) -> bytes:
        with socket.create_connection((HOST, self.port), timeout=2) as sock:
            if self.password is not None:
                sock.sendall(b"AUTH " + self.password.encode() + b"\r\n")
                sock.recv(100)
            sock.sendall(line + b"\r\n")
            data = b""
            sock.settimeout(0.3)
            with contextlib.suppress(TimeoutError):
                while chunk := sock.recv(65536):
                    data += chunk
            return data


@contextlib.contextmanager
def running_redis(
    directory: Path, password: str | None = None, tls: tuple[Path, Path] | None = None
) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), directory, password=password, tls=tls)
    server.start()
    try:
        yield server
    finally:
        server.stop()
