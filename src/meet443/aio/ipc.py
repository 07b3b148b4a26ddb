"""asyncio ends of the control ↔ worker channel and of the workers' forwarding inboxes.

:class:`IpcChannel` moves :mod:`meet443.ipc` messages (and descriptors, ``SCM_RIGHTS``) over one
end of a ``SOCK_SEQPACKET`` socketpair; :class:`ForwardingInbox` and :func:`forward` move
:class:`~meet443.ipc.ForwardedDatagram` records over unix datagram sockets. They only move bytes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections import deque
from collections.abc import Callable, Sequence

from meet443 import ipc
from meet443.exceptions import ParseError
from meet443.proto.addresses import Address

logger = logging.getLogger(__name__)

#: The largest record: a subscribe offer for a room of 50 is about 100 kB.
MAX_RECORD = 1 << 20
#: Descriptors one record may carry (a Hello: three sockets and one inbox per worker).
MAX_FDS = 80
#: Socket buffers of the channel and the inboxes: a burst of media for another worker must not
#: drop because its loop is one turn late (the same reasoning as the UDP ports' buffers).
BUFFER_BYTES = 4 << 20
#: The largest forwarded datagram: a UDP payload and the header.
MAX_FORWARDED = 65536 + 64
#: Records read per wake-up before the loop looks at other sockets.
BATCH = 64


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """A control ↔ worker socketpair with deep buffers."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for sock in (ours, theirs):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER_BYTES)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER_BYTES)
    return ours, theirs


def inbox_pair() -> tuple[socket.socket, socket.socket]:
    """A worker's forwarding inbox: (its sending end, shared by every worker; its receiving end)."""
    sending, receiving = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    sending.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER_BYTES)
    receiving.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER_BYTES)
    return sending, receiving


class IpcChannel:
    """One end of a control ↔ worker channel. ``receive(message, fds)`` gets every message (the
    receiver owns the descriptors); ``closed()`` runs once when the other end is gone."""

    def __init__(
        self,
        sock: socket.socket,
        receive: Callable[[ipc.IpcMessage, list[int]], None],
        closed: Callable[[], None],
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._receive = receive
        self._closed: Callable[[], None] | None = closed
        self._backlog: deque[tuple[bytes, Sequence[int]]] = deque()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._readable)

    def send(self, message: ipc.IpcMessage, fds: Sequence[int] = ()) -> None:
        """Queue ``message`` (with copies of ``fds``, made now: the caller may close its own)."""
        if self._closed is None:
            return
        record = ipc.encode(message)
        if self._backlog:
            self._backlog.append((record, [os.dup(fd) for fd in fds]))
            return
        try:
            socket.send_fds(self.sock, [record], list(fds))
        except BlockingIOError:
            self._backlog.append((record, [os.dup(fd) for fd in fds]))
            self._loop.add_writer(self.sock.fileno(), self._writable)
        except OSError as exc:
            logger.debug("channel send failed: %r", exc)
            self.close()

    def _writable(self) -> None:
        while self._backlog:
            record, fds = self._backlog[0]
            try:
                socket.send_fds(self.sock, [record], list(fds))
            except BlockingIOError:
                return
            except OSError as exc:
                logger.debug("channel send failed: %r", exc)
                self.close()
                return
            self._backlog.popleft()
            for fd in fds:
                os.close(fd)
        self._loop.remove_writer(self.sock.fileno())

    def _readable(self) -> None:
        for _ in range(BATCH):
            try:
                record, fds, flags, _ = socket.recv_fds(self.sock, MAX_RECORD, MAX_FDS)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.debug("channel receive failed: %r", exc)
                self.close()
                return
            if not record and not fds:
                self.close()  # the other end is gone
                return
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                logger.error("dropped a truncated channel record (%d bytes)", len(record))
                _close_all(fds)
                continue
            try:
                message = ipc.decode(record)
            except ParseError as exc:
                logger.error("dropped a channel record: %s", exc)
                _close_all(fds)
                continue
            self._receive(message, fds)
            if self._closed is None:
                return

    def close(self) -> None:
        closed, self._closed = self._closed, None
        if closed is None:
            return
        self._loop.remove_reader(self.sock.fileno())
        self._loop.remove_writer(self.sock.fileno())
        for _, fds in self._backlog:
            _close_all(fds)
        self._backlog.clear()
        self.sock.close()
        closed()


def _close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        os.close(fd)


class ForwardingInbox:
    """A worker's receiving end: ``receive(source, data)`` for every datagram another worker
    met on the main port for this worker's SFU."""

    def __init__(self, sock: socket.socket, receive: Callable[[Address, bytes], None]) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._receive = receive
        self.malformed = 0
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        recv, receive = self.sock.recv, self._receive
        for _ in range(BATCH):
            try:
                record = recv(MAX_FORWARDED)
            except (BlockingIOError, InterruptedError):
                return
            try:
                forwarded = ipc.ForwardedDatagram.parse(record)
            except ParseError:
                self.malformed += 1
                continue
            receive(forwarded.source, forwarded.data)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()


def forward(sock: socket.socket, source: Address, data: bytes) -> bool:
    """Send one datagram to another worker's inbox; False if its buffer is full (it is dropped,
    as the kernel drops a datagram for a full UDP socket)."""
    try:
        sock.send(bytes(ipc.ForwardedDatagram(source, data)))
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return False  # that worker is being respawned; its inbox stays, this is rare
    return True
