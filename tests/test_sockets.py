"""Low-level socket operations: sock_recv*, sock_send*, sock_connect,
sock_accept, sock_sendfile."""

import asyncio
import io
import os
import socket

import pytest

from conftest import run


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def listener():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.setblocking(False)
    yield srv
    srv.close()


@pytest.fixture
def udp_pair():
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    b.bind(("127.0.0.1", 0))
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


async def _tcp_pair(loop, listener):
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setblocking(False)
    try:
        accept = asyncio.ensure_future(loop.sock_accept(listener))
        await loop.sock_connect(client, listener.getsockname())
        conn, addr = await accept
    except BaseException:
        client.close()
        raise
    return client, conn, addr


def test_sock_recv_waits_for_data(loop, pair):
    a, b = pair

    async def main():
        recv = asyncio.ensure_future(loop.sock_recv(a, 100))
        await asyncio.sleep(0.02)
        assert not recv.done()
        b.send(b"data")
        return await recv

    assert run(loop, main()) == b"data"


def test_sock_recv_ready_data_and_eof(loop, pair):
    a, b = pair

    async def main():
        b.send(b"abc")
        first = await loop.sock_recv(a, 100)
        b.shutdown(socket.SHUT_WR)
        eof = await loop.sock_recv(a, 100)
        return first, eof

    assert run(loop, main()) == (b"abc", b"")


def test_sock_recv_nbytes_limit(loop, pair):
    a, b = pair

    async def main():
        b.send(b"0123456789")
        x = await loop.sock_recv(a, 4)
        y = await loop.sock_recv(a, 100)
        return x, y

    assert run(loop, main()) == (b"0123", b"456789")


def test_sock_recv_into(loop, pair):
    a, b = pair

    async def main():
        buf = bytearray(10)
        task = asyncio.ensure_future(loop.sock_recv_into(a, buf))
        await asyncio.sleep(0.01)
        b.send(b"hello")
        n = await task
        return n, bytes(buf)

    n, data = run(loop, main())
    assert n == 5
    assert data == b"hello" + bytes(5)


def test_sock_recv_into_memoryview(loop, pair):
    a, b = pair

    async def main():
        buf = bytearray(8)
        b.send(b"abcdefgh")
        n = await loop.sock_recv_into(a, memoryview(buf)[2:6])
        return n, bytes(buf)

    assert run(loop, main()) == (4, b"\0\0abcd\0\0")


def test_cancelled_sock_recv_does_not_consume(loop, pair):
    a, b = pair

    async def main():
        t = asyncio.ensure_future(loop.sock_recv(a, 100))
        await asyncio.sleep(0.01)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        b.send(b"after-cancel")
        return await loop.sock_recv(a, 100)

    assert run(loop, main()) == b"after-cancel"


def test_sock_sendall_small(loop, pair):
    a, b = pair

    async def main():
        r = await loop.sock_sendall(a, b"payload")
        assert r is None
        return await loop.sock_recv(b, 100)

    assert run(loop, main()) == b"payload"


def test_sock_sendall_empty(loop, pair):
    a, b = pair
    assert run(loop, loop.sock_sendall(a, b"")) is None


def test_sock_sendall_large_with_concurrent_reader(loop, pair):
    a, b = pair
    payload = os.urandom(1 << 16) * 128  # 8 MiB

    async def reader():
        chunks = []
        total = 0
        while total < len(payload):
            chunk = await loop.sock_recv(b, 1 << 18)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)

    async def main():
        r = asyncio.ensure_future(reader())
        await loop.sock_sendall(a, payload)
        return await r

    received = run(loop, main(), timeout=30)
    assert len(received) == len(payload)
    assert received == payload


def test_sock_sendall_accepts_bytearray_and_memoryview(loop, pair):
    a, b = pair

    async def main():
        await loop.sock_sendall(a, bytearray(b"ba"))
        await loop.sock_sendall(a, memoryview(b"xxmvxx")[2:4])
        await asyncio.sleep(0.01)
        return await loop.sock_recv(b, 100)

    assert run(loop, main()) == b"bamv"


def test_sock_sendall_to_closed_peer(loop, pair):
    a, b = pair
    b.close()

    async def main():
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for _ in range(100):
                await loop.sock_sendall(a, b"x" * 65536)

    run(loop, main())


def test_udp_sendto_recvfrom(loop, udp_pair):
    a, b = udp_pair

    async def main():
        recv = asyncio.ensure_future(loop.sock_recvfrom(b, 1024))
        await asyncio.sleep(0.01)
        assert not recv.done()
        n = await loop.sock_sendto(a, b"dgram", b.getsockname())
        data, addr = await recv
        return n, data, addr

    n, data, addr = run(loop, main())
    assert n == 5
    assert data == b"dgram"
    assert addr == udp_pair[0].getsockname()


def test_udp_recvfrom_into(loop, udp_pair):
    a, b = udp_pair

    async def main():
        buf = bytearray(16)
        recv = asyncio.ensure_future(loop.sock_recvfrom_into(b, buf))
        await asyncio.sleep(0.01)
        await loop.sock_sendto(a, b"into", b.getsockname())
        n, addr = await recv
        return n, bytes(buf[:n]), addr

    n, data, addr = run(loop, main())
    assert (n, data) == (4, b"into")
    assert addr == udp_pair[0].getsockname()


def test_udp_recvfrom_into_nbytes(loop, udp_pair):
    a, b = udp_pair

    async def main():
        buf = bytearray(16)
        a.sendto(b"0123456789", b.getsockname())
        await asyncio.sleep(0.01)
        n, addr = await loop.sock_recvfrom_into(b, buf, 4)
        return n, bytes(buf)

    n, data = run(loop, main())
    assert n == 4
    assert data == b"0123" + bytes(12)


def test_sock_connect_and_accept(loop, listener):
    async def main():
        client, conn, addr = await _tcp_pair(loop, listener)
        try:
            assert conn.gettimeout() == 0  # accepted socket is non-blocking
            assert addr == client.getsockname()
            assert client.getpeername() == listener.getsockname()
            await loop.sock_sendall(client, b"c2s")
            assert await loop.sock_recv(conn, 10) == b"c2s"
            await loop.sock_sendall(conn, b"s2c")
            assert await loop.sock_recv(client, 10) == b"s2c"
        finally:
            client.close()
            conn.close()

    run(loop, main())


def test_sock_accept_waits(loop, listener):
    async def main():
        acc = asyncio.ensure_future(loop.sock_accept(listener))
        await asyncio.sleep(0.02)
        assert not acc.done()
        client = socket.create_connection(listener.getsockname())
        try:
            conn, addr = await acc
            conn.close()
        finally:
            client.close()
        return addr

    assert run(loop, main())[0] == "127.0.0.1"


def test_cancelled_sock_accept_does_not_take_connection(loop, listener):
    async def main():
        acc = asyncio.ensure_future(loop.sock_accept(listener))
        await asyncio.sleep(0.01)
        acc.cancel()
        with pytest.raises(asyncio.CancelledError):
            await acc
        client = socket.create_connection(listener.getsockname())
        try:
            conn, addr = await loop.sock_accept(listener)
            conn.close()
            return addr == client.getsockname()
        finally:
            client.close()

    assert run(loop, main()) is True


def test_sock_connect_resolves_hostname(loop, listener):
    async def main():
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.setblocking(False)
        try:
            acc = asyncio.ensure_future(loop.sock_accept(listener))
            port = listener.getsockname()[1]
            await loop.sock_connect(client, ("localhost", port))
            conn, _ = await acc
            conn.close()
            return client.getpeername()
        finally:
            client.close()

    assert run(loop, main()) == listener.getsockname()


def test_sock_connect_refused(loop):
    tmp = socket.socket()
    tmp.bind(("127.0.0.1", 0))
    addr = tmp.getsockname()
    tmp.close()  # nothing listens there now

    async def main():
        s = socket.socket()
        s.setblocking(False)
        try:
            with pytest.raises(ConnectionRefusedError):
                await loop.sock_connect(s, addr)
        finally:
            s.close()

    run(loop, main())


def test_failed_connect_leaves_no_future_cycle(loop):
    # The error's traceback holds the frames that raised it; none of them
    # may keep the future that carries the error (future -> exception ->
    # frame -> future), or every failed connect waits for the collector.
    import gc

    tmp = socket.socket()
    tmp.bind(("127.0.0.1", 0))
    addr = tmp.getsockname()
    tmp.close()

    async def main():
        errors = []
        s = socket.socket()
        s.setblocking(False)
        try:
            await loop.sock_connect(s, addr)
        except OSError as e:
            errors.append(e)
        finally:
            s.close()
        try:
            await loop.create_connection(asyncio.Protocol, *addr)
        except OSError as e:
            errors.append(e)
        return errors

    errors = run(loop, main())
    assert len(errors) == 2
    gc.disable()
    try:
        for exc in errors:
            holders = [type(r).__name__ for r in gc.get_referrers(exc)]
            assert not any("Future" in h or "Task" in h for h in holders), holders
    finally:
        gc.enable()


def test_sock_connect_unix(loop, tmp_path):
    path = str(tmp_path / "sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    srv.setblocking(False)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.setblocking(False)

    async def main():
        acc = asyncio.ensure_future(loop.sock_accept(srv))
        await loop.sock_connect(client, path)
        conn, _ = await acc
        try:
            await loop.sock_sendall(client, b"unix")
            return await loop.sock_recv(conn, 10)
        finally:
            conn.close()

    try:
        assert run(loop, main()) == b"unix"
    finally:
        client.close()
        srv.close()


@pytest.mark.parametrize("op", ["recv", "recv_into", "sendall", "accept",
                                "connect", "recvfrom", "recvfrom_into",
                                "sendto"])
def test_blocking_socket_rejected_in_debug(loop, op):
    # stock asyncio checks this only in debug mode
    loop.set_debug(True)
    kind = socket.SOCK_DGRAM if op.startswith(("recvfrom", "sendto")) \
        else socket.SOCK_STREAM
    s = socket.socket(socket.AF_INET, kind)
    s.setblocking(True)
    coro = {
        "recv": lambda: loop.sock_recv(s, 10),
        "recv_into": lambda: loop.sock_recv_into(s, bytearray(10)),
        "sendall": lambda: loop.sock_sendall(s, b"x"),
        "accept": lambda: loop.sock_accept(s),
        "connect": lambda: loop.sock_connect(s, ("127.0.0.1", 1)),
        "recvfrom": lambda: loop.sock_recvfrom(s, 10),
        "recvfrom_into": lambda: loop.sock_recvfrom_into(s, bytearray(10)),
        "sendto": lambda: loop.sock_sendto(s, b"x", ("127.0.0.1", 9)),
    }[op]

    async def main():
        with pytest.raises(ValueError, match="the socket must be non-blocking"):
            await coro()

    try:
        run(loop, main())
    finally:
        s.close()


# ---------------------------------------------------------------------------
# sock_sendfile
# ---------------------------------------------------------------------------

@pytest.fixture
def data_file(tmp_path):
    data = os.urandom(300_000)
    path = tmp_path / "payload.bin"
    path.write_bytes(data)
    return path, data


async def _drain(loop, sock, expected):
    chunks = []
    total = 0
    while total < expected:
        chunk = await loop.sock_recv(sock, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _sendfile_roundtrip(loop, listener, fileobj, expected_len, **kwargs):
    async def main():
        client, conn, _ = await _tcp_pair(loop, listener)
        try:
            reader = asyncio.ensure_future(_drain(loop, conn, expected_len))
            sent = await loop.sock_sendfile(client, fileobj, **kwargs)
            received = await reader
            return sent, received
        finally:
            client.close()
            conn.close()

    return run(loop, main(), timeout=20)


def test_sock_sendfile_native(loop, listener, data_file):
    path, data = data_file
    with open(path, "rb") as f:
        sent, received = _sendfile_roundtrip(loop, listener, f, len(data))
        assert f.tell() == len(data)
    assert sent == len(data)
    assert received == data


def test_sock_sendfile_offset_count(loop, listener, data_file):
    path, data = data_file
    with open(path, "rb") as f:
        sent, received = _sendfile_roundtrip(loop, listener, f, 1000,
                                             offset=10, count=1000)
        assert f.tell() == 1010
    assert sent == 1000
    assert received == data[10:1010]


def test_sock_sendfile_fallback_non_regular_file(loop, listener, data_file):
    _, data = data_file
    bio = io.BytesIO(data)
    sent, received = _sendfile_roundtrip(loop, listener, bio, len(data))
    assert sent == len(data)
    assert received == data
    assert bio.tell() == len(data)


def test_sock_sendfile_no_fallback_raises(loop, listener, data_file):
    _, data = data_file

    async def main():
        client, conn, _ = await _tcp_pair(loop, listener)
        try:
            with pytest.raises(asyncio.SendfileNotAvailableError):
                await loop.sock_sendfile(client, io.BytesIO(data),
                                         fallback=False)
        finally:
            client.close()
            conn.close()

    run(loop, main())


def test_sock_sendfile_empty_file(loop, listener, tmp_path):
    path = tmp_path / "empty.bin"
    path.write_bytes(b"")
    with open(path, "rb") as f:
        sent, received = _sendfile_roundtrip(loop, listener, f, 0)
    assert sent == 0
    assert received == b""


def test_sock_sendfile_param_checks(loop, pair, data_file, udp_pair):
    a, b = pair
    path, _ = data_file

    async def main():
        with open(path, "r") as text_f:
            with pytest.raises(ValueError):
                await loop.sock_sendfile(a, text_f)
        with open(path, "rb") as f:
            with pytest.raises(ValueError):
                await loop.sock_sendfile(udp_pair[0], f)
            with pytest.raises(TypeError):
                await loop.sock_sendfile(a, f, count="10")
            with pytest.raises(ValueError):
                await loop.sock_sendfile(a, f, count=0)
            with pytest.raises(ValueError):
                await loop.sock_sendfile(a, f, offset=-1)
            with pytest.raises(TypeError):
                await loop.sock_sendfile(a, f, offset=1.5)

    run(loop, main())
