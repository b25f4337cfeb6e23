"""create_datagram_endpoint and the datagram transport: UDP and Unix
datagram endpoints, error_received, flow control, close/abort."""

import asyncio
import os
import socket
import sys
import tempfile

import pytest

from conftest import run


class Proto(asyncio.DatagramProtocol):
    def __init__(self, loop):
        self.loop = loop
        self.events = []
        self.transport = None
        self.received = asyncio.Queue()
        self.errors = asyncio.Queue()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def datagram_received(self, data, addr):
        self.events.append("data")
        self.received.put_nowait((data, addr))

    def error_received(self, exc):
        self.events.append("error")
        self.errors.put_nowait(exc)

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)


def _closed_udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_udp_echo(loop):
    async def main():
        server_t, server_p = await loop.create_datagram_endpoint(
            lambda: Proto(loop), local_addr=("127.0.0.1", 0))
        addr = server_t.get_extra_info("sockname")
        client_t, client_p = await loop.create_datagram_endpoint(
            lambda: Proto(loop), remote_addr=addr)
        assert client_t.get_extra_info("peername") == addr
        assert isinstance(client_t.get_extra_info("socket"), asyncio.trsock.TransportSocket)
        assert server_t.get_extra_info("peername") is None
        for i in range(20):
            client_t.sendto(b"ping%d" % i)
            data, src = await server_p.received.get()
            assert data == b"ping%d" % i
            server_t.sendto(data.upper(), src)
            data, src = await client_p.received.get()
            assert data == b"PING%d" % i
            assert src == addr
        assert client_t.get_write_buffer_size() == 0
        client_t.close()
        server_t.close()
        assert await client_p.lost is None
        assert await server_p.lost is None
        assert client_p.events[0] == "made" and client_p.events[-1] == "lost"
        assert client_t.is_closing()

    run(loop, main())


def test_connected_send_to_closed_port_reaches_error_received(loop):
    port = _closed_udp_port()

    async def main():
        t, p = await loop.create_datagram_endpoint(
            lambda: Proto(loop), remote_addr=("127.0.0.1", port))
        t.sendto(b"x")
        exc = await asyncio.wait_for(p.errors.get(), 2)
        assert isinstance(exc, ConnectionRefusedError)
        # The endpoint is still usable after an ICMP error.
        assert not t.is_closing()
        t.close()
        assert await p.lost is None

    run(loop, main())


def test_unconnected_sendto_closed_port_keeps_working(loop):
    port = _closed_udp_port()

    async def main():
        t, p = await loop.create_datagram_endpoint(
            lambda: Proto(loop), local_addr=("127.0.0.1", 0))
        for _ in range(3):
            t.sendto(b"x", ("127.0.0.1", port))
        await asyncio.sleep(0.05)
        assert "data" not in p.events
        t.sendto(b"self", t.get_extra_info("sockname"))
        data, _ = await asyncio.wait_for(p.received.get(), 2)
        assert data == b"self"
        t.close()
        await p.lost

    run(loop, main())


def test_sendto_errors(loop):
    async def main():
        server_t, _ = await loop.create_datagram_endpoint(
            lambda: Proto(loop), local_addr=("127.0.0.1", 0))
        addr = server_t.get_extra_info("sockname")
        t, p = await loop.create_datagram_endpoint(lambda: Proto(loop), remote_addr=addr)
        with pytest.raises(ValueError, match="Invalid address"):
            t.sendto(b"x", ("127.0.0.1", 1))
        with pytest.raises(TypeError, match="data argument must be a bytes-like object"):
            t.sendto("text")
        t.sendto(b"")  # nothing, or from 3.13 an empty datagram (see below)
        t.sendto(b"ok", addr)  # the connected address itself is fine
        t.close()
        server_t.close()
        await p.lost

    run(loop, main())


def test_sendto_empty_data_follows_the_python_version(loop):
    # 3.13 made sendto(b"") send a zero-length datagram (after the address
    # check); before, it returned at once, whatever the address.
    sends_empty = sys.version_info >= (3, 13)

    async def main():
        server_t, server_p = await loop.create_datagram_endpoint(
            lambda: Proto(loop), local_addr=("127.0.0.1", 0))
        addr = server_t.get_extra_info("sockname")
        t, p = await loop.create_datagram_endpoint(lambda: Proto(loop), remote_addr=addr)
        for empty in (b"", bytearray(), memoryview(b"")):
            t.sendto(empty)
        if sends_empty:
            with pytest.raises(ValueError, match="Invalid address"):
                t.sendto(b"", ("127.0.0.1", 1))
        else:
            t.sendto(b"", ("127.0.0.1", 1))
        t.sendto(b"end")
        got = []
        while not got or got[-1] != b"end":
            data, _ = await asyncio.wait_for(server_p.received.get(), 2)
            got.append(data)
        assert got == [b""] * 3 + [b"end"] if sends_empty else [b"end"]
        t.close()
        server_t.close()
        await p.lost

    run(loop, main())


def test_sendto_malformed_address_is_fatal(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    async def main():
        t, p = await loop.create_datagram_endpoint(
            lambda: Proto(loop), local_addr=("127.0.0.1", 0))
        # An IPv6 address on an IPv4 socket: sendto raises TypeError, a fatal
        # write error (reported, then the transport is closed with it).
        t.sendto(b"x", ("::1", 9, 0, 0))
        exc = await p.lost
        assert isinstance(exc, TypeError)
        assert t.is_closing()
        [ctx] = contexts
        assert ctx["message"] == "Fatal write error on datagram transport"
        assert ctx["exception"] is exc
        assert ctx["transport"] is t and ctx["protocol"] is p

    run(loop, main())


def test_sendto_unreachable_address_goes_to_error_received(loop):
    async def main():
        t, p = await loop.create_datagram_endpoint(
            lambda: Proto(loop), local_addr=("127.0.0.1", 0))
        # Port 0 cannot be sent to: an OSError, handed to error_received.
        t.sendto(b"x", ("127.0.0.1", 0))
        exc = await asyncio.wait_for(p.errors.get(), 2)
        assert isinstance(exc, OSError)
        assert not t.is_closing()
        t.close()
        await p.lost

    run(loop, main())


def test_argument_errors(loop):
    async def main():
        with pytest.raises(ValueError, match="unexpected address family"):
            await loop.create_datagram_endpoint(lambda: Proto(loop))
        with pytest.raises(TypeError, match="2-tuple is expected"):
            await loop.create_datagram_endpoint(lambda: Proto(loop), local_addr="x")
        tcp = socket.socket()
        try:
            # The message changed in 3.13 (which also accepts SOCK_RAW).
            expected = ("A datagram socket was expected" if sys.version_info >= (3, 13)
                        else "A UDP Socket was expected")
            with pytest.raises(ValueError, match=expected):
                await loop.create_datagram_endpoint(lambda: Proto(loop), sock=tcp)
        finally:
            tcp.close()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            with pytest.raises(ValueError, match="socket modifier keyword arguments"):
                await loop.create_datagram_endpoint(
                    lambda: Proto(loop), sock=udp, local_addr=("127.0.0.1", 0))
        finally:
            udp.close()

    run(loop, main())


def test_sock_argument_and_options(loop):
    async def main():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        t, p = await loop.create_datagram_endpoint(lambda: Proto(loop), sock=sock)
        assert t.get_extra_info("sockname") == sock.getsockname()
        t.close()
        await p.lost
        assert sock.fileno() == -1

        t, p = await loop.create_datagram_endpoint(
            lambda: Proto(loop), local_addr=("127.0.0.1", 0),
            reuse_port=True, allow_broadcast=True)
        s = t.get_extra_info("socket")
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST)
        t.close()
        await p.lost

    run(loop, main())


def test_unix_datagram(loop):
    async def main():
        with tempfile.TemporaryDirectory() as d:
            srv_path = os.path.join(d, "srv")
            cli_path = os.path.join(d, "cli")
            st, sp = await loop.create_datagram_endpoint(
                lambda: Proto(loop), local_addr=srv_path, family=socket.AF_UNIX)
            ct, cp = await loop.create_datagram_endpoint(
                lambda: Proto(loop), local_addr=cli_path, remote_addr=srv_path,
                family=socket.AF_UNIX)
            ct.sendto(b"hello")
            data, addr = await sp.received.get()
            assert data == b"hello" and addr == cli_path
            st.sendto(b"back", addr)
            data, addr = await cp.received.get()
            assert (data, addr) == (b"back", srv_path)
            ct.close()
            st.close()
            await cp.lost
            await sp.lost
            with pytest.raises(TypeError, match="string is expected"):
                await loop.create_datagram_endpoint(
                    lambda: Proto(loop), local_addr=("a", 1), family=socket.AF_UNIX)

    run(loop, main())


def test_unix_socketpair_endpoint(loop, loop_kind):
    # An unnamed socketpair is connected but its peername is '' (falsy).
    # Stock asyncio takes that for "not connected" and calls
    # sock.sendto(data, None), a TypeError that kills the transport; uvloop
    # and ferroloop send() on it, as on any connected socket.
    s1, s2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)

    async def main():
        with s1, s2:
            tr, pr = await loop.create_datagram_endpoint(lambda: Proto(loop), sock=s1)
            assert tr.get_extra_info("peername") == ""
            s2.send(b"ping")
            data, addr = await pr.received.get()
            assert data == b"ping" and addr is None
            if loop_kind == "asyncio":
                return tr.close()
            tr.sendto(b"pong")
            assert await loop.run_in_executor(None, s2.recv, 100) == b"pong"
            tr.close()
            await pr.lost
            assert pr.events == ["made", "data", "lost"]

    run(loop, main())


def test_abort_drops_buffer_and_pause_reading(loop):
    async def main():
        t, p = await loop.create_datagram_endpoint(
            lambda: Proto(loop), local_addr=("127.0.0.1", 0))
        addr = t.get_extra_info("sockname")
        t.pause_reading()
        assert not t.is_reading()
        t.sendto(b"queued", addr)
        await asyncio.sleep(0.02)
        assert "data" not in p.events
        t.resume_reading()
        data, _ = await p.received.get()
        assert data == b"queued"
        t.abort()
        assert await p.lost is None
        assert p.events.count("lost") == 1

    run(loop, main())


def test_write_buffer_limits(loop):
    async def main():
        t, p = await loop.create_datagram_endpoint(
            lambda: Proto(loop), local_addr=("127.0.0.1", 0))
        t.set_write_buffer_limits(high=100, low=10)
        assert t.get_write_buffer_limits() == (10, 100)
        with pytest.raises(ValueError):
            t.set_write_buffer_limits(high=1, low=10)
        t.close()
        await p.lost

    run(loop, main())


def test_fd_used_by_transport(loop):
    async def main():
        t, p = await loop.create_datagram_endpoint(
            lambda: Proto(loop), local_addr=("127.0.0.1", 0))
        fd = t.get_extra_info("socket").fileno()
        with pytest.raises(RuntimeError, match="is used by transport"):
            loop.add_reader(fd, lambda: None)
        t.close()
        await p.lost

    run(loop, main())


async def _with_unix_receiver(exercise):
    """Runs ``exercise(path, rx)`` with a bound, non-blocking Unix datagram
    socket that reads only when the test does (so a sender to it blocks)."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "rx")
        rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        rx.bind(path)
        rx.setblocking(False)
        try:
            await exercise(path, rx)
        finally:
            rx.close()


def test_queue_when_socket_would_block(loop):
    class Writer(Proto):
        def pause_writing(self):
            self.events.append("pause")

        def resume_writing(self):
            self.events.append("resume")

    async def exercise(path, rx):
        # A Unix datagram receiver that isn't read makes the sender block.
        t, p = await loop.create_datagram_endpoint(
            lambda: Writer(loop), remote_addr=path, family=socket.AF_UNIX)
        t.set_write_buffer_limits(high=20000)
        queued = False
        for i in range(300):
            t.sendto(b"%04d" % i + b"x" * 1000)
            queued = queued or t.get_write_buffer_size() > 0
        assert queued
        assert "pause" in p.events
        t.close()  # connection_lost once the queue is flushed
        seen = []
        while not p.lost.done():
            try:
                seen.append(int(rx.recv(2000)[:4]))
            except BlockingIOError:
                await asyncio.sleep(0.001)
        assert await p.lost is None
        while True:
            try:
                seen.append(int(rx.recv(2000)[:4]))
            except BlockingIOError:
                break
        assert seen == list(range(300))
        assert t.get_write_buffer_size() == 0
        assert p.events[-2:] == ["resume", "lost"]

    run(loop, _with_unix_receiver(exercise))


def test_queued_datagrams_count_in_write_buffer_size(loop):
    """Each queued datagram counts its length, plus 8 header bytes from 3.13
    on; the count goes back to 0 once the queue is sent. (Stock 3.13.0 fails
    that last check: it forgot to subtract the 8 bytes, which later 3.13
    releases fixed; ferroloop follows the fixed rule.)"""
    header = 8 if sys.version_info >= (3, 13) else 0

    async def exercise(path, rx):
        t, p = await loop.create_datagram_endpoint(
            lambda: Proto(loop), remote_addr=path, family=socket.AF_UNIX)
        t.set_write_buffer_limits(high=1 << 30)
        sent = 0
        while t.get_write_buffer_size() == 0:  # until the unread socket blocks
            t.sendto(b"x" * 700)
            sent += 1
            assert sent < 100_000, "the unread socket never blocked"
        assert t.get_write_buffer_size() == 700 + header
        sizes = [1, 50, 999, 4096]
        for n in sizes:
            t.sendto(b"y" * n)  # the queue is not empty: these queue too
        assert t.get_write_buffer_size() == 700 + sum(sizes) + header * (1 + len(sizes))
        got = 0
        while got < sent + len(sizes):
            try:
                rx.recv(8192)
                got += 1
            except BlockingIOError:
                await asyncio.sleep(0.001)
        assert t.get_write_buffer_size() == 0
        t.close()
        assert await p.lost is None

    run(loop, _with_unix_receiver(exercise))


def test_endpoint_kept_alive_while_reading(loop):
    """Dropping every reference to a reading transport (a protocol that
    doesn't store it) must not close it: the loop keeps it, as asyncio does."""
    import gc

    class Forgetful(asyncio.DatagramProtocol):
        def __init__(self):
            self.got = loop.create_future()

        def datagram_received(self, data, addr):
            if not self.got.done():
                self.got.set_result(data)

    proto = Forgetful()

    async def main():
        t, _ = await loop.create_datagram_endpoint(
            lambda: proto, local_addr=("127.0.0.1", 0))
        addr = t.get_extra_info("sockname")
        del t
        await asyncio.sleep(0)
        gc.collect()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(b"still there", addr)
        s.close()
        return await asyncio.wait_for(proto.got, 2)

    assert run(loop, main()) == b"still there"
    # The test owns the endpoint's socket now: close it through the loop.
    for tr in list(loop._transports.values()):
        tr.close()
    loop.run_until_complete(asyncio.sleep(0.01))


def test_protocol_released_after_close(loop):
    import gc
    import weakref

    async def main():
        t, p = await loop.create_datagram_endpoint(
            lambda: Proto(loop), local_addr=("127.0.0.1", 0))
        ref = weakref.ref(p)
        lost = p.lost
        t.close()
        await lost
        del p
        return t, ref

    t, ref = run(loop, main())
    gc.collect()
    assert ref() is None
    assert t.is_closing()
