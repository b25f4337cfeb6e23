"""Pipe transports: connect_read_pipe and connect_write_pipe.

Read and write transports on a raw fd (pipe, FIFO, socket, character
device or PTY), driven by the native reactor, with the EOF, flow-control and
connection_lost behaviour of asyncio's Unix pipe transports: a PTY whose
other side is gone reads EIO, which ends the transport quietly like EOF."""

from __future__ import annotations

import errno
import os
import stat
import sys
import warnings
import weakref
from asyncio import constants, transports

from . import _compat
from ._transport_base import FdWatchMixin, report_fatal_error
from ._ferroloop import ReadPipeCore, WritePipeCore

_MAX_READ = 256 * 1024


def _set_result_unless_cancelled(fut, result) -> None:
    if not fut.cancelled():
        fut.set_result(result)


class _PipeFdWatch(FdWatchMixin):
    """Pipe transports watch the pipe's own fd."""

    @property
    def _watch_fd(self) -> int:
        return self._fileno


class ReadPipeTransport(_PipeFdWatch, transports.ReadTransport):
    """Read side of a pipe, FIFO, socket, character device or PTY."""

    max_size = _MAX_READ
    _pipe = None

    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        super().__init__(extra)
        self._extra["pipe"] = pipe
        self._loop = loop
        self._pipe = pipe
        self._fileno = pipe.fileno()
        self._protocol = protocol
        self._closing = False
        self._paused = False
        self._reading = False
        mode = os.fstat(self._fileno).st_mode
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
            self._pipe = None
            self._fileno = None
            self._protocol = None
            raise ValueError("Pipe transport is for pipes/sockets only.")
        os.set_blocking(self._fileno, False)
        self._core = ReadPipeCore(weakref.ref(self), self._fileno, protocol, self.max_size)
        loop.call_soon(protocol.connection_made, self)
        loop.call_soon(self._start_reading)
        if waiter is not None:
            loop.call_soon(_set_result_unless_cancelled, waiter, None)

    def _start_reading(self) -> None:
        if self.is_reading():
            self._watch_read(self._core.read_ready, self)

    def is_reading(self) -> bool:
        return not self._paused and not self._closing

    def __repr__(self) -> str:
        info = [self.__class__.__name__]
        if self._pipe is None:
            info.append("closed")
        elif self._closing:
            info.append("closing")
        info.append(f"fd={self._fileno}")
        if self._pipe is not None and self._loop is not None and not self._loop.is_closed():
            info.append("polling" if self._reading else "idle")
        elif self._pipe is not None:
            info.append("open")
        else:
            info.append("closed")
        return "<{}>".format(" ".join(info))

    def _read_ready(self) -> None:
        # The reactor calls the native core directly; this is for callers
        # of the private method.
        self._core.read_ready()

    def _eof(self) -> None:
        """The core read end of file."""
        if self._loop.get_debug():
            _compat.logger().info("%r was closed by peer", self)
        self._closing = True
        self._stop_reading()
        self._loop.call_soon(self._protocol.eof_received)
        self._loop.call_soon(self._call_connection_lost, None)

    def pause_reading(self) -> None:
        if not self.is_reading():
            return
        self._paused = True
        self._stop_reading()
        if self._loop.get_debug():
            _compat.logger().debug("%r pauses reading", self)

    def resume_reading(self) -> None:
        if self._closing or not self._paused:
            return
        self._paused = False
        self._start_reading()
        if self._loop.get_debug():
            _compat.logger().debug("%r resumes reading", self)

    def set_protocol(self, protocol) -> None:
        self._protocol = protocol
        self._core.set_protocol(protocol)

    def get_protocol(self):
        return self._protocol

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._close(None)

    def __del__(self, _warn=warnings.warn) -> None:
        if self._pipe is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._pipe.close()

    def _fatal_error(self, exc, message="Fatal error on pipe transport") -> None:
        # EIO on a PTY whose slave side is closed is the normal end of output.
        quiet = isinstance(exc, OSError) and exc.errno == errno.EIO
        report_fatal_error(self._loop, self, self._protocol, exc, message, quiet)
        self._close(exc)

    def _close(self, exc) -> None:
        self._closing = True
        self._stop_reading()
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._stop_reading()
            self._pipe.close()
            self._pipe = None
            self._protocol = None
            self._core.set_protocol(None)
            self._loop = None


class WritePipeTransport(_PipeFdWatch, transports._FlowControlMixin, transports.WriteTransport):
    """Write side of a pipe, FIFO, socket, character device or PTY."""

    _pipe = None

    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        super().__init__(extra, loop)
        self._extra["pipe"] = pipe
        self._pipe = pipe
        self._fileno = pipe.fileno()
        self._protocol = protocol
        self._buffer = bytearray()
        self._conn_lost = 0
        self._closing = False
        self._writing = False
        self._reading = False
        mode = os.fstat(self._fileno).st_mode
        is_char = stat.S_ISCHR(mode)
        is_fifo = stat.S_ISFIFO(mode)
        is_socket = stat.S_ISSOCK(mode)
        if not (is_char or is_fifo or is_socket):
            self._pipe = None
            self._fileno = None
            self._protocol = None
            raise ValueError(
                "Pipe transport is only for pipes, sockets and character devices"
            )
        os.set_blocking(self._fileno, False)
        self._core = WritePipeCore(weakref.ref(self), self._fileno)
        # The hot path: calls on the instance go straight to the native core.
        self.write = self._core.write
        loop.call_soon(protocol.connection_made, self)
        # The write end of a pipe or socket polls readable when the read end
        # closes: that is how the peer's close is noticed.
        if is_socket or (is_fifo and not sys.platform.startswith("aix")):
            loop.call_soon(self._watch_peer_close)
        if waiter is not None:
            loop.call_soon(_set_result_unless_cancelled, waiter, None)

    def _watch_peer_close(self) -> None:
        if self._pipe is not None and not self._closing:
            self._watch_read(self._read_ready)

    def _start_writing(self) -> None:
        self._watch_write(self._write_ready)

    def __repr__(self) -> str:
        info = [self.__class__.__name__]
        if self._pipe is None:
            info.append("closed")
        elif self._closing:
            info.append("closing")
        info.append(f"fd={self._fileno}")
        if self._pipe is not None and self._loop is not None and not self._loop.is_closed():
            info.append("polling" if self._writing else "idle")
            info.append(f"bufsize={len(self._buffer)}")
        elif self._pipe is not None:
            info.append("open")
        else:
            info.append("closed")
        return "<{}>".format(" ".join(info))

    def get_write_buffer_size(self) -> int:
        return len(self._buffer)

    def _read_ready(self) -> None:
        # Readable on a write end: the reader went away.
        if self._loop.get_debug():
            _compat.logger().info("%r was closed by peer", self)
        if self._buffer:
            self._close(BrokenPipeError())
        else:
            self._close()

    def write(self, data) -> None:
        # Instances call the native core's write (bound in __init__).
        self._core.write(data)

    def _sync_core(self) -> None:
        self._core.set_slow(bool(self._buffer) or self._closing or bool(self._conn_lost))

    def _write_rest(self, data, n) -> None:
        """The core wrote n bytes of data (maybe 0: EAGAIN); queue the rest."""
        self._start_writing()
        self._buffer += memoryview(data)[n:]
        self._sync_core()
        self._maybe_pause_protocol()

    def _write_failed(self, exc) -> None:
        self._conn_lost += 1
        self._sync_core()
        self._fatal_error(exc, "Fatal write error on pipe transport")

    def _write(self, data) -> None:
        """The complete write, for what the core does not do natively."""
        assert isinstance(data, (bytes, bytearray, memoryview)), repr(data)
        if isinstance(data, bytearray):
            data = memoryview(data)
        if not data:
            return
        if self._conn_lost or self._closing:
            if self._conn_lost >= constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                _compat.logger().warning(
                    "pipe closed by peer or os.write(pipe, data) raised exception."
                )
            self._conn_lost += 1
            return
        if not self._buffer:
            try:
                n = os.write(self._fileno, data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._write_failed(exc)
                return
            if n == len(data):
                return
            if n > 0:
                data = memoryview(data)[n:]
            self._start_writing()
        self._buffer += data
        self._sync_core()
        self._maybe_pause_protocol()

    def _write_ready(self) -> None:
        if not self._buffer:
            self._stop_writing()
            return
        try:
            n = os.write(self._fileno, self._buffer)
        except (BlockingIOError, InterruptedError):
            pass
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._buffer.clear()
            self._conn_lost += 1
            self._sync_core()
            self._stop_writing()
            self._fatal_error(exc, "Fatal write error on pipe transport")
        else:
            if n == len(self._buffer):
                self._buffer.clear()
                self._sync_core()
                self._stop_writing()
                self._maybe_resume_protocol()
                if self._closing:
                    self._stop_reading()
                    self._call_connection_lost(None)
                return
            if n > 0:
                del self._buffer[:n]

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self._closing:
            return
        assert self._pipe
        self._closing = True
        self._sync_core()
        if not self._buffer:
            self._stop_reading()
            self._loop.call_soon(self._call_connection_lost, None)

    def set_protocol(self, protocol) -> None:
        self._protocol = protocol

    def get_protocol(self):
        return self._protocol

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._pipe is not None and not self._closing:
            self.write_eof()

    def __del__(self, _warn=warnings.warn) -> None:
        if self._pipe is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._pipe.close()

    def abort(self) -> None:
        self._close(None)

    def _fatal_error(self, exc, message="Fatal error on pipe transport") -> None:
        report_fatal_error(
            self._loop, self, self._protocol, exc, message, isinstance(exc, OSError)
        )
        self._close(exc)

    def _close(self, exc=None) -> None:
        self._closing = True
        self._stop_writing()
        self._buffer.clear()
        self._sync_core()
        self._stop_reading()
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._stop_reading()
            self._stop_writing()
            self._pipe.close()
            self._pipe = None
            self._protocol = None
            self._loop = None


class PipeMethods:
    """Mixin for `Loop`: connect_read_pipe, connect_write_pipe."""

    def _make_read_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        return ReadPipeTransport(self, pipe, protocol, waiter, extra)

    def _make_write_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        return WritePipeTransport(self, pipe, protocol, waiter, extra)

    async def connect_read_pipe(self, protocol_factory, pipe):
        """Wrap the read end of a pipe; return (transport, protocol)."""
        return await self._connect_pipe(protocol_factory, pipe, self._make_read_pipe_transport, "Read")

    async def connect_write_pipe(self, protocol_factory, pipe):
        """Wrap the write end of a pipe; return (transport, protocol)."""
        return await self._connect_pipe(protocol_factory, pipe, self._make_write_pipe_transport, "Write")

    async def _connect_pipe(self, protocol_factory, pipe, make_transport, side):
        protocol = protocol_factory()
        waiter = self.create_future()
        transport = make_transport(pipe, protocol, waiter)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        if self.get_debug():
            _compat.logger().debug(
                "%s pipe %r connected: (%r, %r)", side, pipe.fileno(), transport, protocol
            )
        return transport, protocol
