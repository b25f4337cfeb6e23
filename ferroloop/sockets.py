"""Low-level socket methods (`loop.sock_*`), as asyncio's selector loop has
them: every call first tries the operation and only waits for readiness,
through the native reactor, when it would block."""

from __future__ import annotations

import functools
import os
import socket
from asyncio import exceptions
from typing import Any

from . import _compat


def _check_nonblocking(loop, sock) -> None:
    # asyncio checks this only in debug mode for the sock_* calls (a blocking
    # socket would stall the loop), always for sock_sendfile.
    if loop.get_debug() and sock.gettimeout() != 0:
        raise ValueError("the socket must be non-blocking")


class SocketMethods:
    """Mixin for `Loop`: sock_recv, sock_sendall, sock_connect, ..."""

    # Readiness callbacks (run on the loop) --------------------------------

    def _sock_read_done(self, fd, fut, handle=None) -> None:
        if handle is None or not handle.cancelled():
            self.remove_reader(fd)

    def _sock_write_done(self, fd, fut, handle=None) -> None:
        if handle is None or not handle.cancelled():
            self.remove_writer(fd)

    def _wait_readable(self, fut, sock, callback, *args) -> None:
        fd = sock.fileno()
        self._ensure_fd_no_transport(fd)
        handle = self._add_reader(fd, callback, fut, sock, *args)
        fut.add_done_callback(functools.partial(self._sock_read_done, fd, handle=handle))

    def _wait_writable(self, fut, sock, callback, *args) -> None:
        fd = sock.fileno()
        self._ensure_fd_no_transport(fd)
        handle = self._add_writer(fd, callback, fut, sock, *args)
        fut.add_done_callback(functools.partial(self._sock_write_done, fd, handle=handle))

    def _sock_try(self, fut, sock, method: str, *args) -> None:
        """Readiness callback: retry sock.<method>(*args); keep waiting while
        it would block. The method is looked up on every try, as asyncio
        does, so code (and tests) that swap it meanwhile are honoured."""
        if fut.done():
            return
        try:
            result = getattr(sock, method)(*args)
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            fut.set_exception(exc)
        else:
            fut.set_result(result)

    async def _sock_read_op(self, sock, method: str, *args) -> Any:
        _compat.check_ssl_socket(sock)
        _check_nonblocking(self, sock)
        try:
            return getattr(sock, method)(*args)
        except (BlockingIOError, InterruptedError):
            pass
        fut = self.create_future()
        self._wait_readable(fut, sock, self._sock_try, method, *args)
        return await fut

    # Public API -------------------------------------------------------------

    async def sock_recv(self, sock, n: int) -> bytes:
        return await self._sock_read_op(sock, "recv", n)

    async def sock_recv_into(self, sock, buf) -> int:
        return await self._sock_read_op(sock, "recv_into", buf)

    async def sock_recvfrom(self, sock, bufsize: int):
        return await self._sock_read_op(sock, "recvfrom", bufsize)

    async def sock_recvfrom_into(self, sock, buf, nbytes: int = 0):
        if not nbytes:
            nbytes = len(buf)
        return await self._sock_read_op(sock, "recvfrom_into", buf, nbytes)

    async def sock_sendall(self, sock, data) -> None:
        _compat.check_ssl_socket(sock)
        _check_nonblocking(self, sock)
        try:
            n = sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        if n == len(data):
            return
        fut = self.create_future()
        self._wait_writable(fut, sock, self._sock_sendall, memoryview(data), [n])
        return await fut

    def _sock_sendall(self, fut, sock, view, pos) -> None:
        if fut.done():
            return
        start = pos[0]
        try:
            n = sock.send(view[start:])
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            fut.set_exception(exc)
            return
        start += n
        if start == len(view):
            fut.set_result(None)
        else:
            pos[0] = start

    async def sock_sendto(self, sock, data, address) -> int:
        _compat.check_ssl_socket(sock)
        _check_nonblocking(self, sock)
        try:
            return sock.sendto(data, address)
        except (BlockingIOError, InterruptedError):
            pass
        fut = self.create_future()
        self._wait_writable(fut, sock, self._sock_try, "sendto", data, address)
        return await fut

    async def sock_connect(self, sock, address) -> None:
        _compat.check_ssl_socket(sock)
        _check_nonblocking(self, sock)
        if sock.family == socket.AF_INET or (
            socket.has_ipv6 and sock.family == socket.AF_INET6
        ):
            resolved = await self._ensure_resolved(
                address, family=sock.family, type=sock.type, proto=sock.proto
            )
            _, _, _, _, address = resolved[0]
        fut = self.create_future()
        try:
            sock.connect(address)
        except (BlockingIOError, InterruptedError):
            self._wait_writable(fut, sock, self._sock_connect_cb, address)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            fut.set_exception(exc)
        else:
            fut.set_result(None)
        try:
            return await fut
        finally:
            # Break the reference cycle future -> exception -> frame.
            fut = None

    def _sock_connect_cb(self, fut, sock, address) -> None:
        if fut.done():
            return
        try:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err != 0:
                raise OSError(err, f"Connect call failed {address}")
        except (BlockingIOError, InterruptedError):
            pass
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            fut.set_exception(exc)
        else:
            fut.set_result(None)
        finally:
            # The exception's traceback holds this frame: don't let it hold
            # the future too (a future -> exception -> frame cycle).
            fut = None

    async def sock_accept(self, sock):
        _compat.check_ssl_socket(sock)
        _check_nonblocking(self, sock)
        fut = self.create_future()
        self._sock_accept(fut, sock)
        return await fut

    def _sock_accept(self, fut, sock) -> None:
        if fut.done():
            return
        try:
            conn, address = sock.accept()
            conn.setblocking(False)
        except (BlockingIOError, InterruptedError):
            if self._get_watch(sock.fileno())[0] is None:
                self._wait_readable(fut, sock, self._sock_accept)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            fut.set_exception(exc)
        else:
            fut.set_result((conn, address))

    # sendfile ---------------------------------------------------------------

    async def sock_sendfile(self, sock, file, offset: int = 0, count=None, *, fallback: bool = True):
        """Send a file over a socket: os.sendfile (zero-copy) when the socket
        allows it, else read/send chunks if fallback is true."""
        _compat.check_ssl_socket(sock)
        if sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")
        self._check_sendfile_params(sock, file, offset, count)
        try:
            return await self._sock_sendfile_native(sock, file, offset, count)
        except exceptions.SendfileNotAvailableError:
            if not fallback:
                raise
        return await self._sock_sendfile_fallback(sock, file, offset, count)

    def _check_sendfile_params(self, sock, file, offset, count) -> None:
        if "b" not in getattr(file, "mode", "b"):
            raise ValueError("file should be opened in binary mode")
        if not sock.type == socket.SOCK_STREAM:
            raise ValueError("only SOCK_STREAM type sockets are supported")
        if count is not None:
            if not isinstance(count, int):
                raise TypeError(f"count must be a positive integer (got {count!r})")
            if count <= 0:
                raise ValueError(f"count must be a positive integer (got {count!r})")
        if not isinstance(offset, int):
            raise TypeError(f"offset must be a non-negative integer (got {offset!r})")
        if offset < 0:
            raise ValueError(f"offset must be a non-negative integer (got {offset!r})")

    async def _sock_sendfile_native(self, sock, file, offset, count):
        try:
            fileno = file.fileno()
        except (AttributeError, OSError) as err:
            raise exceptions.SendfileNotAvailableError("not a regular file") from err
        try:
            fsize = os.fstat(fileno).st_size
        except OSError:
            raise exceptions.SendfileNotAvailableError("not a regular file")
        blocksize = count if count else fsize
        if not blocksize:
            return 0  # empty file
        fut = self.create_future()
        self._sock_sendfile_native_impl(fut, None, sock, fileno, offset, count, blocksize, 0)
        return await fut

    def _sock_sendfile_native_impl(self, fut, registered_fd, sock, fileno, offset, count, blocksize, total_sent):
        fd = sock.fileno()
        if registered_fd is not None:
            # Unregister now; re-registered below if the send would block.
            self.remove_writer(registered_fd)
        if fut.cancelled():
            self._sock_sendfile_update_filepos(fileno, offset, total_sent)
            return
        if count:
            blocksize = count - total_sent
            if blocksize <= 0:
                self._sock_sendfile_update_filepos(fileno, offset, total_sent)
                fut.set_result(total_sent)
                return
        try:
            sent = os.sendfile(fd, fileno, offset, blocksize)
        except (BlockingIOError, InterruptedError):
            if registered_fd is None:
                self._sock_add_cancellation_callback(fut, sock)
            self.add_writer(fd, self._sock_sendfile_native_impl, fut, fd, sock, fileno,
                            offset, count, blocksize, total_sent)
        except OSError as exc:
            if registered_fd is not None and exc.errno == __import__("errno").ENOTCONN and type(exc) is not ConnectionError:
                new_exc = ConnectionError("socket is not connected", __import__("errno").ENOTCONN)
                new_exc.__cause__ = exc
                exc = new_exc
            if total_sent == 0:
                # Nothing sent yet: the caller may still use the fallback.
                err = exceptions.SendfileNotAvailableError("os.sendfile call failed")
                self._sock_sendfile_update_filepos(fileno, offset, total_sent)
                fut.set_exception(err)
            else:
                self._sock_sendfile_update_filepos(fileno, offset, total_sent)
                fut.set_exception(exc)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._sock_sendfile_update_filepos(fileno, offset, total_sent)
            fut.set_exception(exc)
        else:
            if sent == 0:
                # EOF
                self._sock_sendfile_update_filepos(fileno, offset, total_sent)
                fut.set_result(total_sent)
            else:
                offset += sent
                total_sent += sent
                if registered_fd is None:
                    self._sock_add_cancellation_callback(fut, sock)
                self.add_writer(fd, self._sock_sendfile_native_impl, fut, fd, sock, fileno,
                                offset, count, blocksize, total_sent)

    def _sock_sendfile_update_filepos(self, fileno, offset, total_sent) -> None:
        if total_sent > 0:
            os.lseek(fileno, offset, os.SEEK_SET)

    def _sock_add_cancellation_callback(self, fut, sock) -> None:
        def cb(fut):
            if fut.cancelled():
                fd = sock.fileno()
                if fd != -1:
                    self.remove_writer(fd)
        fut.add_done_callback(cb)

    async def _sock_sendfile_fallback(self, sock, file, offset, count):
        if offset:
            file.seek(offset)
        blocksize = min(count, 256 * 1024) if count else 256 * 1024
        buf = bytearray(blocksize)
        total_sent = 0
        try:
            while True:
                if count:
                    blocksize = min(count - total_sent, blocksize)
                    if blocksize <= 0:
                        break
                view = memoryview(buf)[:blocksize]
                read = await self.run_in_executor(None, file.readinto, view)
                if not read:
                    break  # EOF
                await self.sock_sendall(sock, view[:read])
                total_sent += read
            return total_sent
        finally:
            if total_sent > 0 and hasattr(file, "seek"):
                file.seek(offset + total_sent)
