"""Runs rows x loops x rounds in one process, interleaving the loops.

Within a row, every round runs each loop once, and the loop order rotates by
one each round, so slow drift (thermal, frequency scaling, a noisy neighbour)
spreads evenly over the loops instead of penalising whichever runs last."""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import gc
import signal
import statistics
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .loops import LoopSpec
from .registry import CheckFailed, Row, Sample, Skip


class BenchTimeout(Exception):
    pass


TARGET_SECONDS = 0.3  # per measurement, per loop, with --adaptive
CALIBRATE_MIN_SECONDS = 0.05  # a calibration run shorter than this is too noisy to scale from
MAX_SCALE = 20  # adaptive size never exceeds 20x the row's fixed n
GRACE_SECONDS = 2.0  # between asking a hung loop to stop and raising into it


@dataclass
class Cell:
    """All measurements of one (row, loop)."""

    samples: list[Sample] = field(default_factory=list)
    error: str | None = None
    skipped: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.skipped is None and bool(self.samples)

    @property
    def rates(self) -> list[float]:
        return [s.rate for s in self.samples]

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    @property
    def rstdev(self) -> float:
        """Relative standard deviation over rounds (0 with a single round)."""
        r = self.rates
        return statistics.stdev(r) / statistics.mean(r) if len(r) > 1 else 0.0


    def to_json(self) -> dict[str, Any]:
        return {
            "samples": [{"seconds": s.seconds, "ops": s.ops, "rate": s.rate} for s in self.samples],
            "median": self.median if self.samples else None,
            "rstdev": self.rstdev if self.samples else None,
            "error": self.error,
            "skipped": self.skipped,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Cell:
        return cls([Sample(s["seconds"], s["ops"]) for s in d["samples"]], d["error"], d["skipped"])


@dataclass
class RowResult:
    row: Row
    sizes: dict[str, int]  # work per measurement, per loop
    cells: dict[str, Cell]


@contextlib.contextmanager
def _deadline(seconds: float, loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """Abort a hung measurement instead of hanging the whole run, in stages:

    1. SIGALRM after `seconds`: stop the loop the way another thread would
       (call_soon_threadsafe wakes a loop blocked in its poll).  Raising from
       the handler is not enough: uvloop runs Python signal handlers inside a
       callback and just logs what they raise.
    2. GRACE_SECONDS later: raise from the handler, for Python code spinning
       without ever yielding to the loop.
    3. faulthandler dumps all stacks and exits, so CI doesn't sit on a hung
       process (e.g. Rust code blocked without checking signals)."""
    usable = (
        seconds > 0
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return
    fired = 0
    msg = f"no result after {seconds:g}s (loop hung?)"

    def on_alarm(signum: int, frame: object) -> None:
        nonlocal fired
        fired += 1
        if fired == 1:
            signal.setitimer(signal.ITIMER_REAL, GRACE_SECONDS)
            with contextlib.suppress(Exception):
                loop.call_soon_threadsafe(loop.stop)
            return
        raise BenchTimeout(msg)

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    faulthandler.dump_traceback_later(seconds + GRACE_SECONDS + 10, exit=True)
    try:
        yield
    except BenchTimeout:
        raise
    except BaseException as e:
        if fired:  # typically "Event loop stopped before Future completed."
            raise BenchTimeout(msg) from e
        raise
    else:
        if fired:  # finished only after being told to stop: still a timeout
            raise BenchTimeout(msg)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, old)


def measure(row: Row, spec: LoopSpec, n: int, timeout: float) -> Sample:
    assert spec.factory is not None
    gc.collect()  # don't bill one loop for the previous one's garbage
    # Freeze what survives (harness, modules, earlier results) so the GC
    # passes that run during the measurement only traverse objects the
    # measurement made: otherwise a row's cost would depend on how much the
    # process accumulated before it.  GC stays enabled: collecting the
    # loop's own garbage is part of its real cost.
    gc.freeze()
    loop = spec.factory()  # loop creation is outside the row's timed section
    try:
        with _deadline(timeout, loop):
            sample = row.run(loop, n)
    finally:
        gc.unfreeze()
        with contextlib.suppress(Exception):
            # A loop that failed mid-run may refuse to close; the original
            # error is the one worth reporting.
            loop.close()
    if not (sample.seconds > 0 and sample.ops > 0):
        raise CheckFailed(f"bogus sample {sample}")
    return sample


def _describe(e: BaseException, verbose: bool) -> str:
    if verbose:
        return "".join(traceback.format_exception(e)).rstrip()
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}".rstrip(": ")


@dataclass(frozen=True)
class Options:
    rounds: int = 5
    quick: bool = False
    timeout: float = 60.0
    adaptive: bool = False
    target: float = TARGET_SECONDS
    verbose: bool = False


def run_row(
    row: Row,
    loops: list[LoopSpec],
    opts: Options,
    *,
    on_start: Callable[[str], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> RowResult:
    """Run one row on every available loop; errors end up in the cells.

    `on_start(loop_name)` is called before each measurement, so a parent
    process can tell which loop was running if this process dies."""
    rounds, quick, timeout = opts.rounds, opts.quick, opts.timeout
    adaptive, target, verbose = opts.adaptive, opts.target, opts.verbose
    n = row.quick_n if quick else row.n
    live = [s for s in loops if s.available]
    cells = {s.name: Cell() for s in loops}

    def attempt(spec: LoopSpec, size: int, keep: bool) -> Sample | None:
        cell = cells[spec.name]
        if on_start:
            on_start(spec.name)
        try:
            sample = measure(row, spec, size, timeout)
        except Skip as e:
            cell.skipped = str(e) or "skipped"
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # incl. BenchTimeout, CheckFailed
            cell.error = _describe(e, verbose)
        else:
            if keep:
                cell.samples.append(sample)
            return sample
        return None

    def calibrate(spec: LoopSpec) -> int:
        # Like timeit's autorange: grow the size until a run is long enough
        # to time reliably, then scale to `target`.  Doubles as warm-up.
        # Sizing per loop gives each loop equally long (equally noisy)
        # measurements although the loops' speeds differ up to 30x, but the
        # loops then do different work: not apples to apples for rows whose
        # cost per op grows with n (e.g. a timer heap that keeps cancelled
        # entries), hence opt-in.
        size = row.quick_n
        cap = row.n * MAX_SCALE
        while True:
            s = attempt(spec, size, keep=False)
            if s is None:
                return size  # error/skip recorded; rounds won't run
            if s.seconds >= CALIBRATE_MIN_SECONDS or size >= cap:
                return int(max(row.quick_n, min(cap, s.rate * target)))
            size = min(cap, size * 4)

    sizes: dict[str, int] = {}
    for spec in live:
        if quick or not adaptive:
            # Warm-up at the small size: fills caches/free lists and finds
            # broken cells early, so a failing loop costs one short attempt.
            attempt(spec, row.quick_n, keep=False)
            sizes[spec.name] = n
        else:
            sizes[spec.name] = calibrate(spec)
    for r in range(rounds):
        k = r % len(live) if live else 0
        for spec in live[k:] + live[:k]:
            if cells[spec.name].error is None and cells[spec.name].skipped is None:
                attempt(spec, sizes[spec.name], keep=True)
        if progress:
            progress(f"{row.name}: round {r + 1}/{rounds}")
    for s in loops:
        if not s.available:
            cells[s.name].skipped = "loop unavailable"
    return RowResult(row, sizes, cells)


def progress_to_stderr(msg: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r\x1b[K  {msg}")
        sys.stderr.flush()
