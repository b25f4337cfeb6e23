"""Callback dispatch rows: the loop's bare scheduling cost, no I/O."""

from __future__ import annotations

import asyncio
import threading
from time import perf_counter

from ..registry import Loop, Sample, check, row

ORDER = 10

# Schedule this many callbacks, then yield once so the loop runs them.  Keeps
# the ready queue small (like real apps) while amortising the yield's cost.
BATCH = 1000


class _Counter:
    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def inc(self) -> None:
        self.n += 1

    def inc2(self, a: object, b: object) -> None:
        self.n += 1


def _batches(n: int) -> int:
    return max(1, n // BATCH)


@row(n=600_000, quick=20_000, unit="callbacks")
async def call_soon(loop: Loop, n: int) -> Sample:
    """loop.call_soon(cb) with no args, scheduled in batches of 1000 and run."""
    c = _Counter()
    cb, sched, sleep = c.inc, loop.call_soon, asyncio.sleep
    nb = _batches(n)
    t0 = perf_counter()
    for _ in range(nb):
        for _ in range(BATCH):
            sched(cb)
        # FIFO: our wake-up is queued after the batch, so the batch has run
        # when we resume.  A loop breaking FIFO order fails the check below.
        await sleep(0)
    dt = perf_counter() - t0
    check(c.n == nb * BATCH, f"ran {c.n} of {nb * BATCH} callbacks")
    return Sample(dt, nb * BATCH)


@row(n=500_000, quick=20_000, unit="callbacks")
async def call_soon_args(loop: Loop, n: int) -> Sample:
    """loop.call_soon(cb, a, b): two positional args stored and passed."""
    c = _Counter()
    cb, sched, sleep = c.inc2, loop.call_soon, asyncio.sleep
    a, b = object(), 2
    nb = _batches(n)
    t0 = perf_counter()
    for _ in range(nb):
        for _ in range(BATCH):
            sched(cb, a, b)
        await sleep(0)
    dt = perf_counter() - t0
    check(c.n == nb * BATCH, f"ran {c.n} of {nb * BATCH} callbacks")
    return Sample(dt, nb * BATCH)


@row(n=150_000, quick=10_000, unit="callbacks")
async def call_soon_threadsafe(loop: Loop, n: int) -> float:
    """Another thread calls loop.call_soon_threadsafe(cb) n times; until all ran."""
    count = 0
    done: asyncio.Future[None] = loop.create_future()

    def cb() -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set_result(None)

    go = threading.Event()

    def producer() -> None:
        go.wait()
        try:
            sched = loop.call_soon_threadsafe
            for _ in range(n):
                sched(cb)
        except BaseException as e:  # surface it on the loop instead of hanging
            loop.call_soon_threadsafe(done.set_exception, e)

    th = threading.Thread(target=producer, name="bench-producer", daemon=True)
    th.start()  # thread start-up stays outside the measurement
    t0 = perf_counter()
    go.set()
    await done
    dt = perf_counter() - t0
    th.join()
    check(count == n, f"ran {count} of {n} callbacks")
    return dt


@row(n=300_000, quick=10_000, unit="timers")
async def timers(loop: Loop, n: int) -> Sample:
    """call_later(3600, cb) then .cancel(); the loop turns every 1000 pairs."""
    c = _Counter()
    cb, later, sleep = c.inc, loop.call_later, asyncio.sleep
    nb = _batches(n)
    t0 = perf_counter()
    for _ in range(nb):
        for _ in range(BATCH):
            later(3600.0, cb).cancel()
        # One turn per batch lets the loop purge cancelled timers, as a
        # server's loop would between timeouts set and cancelled per request;
        # otherwise the timer heap would just grow to n entries.
        await sleep(0)
    dt = perf_counter() - t0
    check(c.n == 0, f"{c.n} cancelled timers ran")
    # Guard against a call_later that silently schedules nothing.
    h = later(3600.0, cb)
    h.cancel()
    check(h.cancelled(), "TimerHandle.cancel() did not mark it cancelled")
    fired: asyncio.Future[int] = loop.create_future()
    later(0.001, fired.set_result, 7)
    check(await fired == 7, "a live timer did not fire")
    return Sample(dt, nb * BATCH)
