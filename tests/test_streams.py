"""Stream transports: TCP and Unix clients and servers, protocols and
streams, flow control, half-close, TLS, start_tls and sendfile."""

import asyncio
import os
import socket
import ssl
import sys
import tempfile

import pytest

from conftest import run
from _certs import client_context, server_context


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class Collect(asyncio.Protocol):
    def __init__(self, loop):
        self.data = bytearray()
        self.events = []
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def data_received(self, data):
        assert type(data) is bytes
        self.data += data

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)


async def _connected_pair(loop, proto=None):
    """A transport on one end of a socketpair, its protocol (a Collect unless
    given), and the other end as a plain blocking socket."""
    a, b = socket.socketpair()
    a.setblocking(False)
    if proto is None:
        proto = Collect(loop)
    tr, _ = await loop.create_connection(lambda: proto, sock=a)
    return tr, proto, b


def test_tcp_echo_protocol(loop):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        assert isinstance(server.sockets, tuple)
        assert server.is_serving() and server.get_loop() is loop
        port = server.sockets[0].getsockname()[1]
        proto = Collect(loop)
        tr, pr = await loop.create_connection(lambda: proto, "127.0.0.1", port)
        assert pr is proto and isinstance(tr, asyncio.Transport)
        assert tr.get_extra_info("peername") == ("127.0.0.1", port)
        assert tr.get_extra_info("sockname")[0] == "127.0.0.1"
        sock = tr.get_extra_info("socket")
        assert sock.family == socket.AF_INET and sock.fileno() >= 0
        assert tr.get_write_buffer_limits() == (16384, 65536)
        assert tr.can_write_eof() and tr.is_reading() and not tr.is_closing()
        tr.write(b"abc")
        tr.writelines([b"de", bytearray(b"f"), memoryview(b"gh")])
        while len(proto.data) < 8:
            await asyncio.sleep(0.01)
        assert bytes(proto.data) == b"abcdefgh"
        with pytest.raises(TypeError, match="data argument must be a bytes-like object, not 'str'"):
            tr.write("x")
        tr.close()
        assert tr.is_closing()
        assert await proto.lost is None
        assert proto.events == ["made", "lost"]
        server.close()
        await server.wait_closed()
        assert not server.is_serving()
    run(loop, main())


def test_transport_attribute_assignment(loop):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        proto = Collect(loop)
        tr, _ = await loop.create_connection(lambda: proto, "127.0.0.1", port)
        sent = []
        orig = tr.write
        tr.write = lambda d: (sent.append(d), orig(d))
        tr.write(b"x")
        assert sent == [b"x"]
        tr.close()
        await proto.lost
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_streams_echo_and_half_close(loop):
    async def main():
        async def handler(r, w):
            data = await r.read()          # until the client's EOF
            w.write(data[::-1])
            await w.drain()
            w.close()
            await w.wait_closed()
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"hello ")
        w.write(b"world")
        w.write_eof()                      # half-close: we can still read
        assert await r.read() == b"dlrow olleh"
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_eof_received_true_keeps_write_side(loop):
    async def main():
        class KeepOpen(asyncio.Protocol):
            def connection_made(self, tr):
                self.tr = tr
            def eof_received(self):
                self.tr.write(b"after-eof")
                self.tr.close()
                return True
        server = await loop.create_server(KeepOpen, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write_eof()
        assert await r.read() == b"after-eof"
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_unix_echo(loop):
    async def main():
        d = tempfile.mkdtemp()
        path = os.path.join(d, "s.sock")
        server = await loop.create_unix_server(Echo, path)
        # a stale socket file is replaced on the next bind
        proto = Collect(loop)
        tr, _ = await loop.create_unix_connection(lambda: proto, path)
        assert tr.get_extra_info("peername") == path
        tr.write(b"unix")
        while len(proto.data) < 4:
            await asyncio.sleep(0.01)
        tr.close()
        await proto.lost
        server.close()
        await server.wait_closed()
        # From 3.13 on a server unlinks its socket file when it closes
        # (cleanup_socket=True); before, the file stays.
        assert os.path.exists(path) == (sys.version_info < (3, 13))
        if os.path.exists(path):
            os.unlink(path)
        os.rmdir(d)
    run(loop, main())


def test_unix_abstract_namespace(loop):
    async def main():
        name = f"\0ferroloop-test-{os.getpid()}-{id(loop)}"
        server = await loop.create_unix_server(Echo, name)
        r, w = await asyncio.open_unix_connection(name)
        w.write(b"ping")
        assert await r.readexactly(4) == b"ping"
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_buffered_protocol(loop):
    async def main():
        class Buf(asyncio.BufferedProtocol):
            def __init__(self):
                self.buf = bytearray(7)
                self.got = bytearray()
                self.done = loop.create_future()
            def get_buffer(self, sizehint):
                return self.buf
            def buffer_updated(self, n):
                self.got += self.buf[:n]
            def eof_received(self):
                pass
            def connection_lost(self, exc):
                self.done.set_result(bytes(self.got))
        holder = []
        def factory():
            holder.append(Buf())
            return holder[-1]
        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"x" * 100)
        w.close()
        await w.wait_closed()
        while not holder:
            await asyncio.sleep(0.01)
        assert await holder[0].done == b"x" * 100
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_flow_control(loop):
    async def main():
        class Paused(asyncio.Protocol):
            def __init__(self):
                self.calls = []
            def connection_made(self, tr):
                self.tr = tr
            def pause_writing(self):
                self.calls.append("pause")
            def resume_writing(self):
                self.calls.append("resume")
        a, b = socket.socketpair()
        a.setblocking(False)
        proto = Paused()
        tr, _ = await loop.create_connection(lambda: proto, sock=a)
        tr.set_write_buffer_limits(high=1000)
        assert tr.get_write_buffer_limits() == (250, 1000)
        with pytest.raises(ValueError):
            tr.set_write_buffer_limits(high=1, low=2)
        chunk = b"z" * 65536
        while not proto.calls:
            tr.write(chunk)
        assert proto.calls == ["pause"] and tr.get_write_buffer_size() > 1000
        total = tr.get_write_buffer_size()
        b.setblocking(False)
        got = 0
        while proto.calls == ["pause"]:
            await asyncio.sleep(0)
            try:
                got += len(b.recv(1 << 20))
            except BlockingIOError:
                pass
        assert proto.calls == ["pause", "resume"]
        assert tr.get_write_buffer_size() <= 250
        tr.abort()
        await asyncio.sleep(0)
        b.close()
    run(loop, main())


def test_tls_echo_and_extra_info(loop):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0, ssl=server_context())
        assert server._ssl_context is not None
        port = server.sockets[0].getsockname()[1]
        proto = Collect(loop)
        tr, _ = await loop.create_connection(
            lambda: proto, "127.0.0.1", port, ssl=client_context(),
            server_hostname="localhost")
        assert isinstance(tr.get_extra_info("ssl_object"), ssl.SSLObject)
        assert tr.get_extra_info("peercert") is not None
        assert tr.get_extra_info("cipher") is not None
        assert isinstance(tr.get_extra_info("sslcontext"), ssl.SSLContext)
        assert tr._ssl_protocol is not None
        tr.write(b"secret" * 1000)
        while len(proto.data) < 6000:
            await asyncio.sleep(0.01)
        tr.close()
        assert await proto.lost is None
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_tls_handshake_failure(loop):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0, ssl=server_context())
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(ssl.SSLCertVerificationError):
            await loop.create_connection(
                asyncio.Protocol, "127.0.0.1", port,
                ssl=client_context(trusted=False), server_hostname="localhost")
        server.close()
        await server.wait_closed()
    prev = loop.get_exception_handler()
    loop.set_exception_handler(lambda l, c: None)
    run(loop, main())
    loop.set_exception_handler(prev)


def test_start_tls_upgrade(loop):
    async def main():
        upgraded = loop.create_future()

        async def handler(r, w):
            assert await r.readexactly(8) == b"STARTTLS"
            w.write(b"OK")
            await w.drain()
            await w.start_tls(server_context())
            w.write((await r.readexactly(5)).upper())
            await w.drain()
            upgraded.set_result(w.get_extra_info("ssl_object") is not None)
            w.close()

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"STARTTLS")
        assert await r.readexactly(2) == b"OK"
        await w.start_tls(client_context(), server_hostname="localhost")
        w.write(b"hello")
        assert await r.readexactly(5) == b"HELLO"
        assert await upgraded
        w.close()
        try:
            await w.wait_closed()
        except (ssl.SSLError, ConnectionError):
            pass
        server.close()
        await server.wait_closed()
    run(loop, main())


@pytest.mark.parametrize("fallback_only", [False, True])
def test_sendfile(loop, fallback_only, tmp_path):
    payload = os.urandom(300_000)
    path = tmp_path / "f.bin"
    path.write_bytes(payload)

    async def main():
        done = loop.create_future()

        async def handler(r, w):
            data = await r.read()
            done.set_result(data)
            w.close()

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"head:")
        with open(path, "rb") as f:
            if fallback_only:
                # native path refused (as for TLS), the fallback copies
                tr = w.transport
                sent = await loop._sendfile_fallback(tr, f, 10, None)
            else:
                sent = await loop.sendfile(w.transport, f, offset=10)
        assert sent == len(payload) - 10
        w.write(b":tail")
        w.write_eof()
        assert await done == b"head:" + payload[10:] + b":tail"
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_transport_fd_is_guarded(loop):
    async def main():
        tr, proto, b = await _connected_pair(loop)
        fd = tr.get_extra_info("socket").fileno()
        with pytest.raises(RuntimeError, match="is used by transport"):
            loop.add_reader(fd, lambda: None)
        with pytest.raises(RuntimeError, match="is used by transport"):
            loop.remove_writer(fd)
        tr.close()
        await proto.lost
        b.close()
    run(loop, main())


def test_unclosed_transport_warns_and_closes(loop_factory):
    import gc
    import warnings
    loop = loop_factory()

    async def main():
        a, b = socket.socketpair()
        a.setblocking(False)
        await loop.create_connection(asyncio.Protocol, sock=a)
        return b

    b = run(loop, main())
    loop.close()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        gc.collect()
    assert any("unclosed transport" in str(x.message) for x in w), [str(x.message) for x in w]
    b.close()


def test_connection_lost_error_on_reset_by_write(loop):
    async def main():
        tr, proto, b = await _connected_pair(loop)
        b.close()
        for _ in range(20):
            tr.write(b"x" * 1000)
            await asyncio.sleep(0.01)
            if proto.lost.done():
                break
        exc = await proto.lost
        assert isinstance(exc, (BrokenPipeError, ConnectionResetError)), exc
    run(loop, main())


def test_write_from_resume_writing_then_close_releases_fd(loop):
    """Writes made from resume_writing() (inside the transport's own write
    callback) and a close() right after: the fd is fully released, so a new
    socket that reuses the number works with the loop."""
    async def main():
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)

        class P(asyncio.Protocol):
            def __init__(self):
                self.lost = loop.create_future()
                self.rounds = 0
            def connection_made(self, tr):
                self.tr = tr
            def pause_writing(self):
                pass
            def resume_writing(self):
                self.rounds += 1
                if self.rounds < 3:
                    self.tr.write(b"r" * 300_000)
                else:
                    self.tr.close()
            def connection_lost(self, exc):
                self.lost.set_result(exc)

        proto = P()
        tr, _ = await loop.create_connection(lambda: proto, sock=a)
        tr.write(b"w" * 1_000_000)
        got = 0
        while not proto.lost.done():
            try:
                got += len(b.recv(1 << 20))
            except BlockingIOError:
                await asyncio.sleep(0.001)
        fd = a.fileno()
        assert fd == -1  # the transport closed its socket
        b.close()
        # nothing is left watching the old fd number
        if hasattr(loop, "_get_watch"):
            watched = [w for w in loop._get_watch(tr._sock_fd) if w is not None]
        else:
            watched = [k for k in loop._selector.get_map() if k == tr._sock_fd]
        assert watched == []
    run(loop, main())


def test_many_writes_in_one_callback_then_close(loop):
    async def main():
        tr, proto, b = await _connected_pair(loop)
        parts = [bytes([65 + i % 26]) * (i + 1) for i in range(300)]
        for p in parts:
            tr.write(p)
        tr.writelines(parts[:3])
        tr.close()
        assert tr.is_closing()
        tr.write(b"ignored?")   # asyncio: queued if the buffer is not empty
        b.setblocking(False)
        got = bytearray()
        while True:
            chunk = await loop.sock_recv(b, 1 << 20)
            if not chunk:
                break
            got += chunk
        await proto.lost
        expected = b"".join(parts) + b"".join(parts[:3])
        assert bytes(got[: len(expected)]) == expected
        b.close()
    run(loop, main())


def test_write_outside_running_loop(loop):
    async def setup():
        tr, proto, b = await _connected_pair(loop)
        return tr, proto, b

    tr, proto, b = run(loop, setup())
    tr.write(b"sent while the loop is stopped")
    b.settimeout(2)
    assert b.recv(100) == b"sent while the loop is stopped"
    tr.close()
    run(loop, proto.lost)
    b.close()


def test_write_from_another_thread_is_sent(loop):
    """Not thread-safe in asyncio either, but a write made from a foreign
    thread while the loop sleeps must not wait for the loop to wake."""
    import threading

    async def main():
        tr, proto, b = await _connected_pair(loop)
        t = threading.Thread(target=tr.write, args=(b"from thread",))
        t.start()
        t.join()
        b.settimeout(2)
        data = await loop.run_in_executor(None, b.recv, 100)
        assert data == b"from thread"
        tr.close()
        await proto.lost
        b.close()
    run(loop, main())



def test_drain_hands_the_data_to_the_kernel(loop):
    """After `write(); await drain()` the peer can read the data at once, so
    a test that then blocks on the peer socket does not hang."""
    async def main():
        a, b = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=a)
        writer.write(b"ping")
        await writer.drain()
        b.settimeout(2)
        assert b.recv(100) == b"ping"
        writer.close()
        await writer.wait_closed()
        b.close()
    run(loop, main())


def test_write_buffer_size_after_a_write_the_socket_took(loop):
    async def main():
        tr, proto, b = await _connected_pair(loop)
        tr.write(b"x" * 100)
        tr.write(b"y" * 100)
        assert tr.get_write_buffer_size() == 0
        b.settimeout(2)
        got = b""
        while len(got) < 200:
            got += b.recv(200)
        assert got == b"x" * 100 + b"y" * 100
        tr.close()
        await proto.lost
        b.close()
    run(loop, main())


def test_lowering_the_high_mark_right_after_a_write(loop):
    """The socket took the write, so nothing is buffered and a high mark of
    0 does not pause the protocol."""
    async def main():
        class P(Collect):
            paused = 0
            def pause_writing(self):
                self.paused += 1

        tr, proto, b = await _connected_pair(loop, P(loop))
        tr.write(b"x" * 100)
        tr.set_write_buffer_limits(high=0)
        assert proto.paused == 0
        assert tr.get_write_buffer_limits() == (0, 0)
        tr.close()
        await proto.lost
        b.close()
    run(loop, main())


@pytest.mark.parametrize("family", ["tcp", "unix"])
def test_each_callbacks_writes_are_sent_before_the_next_callback(loop, family):
    """A write made by a call_soon callback is with the kernel before the
    peer's reader (queued after it in the same turn) reads: the peer gets
    both writes in one data_received, as on asyncio (asyncua's suite
    depends on this). Over TCP both ends are transports of one loop, whose
    writes wait for the turn's end unless the other end reads first; over
    Unix sockets ferroloop does not look for the peer."""
    async def main(tmp):
        chunks = []
        got_all = loop.create_future()

        class Server(asyncio.Protocol):
            def connection_made(self, tr):
                self.tr = tr

            def data_received(self, data):
                self.tr.write(b"A" * 72)
                loop.call_soon(self.tr.write, b"B" * 85)

        class Client(asyncio.Protocol):
            def data_received(self, data):
                chunks.append(len(data))
                if sum(chunks) == 157:
                    got_all.set_result(None)

        if family == "tcp":
            srv = await loop.create_server(Server, "127.0.0.1", 0)
            tr, _ = await loop.create_connection(Client, *srv.sockets[0].getsockname())
        else:
            path = os.path.join(tmp, "s")
            srv = await loop.create_unix_server(Server, path)
            tr, _ = await loop.create_unix_connection(Client, path)
        await asyncio.sleep(0.05)
        tr.write(b"req")
        await asyncio.wait_for(got_all, 5)
        assert chunks == [157]
        tr.close()
        srv.close()
        await srv.wait_closed()

    with tempfile.TemporaryDirectory() as tmp:
        run(loop, main(tmp))


def test_write_reaches_a_plain_socket_peer_before_the_next_callback(loop):
    """The peer is a plain socket of this process, not a transport: a
    callback later in the same turn can read the write with recv()."""
    async def main():
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen()
        tr, _ = await loop.create_connection(asyncio.Protocol, *lsock.getsockname())
        peer, _ = lsock.accept()
        lsock.close()
        got = loop.create_future()

        def read_now():
            try:
                got.set_result(peer.recv(100, socket.MSG_DONTWAIT))
            except BlockingIOError:
                got.set_result(b"")

        loop.call_soon(tr.write, b"hello")
        loop.call_soon(read_now)
        assert await got == b"hello"
        tr.close()
        await asyncio.sleep(0)
        peer.close()
    run(loop, main())


def test_close_after_a_write_in_an_earlier_callback_keeps_callback_order(loop):
    """write() in one callback, close() in the next, then a call_soon():
    connection_lost is queued before that call_soon's callback, as on
    asyncio (whose write sent the data at once, so close() found the
    buffer empty), also when both ends are transports of one loop."""
    async def main():
        events = []
        accepted = loop.create_future()

        class Server(asyncio.Protocol):
            def connection_made(self, tr):
                accepted.set_result(tr)

            def connection_lost(self, exc):
                events.append("lost")

        srv = await loop.create_server(Server, "127.0.0.1", 0)
        client = Collect(loop)
        tr, _ = await loop.create_connection(lambda: client, *srv.sockets[0].getsockname())
        str_ = await accepted
        done = loop.create_future()
        loop.call_soon(str_.write, b"bye")
        loop.call_soon(str_.close)
        loop.call_soon(loop.call_soon, events.append, "next")
        loop.call_soon(loop.call_soon, done.set_result, None)
        await done
        await asyncio.sleep(0)
        assert events == ["lost", "next"]
        await asyncio.wait_for(client.lost, 5)
        assert bytes(client.data) == b"bye"
        srv.close()
        await srv.wait_closed()
    run(loop, main())


def test_unclosed_transports_of_one_connection_are_collected(loop_factory):
    """Both ends of a connection on one loop, never closed, with a server
    whose protocol factory keeps its protocols: once the loop is closed and
    the last outside reference dropped, the collector frees both transports
    and the loop (with asyncio's ResourceWarning for each transport),
    though each end refers to the other and the server side, through its
    server, to the factory that keeps its protocol."""
    import gc
    import warnings
    import weakref

    lp = loop_factory.raw()  # not kept by the fixture: closed here
    server_side = []

    class Keep(asyncio.Protocol):
        def connection_made(self, tr):
            self.tr = tr

    def factory():
        server_side.append(Keep())
        return server_side[-1]

    async def main():
        srv = await lp.create_server(factory, "127.0.0.1", 0)
        tr, _ = await lp.create_connection(Keep, *srv.sockets[0].getsockname())
        while not server_side:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.01)
        # Not wait_closed(): from 3.12 it waits for the open connection.
        srv.close()
        await asyncio.sleep(0)
        return tr

    tr = lp.run_until_complete(main())
    lp.close()
    refs = [weakref.ref(tr), weakref.ref(server_side[0].tr), weakref.ref(lp)]
    socks = [tr.get_extra_info("socket"), server_side[0].tr.get_extra_info("socket")]
    del tr, lp, server_side, factory, main
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert [r() for r in refs] == [None, None, None]
    unclosed = [w for w in caught if "unclosed transport" in str(w.message)]
    assert len(unclosed) == 2
    assert all(s.fileno() == -1 for s in socks)


def test_endpoint_table_forgets_closed_and_collected_transports(ferroloop):
    """ferroloop's table of TCP endpoints (how two transports of one loop
    find each other) keeps no entry for a closed connection, nor for
    transports that were left open and then freed."""
    import gc
    import warnings

    lp = ferroloop.new_event_loop()
    server_side = []

    class Keep(asyncio.Protocol):
        def connection_made(self, tr):
            server_side.append(tr)

    async def main():
        srv = await lp.create_server(Keep, "127.0.0.1", 0)
        addr = srv.sockets[0].getsockname()
        tr, _ = await lp.create_connection(asyncio.Protocol, *addr)
        while not server_side:
            await asyncio.sleep(0.01)
        assert len(lp._stream_endpoints) == 2
        tr.close()
        server_side.pop().close()
        await asyncio.sleep(0.05)
        assert len(lp._stream_endpoints) == 0
        # Left open and paused (so the loop does not hold them), then dropped.
        tr, _ = await lp.create_connection(asyncio.Protocol, *addr)
        while not server_side:
            await asyncio.sleep(0.01)
        tr.pause_reading()
        server_side[0].pause_reading()
        await asyncio.sleep(0)
        assert len(lp._stream_endpoints) == 2
        del tr, _
        server_side.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        assert len(lp._stream_endpoints) == 0
        srv.close()

    try:
        lp.run_until_complete(main())
    finally:
        lp.close()


def test_is_closing_right_after_a_write_to_a_closed_peer(loop):
    """The failed send closes the transport before is_closing() answers."""
    async def main():
        tr, proto, b = await _connected_pair(loop)
        b.close()
        tr.write(b"x")
        assert tr.is_closing()
        assert isinstance(await proto.lost, BrokenPipeError)
    run(loop, main())


class _Checker(asyncio.Protocol):
    """Receives messages of repeating sizes and checks each bytes object
    handed over: contents and hash right, and those it keeps (or keeps a
    view of) never change afterwards."""

    SIZES = (1024, 3000, 700)

    def __init__(self, loop):
        self.loop = loop
        self.kept = []     # (bytes object handed over, a private copy)
        self.views = []    # (memoryview of one, a private copy)
        self.reads = 0
        self.got = bytearray()
        self.want = None

    @staticmethod
    def message(n):
        size = _Checker.SIZES[n % len(_Checker.SIZES)]
        return (n.to_bytes(4, "big") * (size // 4 + 1))[:size]

    def expect(self, n):
        self.got = bytearray()
        self.want = (self.message(n), self.loop.create_future())
        return self.want[1]

    def data_received(self, data):
        copy = bytes(memoryview(data))     # a new object with its own hash
        assert hash(data) == hash(copy) and data == copy
        self.reads += 1
        if self.reads % 3 == 0:
            self.kept.append((data, copy))
        elif self.reads % 3 == 1:
            self.views.append((memoryview(data), copy))
        self.got += data
        want, fut = self.want
        if len(self.got) >= len(want):
            assert bytes(self.got) == want
            fut.set_result(None)

    def check_kept(self):
        assert self.kept and self.views
        for data, copy in self.kept:
            assert data == copy and hash(data) == hash(copy)
        for view, copy in self.views:
            assert view.tobytes() == copy
            view.release()


def test_received_bytes_kept_by_the_protocol_never_change(loop):
    """Reads of repeated sizes: bytes (or views of them) a protocol keeps
    stay as they were. (ferroloop refills a finished read's bytes object
    for a later read of the same size, but only once nothing else refers
    to it.)"""
    async def main():
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        tr, pr = await loop.create_connection(lambda: _Checker(loop), sock=a)
        for n in range(120):
            done = pr.expect(n)
            await loop.sock_sendall(b, _Checker.message(n))
            await done
        pr.check_kept()
        tr.close()
        b.close()
    run(loop, main())


def test_received_bytes_through_an_echo_have_right_contents_and_hash(loop):
    """The echo server's reads go back out and are then released, so they
    are the ones refilled for later reads: contents and hash stay right."""
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        tr, pr = await loop.create_connection(
            lambda: _Checker(loop), "127.0.0.1", port)
        for n in range(300):
            done = pr.expect(n)
            tr.write(_Checker.message(n))
            await done
        pr.check_kept()
        tr.close()
        server.close()
        await server.wait_closed()
    run(loop, main())


# ---- every byte and the end of file reach the protocol ---------------------
# ferroloop's TCP transports are edge-triggered (the kernel reports a
# socket once per arrival, not on every turn while it stays readable). These
# tests hold the cases where a reader that stops early would miss the rest.


def _plain_tcp_pair():
    """Two connected plain TCP sockets."""
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        a = socket.create_connection(lsock.getsockname())
        b, _ = lsock.accept()
    return a, b


class _SmallBuffer(asyncio.BufferedProtocol):
    """Takes 7 bytes per read; optionally pauses reading after the first."""

    def __init__(self, loop, pause_after_first=False):
        self.buf = bytearray(7)
        self.got = bytearray()
        self.events = []
        self.pause_after_first = pause_after_first
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        return self.buf

    def buffer_updated(self, n):
        self.got += self.buf[:n]
        if self.pause_after_first:
            self.pause_after_first = False
            self.transport.pause_reading()

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)


async def _until(cond):
    """Polls `cond` every 10 ms, for up to 2 s (the caller asserts after)."""
    for _ in range(200):
        if cond():
            return
        await asyncio.sleep(0.01)


async def _wrap(loop, sock, proto):
    sock.setblocking(False)
    await loop.create_connection(lambda: proto, sock=sock)
    # Let the transport start reading and the loop poll it idle once.
    for _ in range(3):
        await asyncio.sleep(0)


@pytest.mark.parametrize("kind", ["tcp", "unix"])
@pytest.mark.parametrize("buffered", [False, True], ids=["protocol", "buffered"])
def test_data_and_eof_arriving_together(loop, kind, buffered):
    """The peer's last data and its FIN land before one poll: a short read
    takes the data, and the end of file behind it must still be seen."""
    async def main():
        a, b = _plain_tcp_pair() if kind == "tcp" else socket.socketpair()
        proto = _SmallBuffer(loop) if buffered else Collect(loop)
        await _wrap(loop, a, proto)
        try:
            b.sendall(b"last words")
            b.shutdown(socket.SHUT_WR)
            assert await asyncio.wait_for(proto.lost, 5) is None
            got = proto.got if buffered else proto.data
            assert bytes(got) == b"last words"
            assert proto.events[-2:] == ["eof", "lost"]
        finally:
            b.close()
    run(loop, main())


def test_small_buffer_gets_everything_without_eof(loop):
    """A BufferedProtocol whose buffer is smaller than what arrived gets the
    rest on later turns, with no new data or end of file to prompt it."""
    async def main():
        a, b = _plain_tcp_pair()
        proto = _SmallBuffer(loop)
        await _wrap(loop, a, proto)
        try:
            b.sendall(bytes(range(100)))
            await _until(lambda: len(proto.got) == 100)
            assert bytes(proto.got) == bytes(range(100))
            proto.transport.close()
            await proto.lost
        finally:
            b.close()
    run(loop, main())


@pytest.mark.parametrize("buffered", [False, True], ids=["protocol", "buffered"])
def test_resume_reading_delivers_what_arrived_while_paused(loop, buffered):
    """Data left in the socket at pause_reading(), and data that came while
    paused, arrive after resume_reading() without anything new arriving."""
    async def main():
        a, b = _plain_tcp_pair()
        proto = _SmallBuffer(loop) if buffered else Collect(loop)
        await _wrap(loop, a, proto)
        tr = proto.transport
        try:
            if buffered:
                proto.pause_after_first = True
                b.sendall(b"0123456789abcdef")
                await _until(lambda: proto.got)
                assert bytes(proto.got) == b"0123456"
                assert not tr.is_reading()
            else:
                tr.pause_reading()
                b.sendall(b"0123456789abcdef")
            await asyncio.sleep(0.05)
            got = proto.got if buffered else proto.data
            assert len(got) == (7 if buffered else 0)
            tr.resume_reading()
            await _until(lambda: len(got) == 16)
            assert bytes(got) == b"0123456789abcdef"
            tr.close()
            await proto.lost
        finally:
            b.close()
    run(loop, main())


@pytest.mark.parametrize("case", ["tcp-urgent", "unix-passed-fd"])
@pytest.mark.parametrize("buffered", [False, True], ids=["protocol", "buffered"])
def test_read_that_stops_short_with_more_queued(loop, case, buffered):
    """A read can come up short with more in-band data queued behind it:
    TCP stops at the urgent mark, a Unix socket where an fd was passed.
    Nothing more arrives afterwards, and every in-band byte must still be
    delivered (the urgent byte is not in-band; the passed fd is dropped)."""
    import array

    async def main():
        if case == "tcp-urgent":
            a, b = _plain_tcp_pair()
        else:
            a, b = socket.socketpair()
        proto = _SmallBuffer(loop) if buffered else Collect(loop)
        if buffered:
            proto.buf = bytearray(1000)
        await _wrap(loop, a, proto)
        r, w = os.pipe()
        try:
            if case == "tcp-urgent":
                b.send(b"abc")
                b.send(b"X", socket.MSG_OOB)
            else:
                fds = array.array("i", [r])
                b.sendmsg([b"abc"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
            b.send(b"def")
            got = proto.got if buffered else proto.data
            await _until(lambda: len(got) == 6)
            assert bytes(got) == b"abcdef"
            proto.transport.close()
            await proto.lost
        finally:
            b.close()
            os.close(r)
            os.close(w)
    run(loop, main())


def test_two_way_bulk_while_writers_wait(loop):
    """Both ends write 8 MiB at once, so each has a writer registered (its
    socket full) while data keeps arriving for it: every byte arrives both
    ways, in order, across the switches between waiting-to-write and not."""
    size = 8 << 20
    pattern = bytes(range(256)) * (size // 256)

    class Both(asyncio.Protocol):
        def __init__(self):
            self.got = bytearray()
            self.done = loop.create_future()

        def connection_made(self, transport):
            self.transport = transport
            for i in range(0, size, 65536):
                transport.write(pattern[i:i + 65536])

        def data_received(self, data):
            self.got += data
            if len(self.got) >= size and not self.done.done():
                self.done.set_result(None)

    async def main():
        server_side = []

        def factory():
            server_side.append(Both())
            return server_side[-1]

        server = await loop.create_server(factory, "127.0.0.1", 0)
        _, client = await loop.create_connection(Both, *server.sockets[0].getsockname())
        while not server_side:
            await asyncio.sleep(0.01)
        await asyncio.wait_for(asyncio.gather(client.done, server_side[0].done), 30)
        assert client.got == pattern and server_side[0].got == pattern
        client.transport.close()
        server_side[0].transport.close()
        server.close()
        await server.wait_closed()
    run(loop, main())
