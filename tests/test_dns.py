"""getaddrinfo / getnameinfo."""

import asyncio
import socket

import pytest

from conftest import run


@pytest.mark.parametrize("host,port", [
    ("127.0.0.1", 80),
    ("localhost", 80),
    ("127.0.0.1", "http"),
    ("127.0.0.1", None),
    (None, 8080),
    ("::1", 443),
])
def test_getaddrinfo_matches_socket(loop, host, port):
    try:
        expected = socket.getaddrinfo(host, port)
    except socket.gaierror as exc:
        expected = exc
    if isinstance(expected, Exception):
        with pytest.raises(socket.gaierror):
            run(loop, loop.getaddrinfo(host, port))
    else:
        assert run(loop, loop.getaddrinfo(host, port)) == expected


@pytest.mark.parametrize("kwargs", [
    dict(family=socket.AF_INET),
    dict(type=socket.SOCK_STREAM),
    dict(type=socket.SOCK_DGRAM, proto=socket.IPPROTO_UDP),
    dict(family=socket.AF_INET, type=socket.SOCK_STREAM,
         proto=socket.IPPROTO_TCP, flags=socket.AI_CANONNAME),
    dict(flags=socket.AI_NUMERICHOST),
    dict(flags=socket.AI_PASSIVE),
])
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_getaddrinfo_with_args(loop, host, kwargs):
    try:
        expected = socket.getaddrinfo(host, 80, **kwargs)
    except socket.gaierror as exc:
        expected = exc
    if isinstance(expected, Exception):
        with pytest.raises(socket.gaierror):
            run(loop, loop.getaddrinfo(host, 80, **kwargs))
    else:
        assert run(loop, loop.getaddrinfo(host, 80, **kwargs)) == expected


def test_getaddrinfo_result_types(loop):
    res = run(loop, loop.getaddrinfo("127.0.0.1", 80,
                                     type=socket.SOCK_STREAM))
    assert res
    family, type_, proto, canonname, sockaddr = res[0]
    assert family == socket.AF_INET and isinstance(family, socket.AddressFamily)
    assert type_ == socket.SOCK_STREAM and isinstance(type_, socket.SocketKind)
    assert sockaddr == ("127.0.0.1", 80)


def test_getaddrinfo_numerichost_failure(loop):
    with pytest.raises(socket.gaierror):
        run(loop, loop.getaddrinfo("localhost", 80,
                                   flags=socket.AI_NUMERICHOST))


def test_getaddrinfo_bytes_host(loop):
    assert run(loop, loop.getaddrinfo(b"127.0.0.1", 80)) == \
        socket.getaddrinfo(b"127.0.0.1", 80)


def test_getaddrinfo_concurrent(loop):
    async def main():
        return await asyncio.gather(
            *(loop.getaddrinfo("127.0.0.1", p) for p in range(1000, 1020)))

    results = run(loop, main())
    for p, r in zip(range(1000, 1020), results):
        assert r == socket.getaddrinfo("127.0.0.1", p)


@pytest.mark.parametrize("sockaddr,flags", [
    (("127.0.0.1", 80), 0),
    (("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV),
    (("127.0.0.1", 12345), socket.NI_NUMERICSERV),
])
def test_getnameinfo_matches_socket(loop, sockaddr, flags):
    assert run(loop, loop.getnameinfo(sockaddr, flags)) == \
        socket.getnameinfo(sockaddr, flags)


def test_getnameinfo_default_flags(loop):
    assert run(loop, loop.getnameinfo(("127.0.0.1", 80))) == \
        socket.getnameinfo(("127.0.0.1", 80), 0)


def test_getaddrinfo_on_closed_loop(loop):
    loop.close()

    async def main():
        return await loop.getaddrinfo("127.0.0.1", 80)

    coro = main()
    try:
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            coro.send(None)
    finally:
        coro.close()


def test_replaced_getaddrinfo_is_called_in_the_executor_and_not_remembered(
        loop, loop_factory, monkeypatch):
    """A test's fake resolver (psycopg's, many others) replaces
    socket.getaddrinfo: asyncio calls it in the executor, even for a numeric
    host, and an answer it gave does not outlive the patch."""
    import threading

    calls = []

    def fake(host, port, family=0, type=0, proto=0, flags=0):
        calls.append((host, threading.current_thread() is threading.main_thread()))
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.9.8.7", port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    for host in ("127.0.0.1", "foo.invalid"):
        res = run(loop, loop.getaddrinfo(host, 80, type=socket.SOCK_STREAM))
        assert res[0][4] == ("10.9.8.7", 80)
    assert calls == [("127.0.0.1", False), ("foo.invalid", False)]
    monkeypatch.undo()
    # The real resolver again: the fake's answer was not kept, by this loop
    # or any other.
    other = loop_factory()
    try:
        for lp in (loop, other):
            res = run(lp, lp.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM))
            assert res[0][4] == ("127.0.0.1", 80)
    finally:
        other.close()
