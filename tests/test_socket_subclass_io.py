"""A `socket.socket` subclass that overrides its I/O methods (`recv`,
`recv_into`, `send`, from 3.12 `sendmsg`; `recvfrom`, `sendto` for
datagrams) and is handed to the loop (`sock=`): asyncio's transports do their
I/O through those methods, so the overrides must run (libraries count or
filter traffic this way; websockets' suite checks it)."""

import asyncio
import socket
import sys

from conftest import run
from _certs import client_context, server_context
from test_streams import Echo


class CountingSocket(socket.socket):
    """Records which I/O methods ran; can fail or stall on demand."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []
        self.block_sends = 0  # raise BlockingIOError this many times
        self.short_sends = False  # send at most 1000 bytes per call
        self.fail_recv = None  # exception to raise from recv/recv_into

    def recv(self, *args):
        self.calls.append("recv")
        if self.fail_recv is not None:
            raise self.fail_recv
        return super().recv(*args)

    def recv_into(self, *args):
        self.calls.append("recv_into")
        if self.fail_recv is not None:
            raise self.fail_recv
        return super().recv_into(*args)

    def _sending(self, name):
        """Records a send method's call; raises if it is to 'block'."""
        self.calls.append(name)
        if self.block_sends:
            self.block_sends -= 1
            raise BlockingIOError

    def send(self, data, *args):
        self._sending("send")
        if self.short_sends:
            data = memoryview(data)[:1000]
        return super().send(data, *args)

    def sendmsg(self, buffers, *args):
        self._sending("sendmsg")
        if self.short_sends:
            buffers = [memoryview(next(iter(buffers)))[:1000]]
        return super().sendmsg(buffers, *args)


# From 3.12 asyncio flushes a stream transport's buffer with one sendmsg()
# of the queued chunks; before, with send() of the first chunk.
FLUSH = "sendmsg" if sys.version_info >= (3, 12) else "send"


class Collect(asyncio.Protocol):
    def __init__(self, loop, want):
        self.want = want
        self.data = bytearray()
        self.done = loop.create_future()
        self.lost = loop.create_future()

    def data_received(self, data):
        self.data += data
        if len(self.data) >= self.want and not self.done.done():
            self.done.set_result(bytes(self.data))

    def connection_lost(self, exc):
        self.lost.set_result(exc)


class BufferedCollect(asyncio.BufferedProtocol):
    def __init__(self, loop, want):
        self.want = want
        self.buf = bytearray(64)
        self.data = bytearray()
        self.done = loop.create_future()

    def get_buffer(self, sizehint):
        return self.buf

    def buffer_updated(self, nbytes):
        self.data += self.buf[:nbytes]
        if len(self.data) >= self.want and not self.done.done():
            self.done.set_result(bytes(self.data))

    def connection_lost(self, exc):
        pass


async def _connected(loop, **server_kw):
    server = await loop.create_server(Echo, "127.0.0.1", 0, **server_kw)
    sock = CountingSocket(socket.AF_INET, socket.SOCK_STREAM)
    sock.connect(server.sockets[0].getsockname())
    sock.setblocking(False)
    return server, sock


async def _close(server, transport):
    transport.close()
    server.close()
    await server.wait_closed()


def test_overridden_recv_and_send_are_used(loop):
    async def main():
        server, sock = await _connected(loop)
        tr, proto = await loop.create_connection(
            lambda: Collect(loop, 5), sock=sock)
        tr.write(b"hello")
        assert await asyncio.wait_for(proto.done, 5) == b"hello"
        await _close(server, tr)
        return set(sock.calls)

    assert run(loop, main()) == {"recv", "send"}


def test_overridden_recv_into_is_used_by_buffered_protocol(loop):
    async def main():
        server, sock = await _connected(loop)
        tr, proto = await loop.create_connection(
            lambda: BufferedCollect(loop, 200), sock=sock)
        tr.write(b"x" * 200)
        assert await asyncio.wait_for(proto.done, 5) == b"x" * 200
        await _close(server, tr)
        return set(sock.calls)

    assert run(loop, main()) == {"recv_into", "send"}


def test_blocking_and_short_sends_through_override_deliver_everything(loop):
    payload = bytes(range(256)) * 4096  # 1 MiB

    async def main():
        server, sock = await _connected(loop)
        sock.block_sends = 3
        sock.short_sends = True
        tr, proto = await loop.create_connection(
            lambda: Collect(loop, len(payload)), sock=sock)
        tr.write(payload)
        assert tr.get_write_buffer_size() > 0  # the first send "blocked"
        got = await asyncio.wait_for(proto.done, 20)
        await _close(server, tr)
        return got, sock.calls

    got, calls = run(loop, main(), timeout=30)
    assert got == payload
    assert calls[0] == "send"  # the write is tried at once
    # Everything queued after it went through the flushing method, in
    # pieces of at most 1000 bytes.
    assert calls.count(FLUSH) > len(payload) // 1000
    assert set(calls) == {"recv", "send", FLUSH}


def test_sendmsg_override_alone_runs_as_in_asyncio(loop):
    """A class that overrides only sendmsg: asyncio 3.12+ calls it for the
    queued data, older versions never do."""

    class SendmsgOnly(socket.socket):
        flushed = 0

        def sendmsg(self, buffers, *args):
            SendmsgOnly.flushed += 1
            return super().sendmsg(buffers, *args)

    payload = b"y" * (8 << 20)  # more than loopback takes at once

    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        sock = SendmsgOnly(socket.AF_INET, socket.SOCK_STREAM)
        sock.connect(server.sockets[0].getsockname())
        sock.setblocking(False)
        tr, proto = await loop.create_connection(
            lambda: Collect(loop, len(payload)), sock=sock)
        tr.write(payload)
        queued = tr.get_write_buffer_size()
        assert await asyncio.wait_for(proto.done, 20) == payload
        await _close(server, tr)
        return queued

    assert run(loop, main(), timeout=30) > 0
    if sys.version_info >= (3, 12):
        assert SendmsgOnly.flushed > 0
    else:
        assert SendmsgOnly.flushed == 0


def test_error_raised_by_overridden_recv_ends_the_connection(loop):
    async def main():
        server, sock = await _connected(loop)
        tr, proto = await loop.create_connection(
            lambda: Collect(loop, 1), sock=sock)
        sock.fail_recv = ConnectionResetError("from the override")
        tr.write(b"ping")  # the echo makes the socket readable
        exc = await asyncio.wait_for(proto.lost, 5)
        server.close()
        await server.wait_closed()
        return exc

    exc = run(loop, main())
    assert isinstance(exc, ConnectionResetError)
    assert str(exc) == "from the override"


def test_tls_over_overridden_socket(loop):
    async def main():
        server, sock = await _connected(loop, ssl=server_context())
        tr, proto = await loop.create_connection(
            lambda: Collect(loop, 3), sock=sock, ssl=client_context(),
            server_hostname="localhost")
        tr.write(b"tls")
        assert await asyncio.wait_for(proto.done, 5) == b"tls"
        await _close(server, tr)
        return set(sock.calls)

    # TLS reads go through a BufferedProtocol (asyncio's SSLProtocol).
    assert run(loop, main()) == {"recv_into", "send"}


def test_plain_socket_subclass_without_overrides(loop):
    class Plain(socket.socket):
        pass

    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        sock = Plain(socket.AF_INET, socket.SOCK_STREAM)
        sock.connect(server.sockets[0].getsockname())
        tr, proto = await loop.create_connection(
            lambda: Collect(loop, 4), sock=sock)
        tr.write(b"data")
        assert await asyncio.wait_for(proto.done, 5) == b"data"
        await _close(server, tr)

    run(loop, main())


class CountingUDPSocket(socket.socket):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def recvfrom(self, *args):
        self.calls.append("recvfrom")
        return super().recvfrom(*args)

    def sendto(self, *args):
        self.calls.append("sendto")
        return super().sendto(*args)


def test_datagram_endpoint_uses_overridden_recvfrom_and_sendto(loop):
    class Got(asyncio.DatagramProtocol):
        def __init__(self):
            self.got = loop.create_future()

        def datagram_received(self, data, addr):
            if not self.got.done():
                self.got.set_result(data)

    async def main():
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        sock = CountingUDPSocket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        tr, proto = await loop.create_datagram_endpoint(Got, sock=sock)
        tr.sendto(b"out", peer.getsockname())
        data, addr = await loop.sock_recvfrom(peer, 100)
        assert data == b"out"
        peer.sendto(b"in", sock.getsockname())
        assert await asyncio.wait_for(proto.got, 5) == b"in"
        tr.close()
        peer.close()
        await asyncio.sleep(0)
        return set(sock.calls)

    assert run(loop, main()) == {"recvfrom", "sendto"}
