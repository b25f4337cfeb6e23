"""Stream connections and servers: create_connection, create_server, the
Unix-socket variants, connect_accepted_socket, sendfile and start_tls.

Set-up (resolution, happy eyeballs, socket options, TLS wrapping) is Python;
the byte path is the native stream transport (`ferroloop/transports.py` over
`_ferroloop.StreamTransport`).

The address-juggling entry points are asyncio's own loop-generic code,
reused as plain functions: `BaseEventLoop.create_connection` and friends
only reach the loop through the hooks defined here (`_make_socket_transport`,
`_make_ssl_transport`, `_start_serving`, `_stop_serving`, `_sendfile_native`)
and public loop methods, so they are the specification itself, with
identical arguments, errors and messages. What is selector-specific in
asyncio (transports, accepting, native sendfile) is ferroloop's own."""

from __future__ import annotations

import errno
import os
import socket
from asyncio import base_events, constants, sslproto, trsock, unix_events
from asyncio.log import logger

from .server import Server  # noqa: F401  (re-exported for users of ferroloop.network)
from .transports import _StreamTransport

_Base = base_events.BaseEventLoop
_Unix = unix_events._UnixSelectorEventLoop


class NetworkMethods:
    """Mixin for `Loop`: TCP and Unix stream endpoints."""

    # ---- loop-generic set-up, from asyncio ----------------------------------
    create_connection = _Base.create_connection
    _connect_sock = _Base._connect_sock
    _create_connection_transport = _Base._create_connection_transport
    create_server = _Base.create_server
    _create_server_getaddrinfo = _Base._create_server_getaddrinfo
    connect_accepted_socket = _Base.connect_accepted_socket
    start_tls = _Base.start_tls
    sendfile = _Base.sendfile
    _sendfile_fallback = _Base._sendfile_fallback
    create_unix_connection = _Unix.create_unix_connection
    create_unix_server = _Unix.create_unix_server

    async def _ensure_resolved(self, address, *, family=0,
                               type=socket.SOCK_STREAM, proto=0, flags=0,
                               loop=None):
        # asyncio's set-up code passes loop=self; the resolver ignores it.
        return await super()._ensure_resolved(
            address, family=family, type=type, proto=proto, flags=flags)

    # ---- transports -----------------------------------------------------------

    def _make_socket_transport(self, sock, protocol, waiter=None, *,
                               extra=None, server=None):
        return _StreamTransport(self, sock, protocol, waiter, extra, server)

    def _make_ssl_transport(
            self, rawsock, protocol, sslcontext, waiter=None,
            *, server_side=False, server_hostname=None,
            extra=None, server=None,
            ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
            ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT):
        # TLS is Python's ssl module over MemoryBIO (asyncio's SSLProtocol),
        # layered on the native plain transport.
        ssl_protocol = sslproto.SSLProtocol(
            self, protocol, sslcontext, waiter, server_side, server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout)
        _StreamTransport(self, rawsock, ssl_protocol, extra=extra, server=server)
        return ssl_protocol._app_transport

    # ---- serving ----------------------------------------------------------------

    def _start_serving(self, protocol_factory, sock, sslcontext=None,
                       server=None, backlog=100,
                       ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
                       ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT):
        self._add_reader(sock.fileno(), self._accept_connection,
                         protocol_factory, sock, sslcontext, server, backlog,
                         ssl_handshake_timeout, ssl_shutdown_timeout)

    def _stop_serving(self, sock):
        # A listening Unix socket that create_unix_server marked for clean-up
        # (3.13+: cleanup_socket=True) is unlinked if its path still names
        # the socket bound then, as asyncio's Unix loop does.
        inode = self._unix_server_sockets.pop(sock, None)
        path = sock.getsockname() if inode is not None else None
        self._remove_reader(sock.fileno())
        sock.close()
        if path is not None:
            try:
                if os.stat(path).st_ino == inode:
                    os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as err:
                logger.error("Unable to clean up listening UNIX socket %r: %r",
                             path, err)

    def _accept_connection(self, protocol_factory, sock, sslcontext=None,
                           server=None, backlog=100,
                           ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
                           ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT):
        # Readable listening socket: take up to `backlog` connections in
        # this turn, then let other callbacks run.
        for _ in range(backlog):
            try:
                conn, addr = sock.accept()
                if self._debug:
                    logger.debug("%r got a new connection from %r: %r",
                                 server, addr, conn)
                conn.setblocking(False)
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE,
                                     errno.ENOBUFS, errno.ENOMEM):
                    raise  # logged by the loop as a callback error
                # Out of descriptors (or memory): the listening socket stays
                # readable, so stop watching it for a while instead of
                # spinning, and report it as asyncio does.
                self.call_exception_handler({
                    "message": "socket.accept() out of system resource",
                    "exception": exc,
                    "socket": trsock.TransportSocket(sock),
                })
                self._remove_reader(sock.fileno())
                self.call_later(constants.ACCEPT_RETRY_DELAY,
                                self._start_serving, protocol_factory, sock,
                                sslcontext, server, backlog,
                                ssl_handshake_timeout, ssl_shutdown_timeout)
                return
            else:
                self.create_task(self._accept_connection2(
                    protocol_factory, conn, {"peername": addr}, sslcontext,
                    server, ssl_handshake_timeout, ssl_shutdown_timeout))

    async def _accept_connection2(self, protocol_factory, conn, extra,
                                  sslcontext=None, server=None,
                                  ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
                                  ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT):
        protocol = transport = None
        try:
            protocol = protocol_factory()
            waiter = self.create_future()
            if sslcontext:
                transport = self._make_ssl_transport(
                    conn, protocol, sslcontext, waiter=waiter,
                    server_side=True, extra=extra, server=server,
                    ssl_handshake_timeout=ssl_handshake_timeout,
                    ssl_shutdown_timeout=ssl_shutdown_timeout)
            else:
                transport = self._make_socket_transport(
                    conn, protocol, waiter=waiter, extra=extra, server=server)
            try:
                await waiter
            except BaseException:
                transport.close()
                raise
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            if self._debug:
                context = {
                    "message": "Error on transport creation for incoming connection",
                    "exception": exc,
                }
                if protocol is not None:
                    context["protocol"] = protocol
                if transport is not None:
                    context["transport"] = transport
                self.call_exception_handler(context)

    # ---- sendfile ---------------------------------------------------------------

    async def _sendfile_native(self, transp, file, offset, count):
        # Zero-copy: hand the socket to sock_sendfile (os.sendfile) once the
        # transport's write buffer has drained; reading pauses meanwhile.
        fd = transp._sock_fd
        del self._transports[fd]
        resume_reading = transp.is_reading()
        transp.pause_reading()
        await transp._make_empty_waiter()
        try:
            return await self.sock_sendfile(transp._sock, file, offset, count,
                                            fallback=False)
        finally:
            transp._reset_empty_waiter()
            if resume_reading:
                transp.resume_reading()
            self._transports[fd] = transp
