"""Coroutine/task/future rows: the loop driving asyncio's task machinery."""

from __future__ import annotations

import asyncio
from time import perf_counter

from ..registry import Loop, Sample, check, row

ORDER = 20


@row(n=200_000, quick=10_000, unit="turns")
async def sleep0(loop: Loop, n: int) -> float:
    """`await asyncio.sleep(0)` in one task: one loop turn per await."""
    sleep = asyncio.sleep
    turns = 0
    t0 = perf_counter()
    for _ in range(n):
        await sleep(0)
        turns += 1
    dt = perf_counter() - t0
    check(turns == n, f"{turns} of {n} turns")
    return dt


@row(n=120_000, quick=10_000, unit="futures")
async def future_roundtrip(loop: Loop, n: int) -> float:
    """create_future(); call_soon(fut.set_result, 1); await fut."""
    create, sched = loop.create_future, loop.call_soon
    total = 0
    t0 = perf_counter()
    for _ in range(n):
        fut = create()
        sched(fut.set_result, 1)
        total += await fut
    dt = perf_counter() - t0
    check(total == n, f"futures delivered {total}, want {n}")
    return dt


async def _nop(x: int) -> int:
    return x


# The brief's batch size: gather() over this many fresh tasks at once.
GATHER_BATCH = 50_000


@row(n=50_000, quick=5_000, unit="tasks")
async def tasks_gather(loop: Loop, n: int) -> Sample:
    """create_task() x 50 000 trivial coroutines, then await gather(*tasks)."""
    batch = min(n, GATHER_BATCH)
    nb = max(1, n // batch)
    create, gather = loop.create_task, asyncio.gather
    results: list[list[int]] = []
    t0 = perf_counter()
    for _ in range(nb):
        tasks = [create(_nop(1)) for _ in range(batch)]
        results.append(await gather(*tasks))
    dt = perf_counter() - t0
    got = sum(sum(r) for r in results)
    check(got == nb * batch, f"gather returned {got} results, want {nb * batch}")
    return Sample(dt, nb * batch)
