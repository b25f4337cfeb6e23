"""redis-py's asyncio client against a real Redis server, on each loop.

Commands over TCP and a Unix socket, pipelines, pub/sub, blocking pops that
wait while other connections of the same pool keep working, values large
enough for flow control, and a connection the server kills under the
client.  The server comes from ``_servers``.
"""

import asyncio

import pytest

from _servers import import_driver, redis_server  # noqa: F401 (fixture)
from conftest import run

TIMEOUT = 30.0


@pytest.fixture
def aioredis():
    return import_driver("redis").asyncio


def test_commands_over_tcp_and_unix_socket(loop, aioredis, redis_server):
    srv = redis_server

    async def main():
        tcp = aioredis.Redis(host="127.0.0.1", port=srv.port)
        unix = aioredis.Redis(unix_socket_path=srv.unix_path)
        try:
            await tcp.flushall()
            assert await tcp.set("k", "v")
            assert await unix.get("k") == b"v"
            assert await unix.incrby("n", 5) == 5
            async with tcp.pipeline(transaction=True) as pipe:
                for i in range(1000):
                    pipe.rpush("list", i)
                pipe.llen("list")
                res = await pipe.execute()
            assert res[-1] == 1000
            assert await unix.lrange("list", 0, 2) == [b"0", b"1", b"2"]
            # 8 MiB each way: many reads, and writes past the high-water mark.
            big = bytes(range(256)) * (1 << 15)
            assert await tcp.set("big", big)
            assert await unix.get("big") == big
        finally:
            await tcp.aclose()
            await unix.aclose()

    run(loop, main(), TIMEOUT)


def test_pubsub_delivers_every_message_in_order(loop, aioredis, redis_server):
    srv = redis_server

    async def main():
        sub_client = aioredis.Redis(host="127.0.0.1", port=srv.port)
        pub_client = aioredis.Redis(unix_socket_path=srv.unix_path)
        pubsub = sub_client.pubsub()
        try:
            await pubsub.subscribe("ferro")
            msg = await pubsub.get_message(timeout=5)
            assert msg["type"] == "subscribe"

            async def publish():
                for i in range(200):
                    await pub_client.publish("ferro", f"m{i}")

            pub = asyncio.ensure_future(publish())
            got = []
            while len(got) < 200:
                msg = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=5)
                assert msg is not None, f"only {len(got)} messages arrived"
                got.append(msg["data"])
            await pub
            assert got == [f"m{i}".encode() for i in range(200)]
        finally:
            await pubsub.aclose()
            await sub_client.aclose()
            await pub_client.aclose()

    run(loop, main(), TIMEOUT)


def test_blocking_pop_while_the_pool_keeps_working(loop, aioredis, redis_server):
    srv = redis_server

    async def main():
        pool = aioredis.ConnectionPool(host="127.0.0.1", port=srv.port,
                                       max_connections=20)
        r = aioredis.Redis(connection_pool=pool)
        try:
            await r.delete("queue", "counter")
            waiters = [asyncio.ensure_future(r.blpop(["queue"], timeout=10))
                       for _ in range(5)]

            async def bump():
                for _ in range(20):
                    await r.incr("counter")

            # Other connections of the pool are served while 5 are blocked.
            await asyncio.gather(*(bump() for _ in range(10)))
            assert int(await r.get("counter")) == 200
            assert not any(w.done() for w in waiters)
            await r.rpush("queue", *range(5))
            got = sorted(int(v) for _, v in await asyncio.gather(*waiters))
            assert got == list(range(5))
            # A blocking pop that times out on the server returns None.
            assert await r.blpop(["queue"], timeout=0.2) is None
        finally:
            await r.aclose()
            await pool.disconnect()

    run(loop, main(), TIMEOUT)


def test_connection_killed_by_the_server(loop, aioredis, redis_server):
    redis = import_driver("redis")
    srv = redis_server

    async def main():
        victim = aioredis.Redis(host="127.0.0.1", port=srv.port,
                                single_connection_client=True)
        admin = aioredis.Redis(unix_socket_path=srv.unix_path)
        try:
            assert await victim.ping()
            old_id = await victim.client_id()
            assert await admin.client_kill_filter(_id=old_id) == 1
            # The loss surfaces either as redis' ConnectionError on the next
            # command (the peer's EOF arrived while it was sent) or not at
            # all (redis-py saw the EOF first and reconnected): never a hang,
            # and at most one failure before a new connection answers.
            failures = 0
            while True:
                try:
                    assert await victim.ping()
                    break
                except redis.ConnectionError:
                    failures += 1
                    assert failures == 1
            assert await victim.client_id() != old_id
        finally:
            await victim.aclose()
            await admin.aclose()

    run(loop, main(), TIMEOUT)
