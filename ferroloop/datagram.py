"""Datagram endpoints: create_datagram_endpoint (UDP and Unix datagram) and
the datagram transport.

The transport behaves as asyncio's selector datagram transport: `sendto` is
tried at once and only queued (with write flow control) when the socket
would block; an OSError from recvfrom/sendto goes to
`protocol.error_received`; anything else is fatal. Its data path is native
(`_ferroloop.DatagramCore`): the reactor calls the core's `read_ready`
directly and the instance's `sendto` is the core's; this class keeps the
queue, flow control and closing, and the core's flags current."""

from __future__ import annotations

import collections
import os
import socket
import stat
import warnings
import weakref
from asyncio import constants, transports

from . import _compat
from ._transport_base import FdWatchMixin, io_overridden, report_fatal_error, socket_extra
from ._ferroloop import DatagramCore

#: Per-datagram overhead counted in the write buffer size (0 before 3.13).
_HEADER_SIZE = _compat.DATAGRAM_HEADER_SIZE

# Bytes asked of one recvfrom() (asyncio's max_size).
_MAX_SIZE = 256 * 1024


def _set_result_unless_cancelled(fut, result) -> None:
    if not fut.cancelled():
        fut.set_result(result)


def _set_reuseport(sock) -> None:
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError("reuse_port not supported by socket module")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        raise ValueError(
            "reuse_port not supported by socket module, "
            "SO_REUSEPORT defined but not implemented."
        )


class DatagramTransport(FdWatchMixin, transports._FlowControlMixin, transports.DatagramTransport):
    """ferroloop's datagram transport (UDP or Unix datagram socket)."""

    max_size = _MAX_SIZE
    _sock = None

    def __init__(self, loop, sock, protocol, address=None, waiter=None, extra=None):
        super().__init__(extra, loop)
        socket_extra(self._extra, sock)
        self._sock = sock
        self._sock_fd = sock.fileno()
        self._protocol = protocol
        self._protocol_connected = True
        self._address = address
        self._buffer = collections.deque()
        self._buffer_size = 0
        self._conn_lost = 0
        self._closing = False
        self._paused = False
        self._reading = False
        self._writing = False
        self._core = DatagramCore(
            weakref.ref(self),
            sock,
            self._sock_fd,
            int(sock.family),
            # Connected (an unnamed Unix socketpair's peer is ''): send().
            self._extra["peername"] is not None,
            address,
            protocol,
            self.max_size,
            # A socket class that overrides recvfrom/sendto/send: do I/O
            # through those methods, as asyncio's transport does.
            io_overridden(sock, ("recvfrom", "sendto", "send")),
        )
        # The hot path: calls on the instance go straight to the native core.
        self.sendto = self._core.sendto
        loop._transports[self._sock_fd] = self
        loop.call_soon(protocol.connection_made, self)
        # Reading starts only once connection_made() has run.
        loop.call_soon(self._start_reading)
        if waiter is not None:
            loop.call_soon(_set_result_unless_cancelled, waiter, None)

    def __repr__(self) -> str:
        info = [self.__class__.__name__]
        if self._sock is None:
            info.append("closed")
        elif self._closing:
            info.append("closing")
        info.append(f"fd={self._sock_fd}")
        if self._loop is not None and not self._loop.is_closed():
            info.append("read=polling" if self._reading else "read=idle")
            state = "polling" if self._writing else "idle"
            info.append(f"write=<{state}, bufsize={self._buffer_size}>")
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn=warnings.warn) -> None:
        if self._sock is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._sock.close()

    # ---- reactor registration ---------------------------------------------

    @property
    def _watch_fd(self) -> int:
        return self._sock_fd

    def _start_reading(self) -> None:
        if not (self._closing or self._paused):
            self._watch_read(self._core.read_ready, self)

    def _start_writing(self) -> None:
        self._watch_write(self._sendto_ready)

    # ---- BaseTransport / ReadTransport-like API ---------------------------

    def _sync_core(self) -> None:
        self._core.set_flags(bool(self._conn_lost), bool(self._buffer) or bool(self._conn_lost))

    def set_protocol(self, protocol) -> None:
        self._protocol = protocol
        self._protocol_connected = True
        self._core.set_protocol(protocol)

    def get_protocol(self):
        return self._protocol

    def is_closing(self) -> bool:
        return self._closing

    def is_reading(self) -> bool:
        return not self._closing and not self._paused

    def pause_reading(self) -> None:
        if not self.is_reading():
            return
        self._paused = True
        self._stop_reading()

    def resume_reading(self) -> None:
        if self._closing or not self._paused:
            return
        self._paused = False
        self._start_reading()

    def get_write_buffer_size(self) -> int:
        return self._buffer_size

    def abort(self) -> None:
        self._force_close(None)

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._stop_reading()
        if not self._buffer:
            self._conn_lost += 1
            self._sync_core()
            self._stop_writing()
            self._loop.call_soon(self._call_connection_lost, None)

    def _fatal_error(self, exc, message="Fatal error on transport") -> None:
        report_fatal_error(
            self._loop, self, self._protocol, exc, message, isinstance(exc, OSError)
        )
        self._force_close(exc)

    def _force_close(self, exc) -> None:
        if self._conn_lost:
            return
        if self._buffer:
            self._buffer.clear()
            self._buffer_size = 0
            self._stop_writing()
            self._sync_core()
        if not self._closing:
            self._closing = True
            self._stop_reading()
        self._conn_lost += 1
        self._sync_core()
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc) -> None:
        try:
            if self._protocol_connected:
                self._protocol.connection_lost(exc)
        finally:
            self._stop_reading()
            self._stop_writing()
            self._sock.close()
            self._sock = None
            self._protocol = None
            self._core.set_protocol(None)
            self._loop = None

    # ---- data path -----------------------------------------------------------

    def sendto(self, data, addr=None) -> None:
        # Instances call the native core's sendto (bound in __init__); this is
        # for calls through the class.
        self._core.sendto(data, addr)

    def _sendto(self, data, addr=None) -> None:
        """The complete sendto, for what the core does not do natively."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"data argument must be a bytes-like object, "
                f"not {type(data).__name__!r}"
            )
        if not data and not _compat.DATAGRAM_SENDS_EMPTY:
            return
        if self._address:
            if addr not in (None, self._address):
                raise ValueError(f"Invalid address: must be None or {self._address}")
            addr = self._address
        if self._conn_lost and self._address:
            if self._conn_lost >= constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                _compat.logger().warning("socket.send() raised exception.")
            self._conn_lost += 1
            return
        if not self._buffer:
            try:
                if self._extra["peername"] is not None:
                    self._sock.send(data)
                else:
                    self._sock.sendto(data, addr)
                return
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:
                self._protocol.error_received(exc)
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal write error on datagram transport")
                return
        self._queue(data, addr)

    def _queue(self, data, addr) -> None:
        """The socket would block: queue the datagram (an immutable copy)."""
        self._start_writing()
        self._buffer.append((bytes(data), addr))
        self._buffer_size += len(data) + _HEADER_SIZE
        self._sync_core()
        self._maybe_pause_protocol()

    def _sendto_ready(self) -> None:
        while self._buffer:
            data, addr = self._buffer.popleft()
            self._buffer_size -= len(data) + _HEADER_SIZE
            try:
                if self._extra["peername"] is not None:
                    self._sock.send(data)
                else:
                    self._sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                self._buffer.appendleft((data, addr))
                self._buffer_size += len(data) + _HEADER_SIZE
                break
            except OSError as exc:
                self._sync_core()
                self._protocol.error_received(exc)
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._sync_core()
                self._fatal_error(exc, "Fatal write error on datagram transport")
                return
        self._sync_core()
        self._maybe_resume_protocol()
        self._sync_core()
        if not self._buffer:
            self._stop_writing()
            if self._closing:
                self._call_connection_lost(None)


class DatagramMethods:
    """Mixin for `Loop`: create_datagram_endpoint."""

    def _make_datagram_transport(self, sock, protocol, address=None, waiter=None, extra=None):
        return DatagramTransport(self, sock, protocol, address, waiter, extra)

    async def create_datagram_endpoint(
        self,
        protocol_factory,
        local_addr=None,
        remote_addr=None,
        *,
        family=0,
        proto=0,
        flags=0,
        reuse_port=None,
        allow_broadcast=None,
        sock=None,
    ):
        """Create a datagram endpoint; return (transport, protocol)."""
        if sock is not None:
            _compat.check_datagram_socket(sock, socket)
            if (
                local_addr
                or remote_addr
                or family
                or proto
                or flags
                or reuse_port
                or allow_broadcast
            ):
                opts = dict(
                    local_addr=local_addr,
                    remote_addr=remote_addr,
                    family=family,
                    proto=proto,
                    flags=flags,
                    reuse_port=reuse_port,
                    allow_broadcast=allow_broadcast,
                )
                problems = ", ".join(f"{k}={v}" for k, v in opts.items() if v)
                raise ValueError(
                    f"socket modifier keyword arguments can not be used "
                    f"when sock is specified. ({problems})"
                )
            sock.setblocking(False)
            r_addr = None
        else:
            if not (local_addr or remote_addr):
                if family == 0:
                    raise ValueError("unexpected address family")
                addr_pairs_info = (((family, proto), (None, None)),)
            elif hasattr(socket, "AF_UNIX") and family == socket.AF_UNIX:
                for addr in (local_addr, remote_addr):
                    if addr is not None and not isinstance(addr, str):
                        raise TypeError("string is expected")
                if local_addr and local_addr[0] not in (0, "\x00"):
                    try:
                        if stat.S_ISSOCK(os.stat(local_addr).st_mode):
                            os.remove(local_addr)
                    except FileNotFoundError:
                        pass
                    except OSError as err:
                        _compat.logger().error(
                            "Unable to check or remove stale UNIX socket %r: %r",
                            local_addr,
                            err,
                        )
                addr_pairs_info = (((family, proto), (local_addr, remote_addr)),)
            else:
                addr_infos: dict = {}
                for idx, addr in ((0, local_addr), (1, remote_addr)):
                    if addr is not None:
                        if not (isinstance(addr, tuple) and len(addr) == 2):
                            raise TypeError("2-tuple is expected")
                        infos = await self._ensure_resolved(
                            addr,
                            family=family,
                            type=socket.SOCK_DGRAM,
                            proto=proto,
                            flags=flags,
                        )
                        if not infos:
                            raise OSError("getaddrinfo() returned empty list")
                        for fam, _, pro, _, address in infos:
                            key = (fam, pro)
                            if key not in addr_infos:
                                addr_infos[key] = [None, None]
                            addr_infos[key][idx] = address
                addr_pairs_info = [
                    (key, addr_pair)
                    for key, addr_pair in addr_infos.items()
                    if not (
                        (local_addr and addr_pair[0] is None)
                        or (remote_addr and addr_pair[1] is None)
                    )
                ]
                if not addr_pairs_info:
                    raise ValueError("can not get address information")

            exceptions = []
            for (family, proto), (local_address, remote_address) in addr_pairs_info:
                sock = None
                r_addr = None
                try:
                    sock = socket.socket(family=family, type=socket.SOCK_DGRAM, proto=proto)
                    if reuse_port:
                        _set_reuseport(sock)
                    if allow_broadcast:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                    sock.setblocking(False)
                    if local_addr:
                        sock.bind(local_address)
                    if remote_addr:
                        if not allow_broadcast:
                            await self.sock_connect(sock, remote_address)
                        r_addr = remote_address
                except OSError as exc:
                    if sock is not None:
                        sock.close()
                    exceptions.append(exc)
                except BaseException:
                    if sock is not None:
                        sock.close()
                    raise
                else:
                    break
            else:
                raise exceptions[0]

        protocol = protocol_factory()
        waiter = self.create_future()
        transport = self._make_datagram_transport(sock, protocol, r_addr, waiter)
        if self.get_debug():
            if local_addr:
                _compat.logger().info(
                    "Datagram endpoint local_addr=%r remote_addr=%r created: (%r, %r)",
                    local_addr,
                    remote_addr,
                    transport,
                    protocol,
                )
            else:
                _compat.logger().debug(
                    "Datagram endpoint remote_addr=%r created: (%r, %r)",
                    remote_addr,
                    transport,
                    protocol,
                )
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        return transport, protocol
