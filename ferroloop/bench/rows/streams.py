"""Stream transport rows: echo round trips through a Protocol and through
streams, bulk transfer, numeric getaddrinfo, and HTTP via uvicorn + wrk.

Client and server run on the same loop over loopback TCP, so every round
trip costs two reads and two writes on the loop under test."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from time import perf_counter

from ..registry import Loop, Sample, Skip, check, row

ORDER = 40

# Concurrent connections in the echo rows: enough to keep the loop busy,
# few enough that per-connection overhead dominates (not scheduling).
CONCURRENCY = 10
MSG = b"x" * 1024


class _EchoServer(asyncio.Protocol):
    def connection_made(self, transport):
        self.write = transport.write

    def data_received(self, data):
        self.write(data)


class _PingClient(asyncio.Protocol):
    """Sends 1 KiB, waits for it to come back, repeats `count` times."""

    def __init__(self, count, done):
        self.left = count
        self.done = done
        self.pending = 0

    def connection_made(self, transport):
        self.transport = transport
        self.pending = len(MSG)
        transport.write(MSG)

    def data_received(self, data):
        self.pending -= len(data)
        if self.pending:
            return
        self.left -= 1
        if self.left:
            self.pending = len(MSG)
            self.transport.write(MSG)
        else:
            self.done.set_result(None)


@row(n=200_000, quick=5_000, unit="round trips")
async def echo_protocol(loop: Loop, n: int) -> Sample:
    """1 KiB echo round trips through asyncio.Protocol (10 connections)."""
    server = await loop.create_server(_EchoServer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    per = max(1, n // CONCURRENCY)
    dones = [loop.create_future() for _ in range(CONCURRENCY)]
    transports = []
    t0 = perf_counter()
    for d in dones:
        tr, _ = await loop.create_connection(
            lambda d=d: _PingClient(per, d), "127.0.0.1", port)
        transports.append(tr)
    await asyncio.gather(*dones)
    dt = perf_counter() - t0
    for tr in transports:
        tr.close()
    server.close()
    await server.wait_closed()
    check(all(d.done() for d in dones), "not all clients finished")
    return Sample(dt, per * CONCURRENCY)


@row(n=100_000, quick=3_000, unit="round trips")
async def echo_streams(loop: Loop, n: int) -> Sample:
    """1 KiB echo round trips through asyncio streams (10 connections)."""

    async def handler(r, w):
        try:
            while True:
                data = await r.read(65536)
                if not data:
                    break
                w.write(data)
        finally:
            w.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    per = max(1, n // CONCURRENCY)
    done = 0

    async def client():
        nonlocal done
        r, w = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(per):
            w.write(MSG)
            await r.readexactly(len(MSG))
            done += 1
        w.close()
        await w.wait_closed()

    t0 = perf_counter()
    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    dt = perf_counter() - t0
    server.close()
    await server.wait_closed()
    check(done == per * CONCURRENCY, f"{done} of {per * CONCURRENCY}")
    return Sample(dt, done)


class _Sink(asyncio.Protocol):
    def __init__(self, total, done):
        self.left = total
        self.done = done

    def data_received(self, data):
        self.left -= len(data)
        if self.left <= 0 and not self.done.done():
            self.done.set_result(None)


class _Bulk(asyncio.Protocol):
    """Writes 64 KiB chunks whenever the transport is not paused."""

    def __init__(self, chunks, finished):
        self.left = chunks
        self.finished = finished
        self.chunk = b"b" * 65536

    def connection_made(self, transport):
        self.transport = transport
        self.resume_writing()

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False
        write = self.transport.write
        while self.left and not self.paused:
            self.left -= 1
            write(self.chunk)
        if not self.left and not self.finished.done():
            self.finished.set_result(None)


# Connections per bulk_transfer sample. On loopback with BBR a connection
# settles early into one of two speeds (about 2x apart: the sender's window
# stays small or grows), on every loop alike; one connection per sample made
# the row's ratio a coin toss. A sample is the total over several.
BULK_CONNECTIONS = 4


@row(n=4 << 30, quick=64 << 20, unit="bytes")
async def bulk_transfer(loop: Loop, n: int) -> Sample:
    """Bulk one-way transfer in 64 KiB writes, flow-controlled (GiB/s), over
    4 connections one after another."""
    chunks = max(1, n // 65536 // BULK_CONNECTIONS)
    total = chunks * 65536
    dt = 0.0
    for _ in range(BULK_CONNECTIONS):
        done = loop.create_future()
        server = await loop.create_server(lambda: _Sink(total, done), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        sent = loop.create_future()
        t0 = perf_counter()
        tr, _ = await loop.create_connection(lambda: _Bulk(chunks, sent), "127.0.0.1", port)
        await sent
        await done
        dt += perf_counter() - t0
        tr.close()
        server.close()
        await server.wait_closed()
    return Sample(dt, total * BULK_CONNECTIONS)


@row(n=200_000, quick=10_000, unit="lookups")
async def getaddrinfo_numeric(loop: Loop, n: int) -> Sample:
    """await loop.getaddrinfo('127.0.0.1', 80): a numeric host, no DNS."""
    gai = loop.getaddrinfo
    t0 = perf_counter()
    for _ in range(n):
        res = await gai("127.0.0.1", 80, type=socket.SOCK_STREAM)
    dt = perf_counter() - t0
    check(res[0][4] == ("127.0.0.1", 80), repr(res))
    return Sample(dt, n)


_UVICORN_APP = '''
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"Hello, world!"})
'''

_UVICORN_MAIN = '''
import asyncio, sys
sys.path.insert(0, sys.argv[1])
kind = sys.argv[2]
import uvicorn
if kind == "ferroloop":
    import ferroloop; ferroloop.install()
elif kind == "uvloop":
    import uvloop; uvloop.install()
elif kind == "rloop":
    import rloop; asyncio.set_event_loop_policy(rloop.EventLoopPolicy())
config = uvicorn.Config("_bench_app:app", host="127.0.0.1", port=int(sys.argv[3]),
                        loop="none", http="httptools", log_level="error",
                        access_log=False)
uvicorn.Server(config).run()
'''


def _uvicorn_row():
    @row(n=5, quick=2, unit="requests")
    def uvicorn_plaintext(loop: Loop, n: int) -> Sample:
        """HTTP plaintext via uvicorn + httptools in a child, wrk -t1 -c64 for n s."""
        import re
        import tempfile

        try:
            import httptools  # noqa: F401
            import uvicorn  # noqa: F401
        except ImportError:
            raise Skip("uvicorn/httptools not installed (pip install uvicorn httptools)")
        wrk = shutil.which("wrk")
        if wrk is None:
            raise Skip("wrk not installed (apt-get install wrk)")
        kind = _kind_of(loop)
        d = tempfile.mkdtemp()
        with open(os.path.join(d, "_bench_app.py"), "w") as f:
            f.write(_UVICORN_APP)
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__)))),
             env.get("PYTHONPATH", "")])
        srv = subprocess.Popen([sys.executable, "-c", _UVICORN_MAIN, d, kind, str(port)],
                               env=env)
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            out = subprocess.run([wrk, "-t1", "-c64", f"-d{n}s", f"http://127.0.0.1:{port}/"],
                                 capture_output=True, text=True, check=True).stdout
        finally:
            srv.terminate()
            srv.wait()
            shutil.rmtree(d, ignore_errors=True)
        m = re.search(r"^\s*(\d+) requests in ([\d.]+)s", out, re.M)
        check(m is not None, f"unparsable wrk output: {out!r}")
        errs = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        check(errs is None, f"wrk saw errors: {out!r}")
        return Sample(float(m.group(2)), float(m.group(1)))


def _kind_of(loop) -> str:
    mod = type(loop).__module__
    for k in ("ferroloop", "uvloop", "rloop"):
        if mod.startswith(k):
            return k
    return "asyncio"


_uvicorn_row()
