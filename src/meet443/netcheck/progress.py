"""The live progress display of ``meet443 check`` on stderr.

On a terminal: one line per check, redrawn in place (ANSI cursor movement) with a spinner while it
runs and its result when it is done. Elsewhere (a log, a pipe): one plain line per finished check.
stdout stays clean for the report or ``--json``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import TextIO

from meet443.netcheck.results import CheckResult
from meet443.netcheck.verdict import SERVICES, result_text

__all__ = ["Progress"]

_SPINNER = "|/-\\"
_UP = "\x1b[{n}F"  # cursor to the start of the line n lines up
_CLEAR = "\x1b[2K"


class Progress:
    def __init__(self, stream: TextIO, names: Sequence[str], *, live: bool, enabled: bool = True) -> None:
        self.stream = stream
        self.names = list(names)
        self.live = live and enabled
        self.enabled = enabled
        self.lines: dict[str, str] = dict.fromkeys(self.names, "waiting")
        self.running: set[str] = set()
        self._frame = 0
        self._drawn = 0
        self._task: asyncio.Task[None] | None = None

    def _label(self, name: str) -> str:
        return f"{name:<12} {SERVICES.get(name, (name, ''))[0]:<30}"

    def start(self, name: str) -> None:
        self.running.add(name)
        self.lines[name] = "checking"
        self._draw()

    def done(self, result: CheckResult) -> None:
        self.running.discard(result.name)
        self.lines[result.name] = result_text(result)
        if self.enabled and not self.live:
            self.stream.write(f"{self._label(result.name)} {self.lines[result.name]}\n")
            self.stream.flush()
        self._draw()

    def _draw(self) -> None:
        if not self.live:
            return
        out = [_UP.format(n=self._drawn)] if self._drawn else []
        spinner = _SPINNER[self._frame % len(_SPINNER)]
        for name in self.names:
            state = self.lines[name]
            mark = spinner if name in self.running else " "
            out.append(f"{_CLEAR}{mark} {self._label(name)} {state}\n")
        self._drawn = len(self.names)
        self.stream.write("".join(out))
        self.stream.flush()

    async def _animate(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            self._frame += 1
            if self.running:
                self._draw()

    def __enter__(self) -> Progress:
        if self.live:
            self._draw()
            self._task = asyncio.get_running_loop().create_task(self._animate())
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(RuntimeError):
                self._draw()
