"""asyncpg against a real PostgreSQL server, on each loop.

asyncpg is one of the most demanding asyncio clients: its protocol is a
C-level ``asyncio.Protocol`` fed by ``data_received``, it upgrades to TLS
with ``loop.start_tls`` after PostgreSQL's SSLRequest, it cancels a running
query through a second connection, and it delivers LISTEN/NOTIFY messages
that arrive between queries.  The server comes from ``_servers``.
"""

import asyncio
import ssl

import pytest

from _certs import client_context
from _servers import import_driver, postgres_server  # noqa: F401 (fixture)
from conftest import run

TIMEOUT = 30.0


@pytest.fixture
def asyncpg():
    return import_driver("asyncpg")


def test_queries_over_tcp_and_unix_socket(loop, asyncpg, postgres_server):
    pg = postgres_server

    async def main():
        tcp = await asyncpg.connect(pg.dsn(), ssl=False)
        unix = await asyncpg.connect(host=pg.socket_dir, port=pg.port,
                                     user=pg.user, database=pg.database)
        try:
            for conn in (tcp, unix):
                assert await conn.fetchval("SELECT 1 + $1::int", 41) == 42
                rows = await conn.fetch(
                    "SELECT g, md5(g::text) FROM generate_series(1, 2000) g")
                assert len(rows) == 2000 and rows[-1][0] == 2000
            # A 4 MiB value each way: many reads and flow-controlled writes.
            blob = bytes(range(256)) * (4 << 12)
            assert await tcp.fetchval("SELECT $1::bytea", blob) == blob
            assert await unix.fetchval(
                "SELECT length($1::bytea)", blob) == len(blob)
            await tcp.execute("CREATE TEMP TABLE t (k int PRIMARY KEY, v text)")
            await tcp.executemany("INSERT INTO t VALUES ($1, $2)",
                                  [(i, str(i) * 3) for i in range(500)])
            assert await tcp.fetchval("SELECT count(*) FROM t") == 500
            with pytest.raises(asyncpg.UniqueViolationError):
                await tcp.execute("INSERT INTO t VALUES (1, 'again')")
            async with tcp.transaction():
                await tcp.execute("DELETE FROM t WHERE k < 100")
            assert await tcp.fetchval("SELECT count(*) FROM t") == 400
        finally:
            await tcp.close()
            await unix.close()
        assert tcp.is_closed() and unix.is_closed()

    run(loop, main(), TIMEOUT)


def test_tls_connection_upgraded_with_start_tls(loop, asyncpg, postgres_server):
    pg = postgres_server

    async def main():
        ctx = client_context()
        conn = await asyncpg.connect(pg.dsn(), ssl=ctx)
        try:
            # The server side agrees that this connection is encrypted.
            assert await conn.fetchval(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            blob = b"\x00\xff" * (1 << 20)
            assert await conn.fetchval("SELECT $1::bytea", blob) == blob
        finally:
            await conn.close()
        # A context that does not trust the server's certificate fails the
        # handshake with ssl's verification error, as on stock asyncio.
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncpg.connect(pg.dsn(), ssl=client_context(trusted=False))

    run(loop, main(), TIMEOUT)


def test_pool_serves_concurrent_queries(loop, asyncpg, postgres_server):
    pg = postgres_server

    async def main():
        async with asyncpg.create_pool(pg.dsn(), ssl=False,
                                       min_size=2, max_size=8) as pool:
            async def one(i):
                async with pool.acquire() as conn:
                    await conn.execute("SELECT pg_sleep(0.002)")
                    return await conn.fetchval("SELECT $1::int * 2", i)

            got = await asyncio.gather(*(one(i) for i in range(300)))
            assert got == [i * 2 for i in range(300)]
            assert pool.get_size() <= 8

    run(loop, main(), TIMEOUT)


def test_listen_notify_delivered_in_order(loop, asyncpg, postgres_server):
    pg = postgres_server

    async def main():
        listener = await asyncpg.connect(pg.dsn(), ssl=False)
        sender = await asyncpg.connect(pg.dsn(), ssl=False)
        got = []
        done = asyncio.get_running_loop().create_future()

        def on_notify(conn, pid, channel, payload):
            got.append((channel, payload))
            if len(got) == 50 and not done.done():
                done.set_result(None)

        try:
            await listener.add_listener("ferro", on_notify)
            for i in range(50):
                await sender.execute(f"NOTIFY ferro, 'msg {i}'")
            await asyncio.wait_for(done, 10)
            assert got == [("ferro", f"msg {i}") for i in range(50)]
        finally:
            await listener.close()
            await sender.close()

    run(loop, main(), TIMEOUT)


def test_query_timeout_cancels_on_the_server(loop, asyncpg, postgres_server):
    pg = postgres_server

    async def main():
        conn = await asyncpg.connect(pg.dsn(), ssl=False)
        try:
            t0 = asyncio.get_running_loop().time()
            with pytest.raises(asyncio.TimeoutError):
                await conn.fetchval("SELECT pg_sleep(20)", timeout=0.3)
            # The cancel request (sent on a second connection) stopped the
            # query: the connection answers again at once.
            assert await conn.fetchval("SELECT 7") == 7
            assert asyncio.get_running_loop().time() - t0 < 10
        finally:
            await conn.close()

    run(loop, main(), TIMEOUT)


def test_server_terminating_the_connection(loop, asyncpg, postgres_server):
    pg = postgres_server

    async def main():
        victim = await asyncpg.connect(pg.dsn(), ssl=False)
        admin = await asyncpg.connect(pg.dsn(), ssl=False)
        try:
            pid = victim.get_server_pid()
            assert await admin.fetchval(
                "SELECT pg_terminate_backend($1)", pid)
            # The backend's exit reaches the idle client as an EOF: the loop
            # must deliver connection_lost without any query being sent.
            for _ in range(200):
                if victim.is_closed():
                    break
                await asyncio.sleep(0.025)
            assert victim.is_closed()
            with pytest.raises(asyncpg.InterfaceError):
                await victim.fetchval("SELECT 1")
        finally:
            victim.terminate()
            await admin.close()

    run(loop, main(), TIMEOUT)


def test_copy_in_and_out(loop, asyncpg, postgres_server):
    pg = postgres_server

    async def main():
        conn = await asyncpg.connect(pg.dsn(), ssl=False)
        try:
            await conn.execute("CREATE TEMP TABLE c (i int, s text)")
            records = [(i, f"row {i}") for i in range(20000)]
            await conn.copy_records_to_table("c", records=records)
            chunks = []

            async def sink(data):
                chunks.append(data)

            await conn.copy_from_query("SELECT * FROM c ORDER BY i",
                                       output=sink)
            lines = b"".join(chunks).decode().splitlines()
            assert lines == [f"{i}\trow {i}" for i in range(20000)]
        finally:
            await conn.close()

    run(loop, main(), TIMEOUT)
