"""Nothing is lost across loop close: many loop lifetimes, each carrying
TCP, Unix and TLS streams, faults, datagrams, a subprocess, timers, fd
watchers and the executor, must leave no Python objects, no memory and no
file descriptors behind (the fd check is conftest's, around each test).

Each lifetime ends with the loop closed and dropped, so what one leaks is
multiplied by the count: a leaked object per lifetime shows as a type whose
live count grows by the number of lifetimes, a leaked read buffer as
megabytes of resident memory."""

import asyncio
import collections
import gc
import os
import socket
import struct

from _certs import client_context, server_context
from test_streams import Echo

LIFETIMES = 400
WARM_UP = 40
# A lifetime moves about 300 KiB through its transports (64 KiB each way
# per stream connection): a bytes object or buffer leaked per read or write
# would add over 100 MiB, far more than this.
PAYLOAD = 64 * 1024
RSS_SLACK_MIB = 16


def _rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class _DatagramEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


async def _lifetime(i, tmp_path, tls):
    loop = asyncio.get_running_loop()

    async def echo_once(reader, writer):
        writer.write(await reader.readexactly(PAYLOAD))
        await writer.drain()
        writer.close()

    # TCP streams, then TLS over TCP every fourth lifetime.
    kinds = [(None, None)] + ([tls] if i % 4 == 0 else [])
    for server_ssl, client_ssl in kinds:
        server = await asyncio.start_server(echo_once, "127.0.0.1", 0, ssl=server_ssl)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ssl,
            server_hostname="localhost" if client_ssl else None)
        writer.write(b"x" * PAYLOAD)
        await writer.drain()
        assert len(await reader.read()) == PAYLOAD
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    # A Unix connection aborted with data in flight.
    path = str(tmp_path / f"s{i % 3}")
    server = await loop.create_unix_server(Echo, path)
    transport, _ = await loop.create_unix_connection(asyncio.Protocol, path)
    transport.write(b"hi")
    transport.abort()
    server.close()
    await server.wait_closed()

    # Faults: a refused connection, and a peer that resets.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    try:
        await asyncio.open_connection("127.0.0.1", closed_port)
    except ConnectionRefusedError:
        pass

    async def reset(reader, writer):
        writer.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await asyncio.start_server(reset, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.sockets[0].getsockname()[1])
    try:
        await reader.read()
    except ConnectionResetError:
        pass
    writer.close()
    try:
        await writer.wait_closed()
    except ConnectionResetError:
        pass
    server.close()
    await server.wait_closed()

    # Datagrams.
    echo, _ = await loop.create_datagram_endpoint(
        _DatagramEcho, local_addr=("127.0.0.1", 0))
    got = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            got.set_result(data)

    client, _ = await loop.create_datagram_endpoint(
        Client, remote_addr=echo.get_extra_info("sockname"))
    client.sendto(b"ping")
    assert await got == b"ping"
    client.close()
    echo.close()

    # A subprocess every tenth lifetime; timers, watchers, the executor.
    if i % 10 == 0:
        proc = await asyncio.create_subprocess_exec(
            "true", stdout=asyncio.subprocess.PIPE)
        await proc.communicate()
    loop.call_later(10, print).cancel()
    r, w = socket.socketpair()
    loop.add_reader(r, print)
    loop.remove_reader(r)
    r.close()
    w.close()
    try:
        await asyncio.wait_for(asyncio.sleep(1), 0.0001)
    except asyncio.TimeoutError:
        pass
    await loop.getaddrinfo("127.0.0.1", 80)
    await loop.run_in_executor(None, int)


def _live_objects_by_type():
    gc.collect()
    return collections.Counter(type(o).__qualname__ for o in gc.get_objects())


def test_loop_lifetimes_leave_nothing_behind(loop_factory, tmp_path):
    tls = (server_context(), client_context())

    def one(i):
        loop = loop_factory()
        try:
            loop.run_until_complete(_lifetime(i, tmp_path, tls))
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()
        loop_factory.loops.remove(loop)

    for i in range(WARM_UP):
        one(i)
    before = _live_objects_by_type()
    rss_before = _rss_mib()
    for i in range(LIFETIMES):
        one(i)
    after = _live_objects_by_type()
    grown = {name: after[name] - before[name] for name in after
             if after[name] - before[name] >= LIFETIMES // 4}
    assert grown == {}, f"live objects grew over {LIFETIMES} loop lifetimes"
    grew_mib = _rss_mib() - rss_before
    assert grew_mib < RSS_SLACK_MIB, (
        f"resident memory grew {grew_mib:.1f} MiB over {LIFETIMES} loop lifetimes")
    assert len(os.listdir("/proc/self/fd")) < 64
