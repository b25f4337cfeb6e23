"""Row registry: a row is one function ``fn(loop, n)`` measuring n units of work.

The function may be sync or ``async``.  An async row is driven by
``loop.run_until_complete``; a sync one gets the fresh loop and drives it
itself (useful for rows that need threads/processes around the loop).

It returns either the elapsed seconds of its measured section (work = n) or a
:class:`Sample` when the amount of work differs from n (bytes moved, requests
served by wrk, ...).  Rows time themselves with ``time.perf_counter()`` so that
setup (servers, threads, task creation of fixtures) stays outside the
measurement, and they must :func:`check` the work really happened so a broken
loop cannot post a fake-fast number.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

Loop = asyncio.AbstractEventLoop


@dataclass(frozen=True)
class Sample:
    seconds: float
    ops: float  # units of work done in `seconds` (callbacks, tasks, bytes, ...)

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else float("inf")


RowResult = float | Sample
RowFn = Callable[[Loop, int], Awaitable[RowResult] | RowResult]


class Skip(Exception):
    """Raised by a row that cannot run here (tool missing, unsupported OS).

    Shown as 'skip' in the table instead of as an error."""


class CheckFailed(AssertionError):
    """A row's correctness check failed: the number would be meaningless."""


def check(cond: bool, what: str) -> None:
    if not cond:
        raise CheckFailed(what)


@dataclass(frozen=True)
class Row:
    name: str
    fn: RowFn
    # Work per measurement, the same for every loop (pick ~0.3-0.5 s on stock
    # asyncio).  --adaptive sizes each loop's runs to ~0.3 s instead (capped
    # at 20 x n), so `fn` must accept any n >= quick and report what it did.
    n: int
    quick_n: int  # work per measurement for --quick smoke runs
    unit: str  # what n counts; "bytes" switches the display to KiB/MiB/GiB/s
    doc: str
    seq: int  # registration order, for stable table order

    @property
    def is_bytes(self) -> bool:
        return self.unit == "bytes"

    def run(self, loop: Loop, n: int) -> Sample:
        res: object = self.fn(loop, n)
        if inspect.isawaitable(res):
            res = loop.run_until_complete(cast(Awaitable[RowResult], res))
        if isinstance(res, Sample):
            return res
        if not isinstance(res, (int, float)):
            raise TypeError(f"row {self.name} returned {res!r}, want seconds or Sample")
        return Sample(float(res), float(n))


ROWS: dict[str, Row] = {}


def row(
    name: str | None = None, *, n: int, quick: int, unit: str = "ops"
) -> Callable[[RowFn], RowFn]:
    """Register a benchmark row.  ``n``/``quick``: work per measurement."""

    def deco(fn: RowFn) -> RowFn:
        key = name or fn.__name__
        if key in ROWS:
            raise ValueError(f"duplicate bench row {key!r}")
        doc = inspect.getdoc(fn) or ""
        ROWS[key] = Row(key, fn, n, quick, unit, doc.split("\n")[0], len(ROWS))
        return fn

    return deco
