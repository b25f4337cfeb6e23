"""Pieces every Python-side transport wrapper shares: the `extra` entries of
a socket, and idempotent reactor registration of the transport's fd."""

from __future__ import annotations

import socket
from asyncio import trsock

from . import _compat


def io_overridden(sock, methods) -> bool:
    """True if `sock` replaces one of `methods`, the socket methods asyncio's
    transport does its I/O with (a `socket.socket` subclass that counts or
    filters traffic): the transport then calls those methods instead of the
    system calls, so the overrides run as they would on the stock loop."""
    cls = type(sock)
    if cls is socket.socket:
        return False
    own = getattr(sock, "__dict__", {})
    return any(
        name in own or getattr(cls, name, None) is not getattr(socket.socket, name, None)
        for name in methods
    )


def socket_extra(extra: dict, sock) -> None:
    """Fill asyncio's `get_extra_info` keys for a socket: 'socket' (a
    TransportSocket, as asyncio hands out), 'sockname' and 'peername' (None
    when the socket has none; a caller-provided 'peername' is kept)."""
    extra["socket"] = trsock.TransportSocket(sock)
    try:
        extra["sockname"] = sock.getsockname()
    except OSError:
        extra["sockname"] = None
    if "peername" not in extra:
        try:
            extra["peername"] = sock.getpeername()
        except OSError:
            extra["peername"] = None


def report_fatal_error(loop, transport, protocol, exc, message: str, quiet: bool) -> None:
    """asyncio's policy for an error that ends a transport: an expected one
    (an OSError such as a reset; the caller decides) is only logged in debug
    mode, anything else goes to the loop's exception handler."""
    if quiet:
        if loop is not None and loop.get_debug():
            _compat.logger().debug("%r: %s", transport, message, exc_info=True)
        return
    loop.call_exception_handler(
        {
            "message": message,
            "exception": exc,
            "transport": transport,
            "protocol": protocol,
        }
    )


class FdWatchMixin:
    """Registers the transport's fd (`_watch_fd`) with the loop's reactor for
    reading or writing at most once, and unregisters only what it did, so
    pause/resume/close paths can call these freely."""

    _loop: object
    _reading = False
    _writing = False

    @property
    def _watch_fd(self) -> int:
        raise NotImplementedError

    def _watch_read(self, callback, *args) -> None:
        if not self._reading:
            self._loop._add_reader(self._watch_fd, callback, *args)
            self._reading = True

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop._remove_reader(self._watch_fd)

    def _watch_write(self, callback, *args) -> None:
        if not self._writing:
            self._loop._add_writer(self._watch_fd, callback, *args)
            self._writing = True

    def _stop_writing(self) -> None:
        if self._writing:
            self._writing = False
            self._loop._remove_writer(self._watch_fd)
