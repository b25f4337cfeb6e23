"""Subprocess and datagram rows: spawn-and-wait, bulk bytes through a child's
pipes, UDP echo round trips."""

from __future__ import annotations

import asyncio
import os
import subprocess
from time import perf_counter

from ..registry import Loop, Skip, check, row

ORDER = 60

TRUE = "/bin/true"
CAT = "/bin/cat"


@row(n=200, quick=20, unit="processes")
async def spawn_wait_true(loop: Loop, n: int) -> float:
    """n concurrent /bin/true: create_subprocess_exec + wait, all of them."""
    if not os.access(TRUE, os.X_OK):
        raise Skip(f"{TRUE} not available")

    async def one() -> int:
        proc = await asyncio.create_subprocess_exec(
            TRUE, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        return await proc.wait()

    t0 = perf_counter()
    codes = await asyncio.gather(*(one() for _ in range(n)))
    dt = perf_counter() - t0
    check(codes == [0] * n, f"return codes {set(codes)}")
    return dt


@row(n=4 * 1024 * 1024, quick=1024 * 1024, unit="bytes")
async def cat_communicate(loop: Loop, n: int) -> float:
    """n bytes into cat's stdin and back out of its stdout, with communicate()."""
    if not os.access(CAT, os.X_OK):
        raise Skip(f"{CAT} not available")
    blob = os.urandom(n)
    t0 = perf_counter()
    proc = await asyncio.create_subprocess_exec(
        CAT, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out, _ = await proc.communicate(blob)
    dt = perf_counter() - t0
    check(proc.returncode == 0, f"cat exited {proc.returncode}")
    check(out == blob, f"got {len(out)} of {n} bytes back")
    return dt


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data, addr) -> None:
        self.transport.sendto(data, addr)


class _Client(asyncio.DatagramProtocol):
    def __init__(self, n: int, done: asyncio.Future) -> None:
        self.left = n
        self.done = done
        self.payload = b"x" * 64

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.sendto(self.payload)

    def datagram_received(self, data, addr) -> None:
        self.left -= 1
        if self.left:
            self.transport.sendto(data)
        elif not self.done.done():
            self.done.set_result(None)

    def error_received(self, exc) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


@row(n=40_000, quick=2_000, unit="round trips")
async def udp_echo(loop: Loop, n: int) -> float:
    """One client, one echo server on 127.0.0.1, 64-byte datagrams ping-ponged."""
    server, _ = await loop.create_datagram_endpoint(
        _Echo, local_addr=("127.0.0.1", 0))
    addr = server.get_extra_info("sockname")
    done = loop.create_future()
    proto = _Client(n, done)
    t0 = perf_counter()
    client, _ = await loop.create_datagram_endpoint(lambda: proto, remote_addr=addr)
    try:
        await asyncio.wait_for(done, 60)
    finally:
        dt = perf_counter() - t0
        client.close()
        server.close()
        await asyncio.sleep(0)
    check(proto.left == 0, f"{proto.left} of {n} round trips missing")
    return dt
