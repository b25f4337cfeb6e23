"""Stream transports under faults: peer reset, half-close, write after
close, connection refused, failed TLS handshake, a server out of file
descriptors, and many concurrent connections through one server."""

import asyncio
import errno
import resource
import sys
import subprocess
import socket
import struct
import time

import pytest

from conftest import run


class Record(asyncio.Protocol):
    def __init__(self, loop):
        self.lost = loop.create_future()
        self.data = bytearray()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.data += data

    def connection_lost(self, exc):
        self.lost.set_result(exc)


def test_peer_reset(loop):
    async def main():
        accepted = loop.create_future()

        def factory():
            p = Record(loop)
            accepted.set_result(p)
            return p

        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        c = socket.create_connection(("127.0.0.1", port))
        proto = await accepted
        c.send(b"bye")
        # SO_LINGER 0: close() sends RST instead of FIN.
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await asyncio.sleep(0.05)
        c.close()
        exc = await proto.lost
        assert isinstance(exc, ConnectionResetError), exc
        assert proto.transport.is_closing()
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_connection_refused(loop):
    async def main():
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        with pytest.raises(ConnectionRefusedError):
            await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
    run(loop, main())


def test_several_addresses_fail(loop):
    async def main():
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        infos = [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", port)),
        ]

        async def fake_getaddrinfo(*args, **kwargs):
            return infos
        loop.getaddrinfo = fake_getaddrinfo
        with pytest.raises(OSError) as ei:
            await loop.create_connection(asyncio.Protocol, "example.invalid", port)
        msg = str(ei.value)
        assert msg.startswith("Multiple exceptions:")
        assert "127.0.0.1" in msg and "127.0.0.2" in msg
    try:
        run(loop, main())
    finally:
        del loop.getaddrinfo
    run(loop, asyncio.sleep(0))


def test_write_after_close_and_after_lost(loop, caplog):
    async def main():
        a, b = socket.socketpair()
        a.setblocking(False)
        proto = Record(loop)
        tr, _ = await loop.create_connection(lambda: proto, sock=a)
        tr.write(b"one")
        tr.close()
        tr.write(b"two")      # no error: silently counted like asyncio does
        assert await proto.lost is None
        for _ in range(7):
            tr.write(b"x")
        b.setblocking(False)
        assert b.recv(100) == b"one"
        b.close()
    with caplog.at_level("WARNING", logger="asyncio"):
        run(loop, main())
    warnings = [r for r in caplog.records if r.getMessage() == "socket.send() raised exception."]
    assert len(warnings) >= 1


def test_write_after_write_eof(loop):
    async def main():
        a, b = socket.socketpair()
        a.setblocking(False)
        proto = Record(loop)
        tr, _ = await loop.create_connection(lambda: proto, sock=a)
        tr.write_eof()
        with pytest.raises(RuntimeError, match="Cannot call write\\(\\) after write_eof\\(\\)"):
            tr.write(b"x")
        assert b.recv(10) == b""          # the peer saw our FIN
        b.send(b"still readable")
        while not proto.data:
            await asyncio.sleep(0.01)
        assert bytes(proto.data) == b"still readable"
        tr.close()
        await proto.lost
        b.close()
    run(loop, main())


def test_abort_drops_buffer(loop):
    async def main():
        a, b = socket.socketpair()
        a.setblocking(False)
        proto = Record(loop)
        tr, _ = await loop.create_connection(lambda: proto, sock=a)
        while tr.get_write_buffer_size() == 0:
            tr.write(b"y" * 65536)
        tr.abort()
        assert tr.get_write_buffer_size() == 0
        assert await proto.lost is None
        b.close()
    run(loop, main())


def test_server_out_of_fds_pauses_and_recovers(loop):
    """accept() failing with EMFILE is reported once per retry, the listening
    socket is unwatched for ACCEPT_RETRY_DELAY (no busy loop), and accepting
    resumes once descriptors are available again."""
    contexts = []
    loop.set_exception_handler(lambda l, ctx: contexts.append(ctx))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    async def main():
        served = []

        class P(asyncio.Protocol):
            def connection_made(self, tr):
                served.append(tr)
                tr.write(b"hi")

        server = await loop.create_server(P, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        clients = [socket.socket() for _ in range(3)]
        import os
        fds = [int(x) for x in os.listdir("/proc/self/fd")]
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(fds) + 1, hard))
        fillers = []
        try:
            while True:                  # plug any holes below the limit
                fillers.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass
        try:
            for c in clients:
                c.setblocking(False)
                try:
                    c.connect(("127.0.0.1", port))
                except BlockingIOError:
                    pass
            await asyncio.sleep(0.05)      # the loop sees EMFILE on accept
            cpu0 = time.process_time()
            await asyncio.sleep(0.5)
            cpu = time.process_time() - cpu0
        finally:
            for fd in fillers:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert cpu < 0.25, f"loop spun while out of fds: {cpu:.3f}s CPU"
        msgs = [c["message"] for c in contexts]
        assert "socket.accept() out of system resource" in msgs
        exc = contexts[0]["exception"]
        assert exc.errno == errno.EMFILE
        deadline = loop.time() + 3
        while len(served) < 3 and loop.time() < deadline:
            await asyncio.sleep(0.05)
        assert len(served) == 3
        for tr in served:
            tr.close()
        for c in clients:
            c.close()
        server.close()
        await server.wait_closed()
    try:
        run(loop, main(), timeout=10)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _connection_budget(wanted):
    """Raise the soft fd limit to the hard one; how many server-side
    connections fit (one fd each, plus headroom)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return soft, hard, min(wanted, target - 300)


_CLIENTS = r"""
import asyncio, resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
port, n = int(sys.argv[1]), int(sys.argv[2])

async def main():
    sem = asyncio.Semaphore(1000)          # connect rate, not concurrency
    all_echoed = asyncio.Event()
    echoed = 0

    async def client(i):
        nonlocal echoed
        async with sem:
            r, w = await asyncio.open_connection("127.0.0.1", port)
        msg = b"%016d" % i
        w.write(msg)
        await w.drain()
        assert await r.readexactly(16) == msg
        echoed += 1
        if echoed == n:
            all_echoed.set()
        await all_echoed.wait()            # every connection open at once
        w.close()
        await w.wait_closed()

    await asyncio.gather(*(client(i) for i in range(n)))
    print(n)

asyncio.run(main())
"""


def test_many_concurrent_connections(loop):
    """10 000 concurrent connections all echo through one server with zero
    errors. The clients live in a child process, so each side needs only
    ~10 000 fds (a process's hard limit here is 20 000, and raising it needs
    CAP_SYS_RESOURCE)."""
    soft, hard, n = _connection_budget(10_000)
    errors = []
    loop.set_exception_handler(lambda l, ctx: errors.append(ctx))
    open_now = peak = 0

    async def main():
        async def handler(r, w):
            nonlocal open_now, peak
            open_now += 1
            peak = max(peak, open_now)
            try:
                data = await r.readexactly(16)
                w.write(data)
                await w.drain()
                await r.read()
            finally:
                open_now -= 1
                w.close()

        server = await asyncio.start_server(handler, "127.0.0.1", 0, backlog=4096)
        port = server.sockets[0].getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-c", _CLIENTS, str(port), str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await loop.run_in_executor(None, proc.communicate)
        assert proc.returncode == 0, err.decode()[-2000:]
        assert out.split() == [str(n).encode()]
        while open_now:                    # server sides see the clients' EOFs
            await asyncio.sleep(0.01)
        server.close()
        await server.wait_closed()

    try:
        run(loop, main(), timeout=120)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert errors == []
    assert peak == n, f"only {peak} of {n} connections were open at once"
    print(f"{n} concurrent connections")


@pytest.mark.parametrize("delay", [None, 0.05])
def test_next_address_after_refusal(loop, delay):
    """A refused first address falls through to the next one, sequentially
    or staggered (happy eyeballs)."""
    async def main():
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        good = server.sockets[0].getsockname()[1]
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        bad = s.getsockname()[1]
        s.close()
        infos = [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", bad)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", good)),
        ]

        async def fake_getaddrinfo(*args, **kwargs):
            return infos
        loop.getaddrinfo = fake_getaddrinfo
        tr, _ = await loop.create_connection(
            asyncio.Protocol, "example.invalid", 1, happy_eyeballs_delay=delay)
        assert tr.get_extra_info("peername") == ("127.0.0.1", good)
        tr.close()
        await asyncio.sleep(0.01)
        server.close()
        await server.wait_closed()
    try:
        run(loop, main())
    finally:
        del loop.getaddrinfo


def test_tls_handshake_timeout(loop):
    """A peer that never answers the ClientHello: the handshake times out
    with asyncio's error, and nothing is left open."""
    from _certs import client_context

    async def main():
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(ConnectionAbortedError, match="SSL handshake is taking longer than 0.2 seconds"):
            await loop.create_connection(
                asyncio.Protocol, "127.0.0.1", port, ssl=client_context(),
                server_hostname="localhost", ssl_handshake_timeout=0.2)
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.05)
    run(loop, main())
