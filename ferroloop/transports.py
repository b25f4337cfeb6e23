"""The public stream transport: an `asyncio.Transport` whose byte path is the
native `_ferroloop.StreamTransport`.

`BaseTransport` declares `__slots__`, which rules out a native base class, so
this is a small Python subclass that owns the native object and binds its hot
methods (write, writelines, ...) onto the instance: those calls reach Rust
without a Python frame, and attribute assignment (`transport.write = ...`)
still works as it does on asyncio's transports."""

from __future__ import annotations

import socket
import warnings
from asyncio import base_events, constants, futures, transports
from asyncio.log import logger

from . import _compat
from ._ferroloop import StreamTransport as _Core
from ._transport_base import io_overridden, report_fatal_error, socket_extra

_INET = (socket.AF_INET, socket.AF_INET6)

_HOT = (
    "write",
    "writelines",
    "get_write_buffer_size",
    "is_closing",
    "is_reading",
    "pause_reading",
    "resume_reading",
)


# The socket methods asyncio's stream transport does its I/O with (from 3.12
# it flushes its buffer with sendmsg).
_SOCKET_IO = ("recv", "recv_into", "send") + _compat.STREAM_SENDMSG


class _StreamTransport(transports._FlowControlMixin, transports.Transport):
    """Transport for a connected TCP or Unix stream socket."""

    _start_tls_compatible = True
    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE
    max_size = 256 * 1024
    _core = None

    def __init__(self, loop, sock, protocol, waiter=None, extra=None, server=None):
        # Not _FlowControlMixin.__init__: flow control state is native.
        transports.BaseTransport.__init__(self, extra)
        socket_extra(self._extra, sock)
        self._sock_fd = sock.fileno()
        core = _Core(loop, sock, protocol, self, server, io_overridden(sock, _SOCKET_IO))
        self._core = core
        for name in _HOT:
            setattr(self, name, getattr(core, name))
        if server is not None:
            if _compat.SERVER_TRACKS_TRANSPORTS:
                server._attach(self)
            else:
                server._attach()
        loop._transports[self._sock_fd] = self
        base_events._set_nodelay(sock)
        if sock.family in _INET:
            # Both ends on this loop? Then writes between them can wait for
            # the end of the turn unobserved (see LoopCore.deferred_writes).
            name, peer = self._extra["sockname"], self._extra["peername"]
            if name is not None and peer is not None:
                core._link_peer((name, peer), (peer, name))
        loop.call_soon(protocol.connection_made, self)
        # Reading starts only once connection_made() has run.
        loop.call_soon(core._start_reading)
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)

    # ---- state asyncio helpers (and libraries) read -------------------------

    @property
    def _sock(self):
        core = self._core
        return None if core is None else core._sock

    @property
    def _loop(self):
        return self._core._loop

    @property
    def _protocol(self):
        return self._core._protocol

    @property
    def _server(self):
        return self._core._server

    @property
    def _closing(self):
        return self._core._closing

    @property
    def _eof(self):
        return self._core._eof

    @property
    def _paused(self):
        return self._core._paused

    @property
    def _conn_lost(self):
        return self._core._conn_lost

    @property
    def _protocol_paused(self):
        return self._core._protocol_paused

    @property
    def _protocol_connected(self):
        return self._core._protocol_connected

    @property
    def _empty_waiter(self):
        return self._core._empty_waiter

    @property
    def _high_water(self):
        return self._core._high_water

    @property
    def _low_water(self):
        return self._core._low_water

    def __repr__(self):
        info = [self.__class__.__name__]
        core = self._core
        if core is None or core._sock is None:
            info.append("closed")
        elif core._closing:
            info.append("closing")
        info.append(f"fd={self._sock_fd}")
        loop = None if core is None else core._loop
        if loop is not None and not loop.is_closed():
            reader, writer = loop._get_watch(self._sock_fd)
            info.append("read=polling" if reader is not None else "read=idle")
            state = "polling" if writer is not None else "idle"
            info.append(f"write=<{state}, bufsize={core._buffer_size}>")
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn=warnings.warn):
        core = self._core
        if core is not None and core._sock is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            core._sock.close()

    # ---- the transport interface (hot ones are also bound per instance) ------

    def write(self, data):
        self._core.write(data)

    def writelines(self, list_of_data):
        self._core.writelines(list_of_data)

    def write_eof(self):
        self._core.write_eof()

    def can_write_eof(self):
        return True

    def get_write_buffer_size(self):
        return self._core.get_write_buffer_size()

    def get_write_buffer_limits(self):
        return self._core.get_write_buffer_limits()

    def set_write_buffer_limits(self, high=None, low=None):
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._core._set_limits(high, low)

    def _maybe_pause_protocol(self):
        self._core._maybe_pause_protocol()

    def _maybe_resume_protocol(self):
        self._core._maybe_resume_protocol()

    def is_closing(self):
        return self._core.is_closing()

    def is_reading(self):
        return self._core.is_reading()

    def pause_reading(self):
        self._core.pause_reading()

    def resume_reading(self):
        self._core.resume_reading()

    def get_protocol(self):
        return self._core.get_protocol()

    def set_protocol(self, protocol):
        self._core.set_protocol(protocol)

    def close(self):
        self._core.close()

    def abort(self):
        self._core.abort()

    def _force_close(self, exc):
        self._core._force_close(exc)

    def _call_connection_lost(self, exc):
        self._core._call_connection_lost(exc)

    def _read_ready(self):
        self._core._read_ready()

    def _write_ready(self):
        self._core._write_ready()

    def _make_empty_waiter(self):
        return self._core._make_empty_waiter()

    def _reset_empty_waiter(self):
        self._core._reset_empty_waiter()

    # ---- cold paths the native side calls back into ---------------------------

    def _fatal_error(self, exc, message="Fatal error on transport"):
        core = self._core
        report_fatal_error(
            core._loop, self, core._protocol, exc, message, isinstance(exc, OSError)
        )
        core._force_close(exc)

    def _flow_control_error(self, message, exc):
        self._core._loop.call_exception_handler(
            {
                "message": message,
                "exception": exc,
                "transport": self,
                "protocol": self._core._protocol,
            }
        )

    def _log_debug(self, fmt):
        logger.debug(fmt, self)
