"""``python -m ferroloop.bench``: compare event loops row by row."""

from __future__ import annotations

import argparse
import sys
import time

from . import report
from .isolate import child_main, run_row_isolated
from .loops import KNOWN, load_loops
from .rows import load_all
from .runner import TARGET_SECONDS, Options, RowResult, progress_to_stderr, run_row


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ferroloop.bench", description=__doc__)
    p.add_argument("--rounds", type=int, default=5, help="rounds per row (default 5)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: smoke run, not a measurement")
    p.add_argument("--rows", type=_csv, default=None, help="comma-separated subset of rows (see --list)")
    p.add_argument("--loops", type=_csv, default=list(KNOWN),
                   help=f"comma-separated loops (default {','.join(KNOWN)})")
    p.add_argument("--json", metavar="PATH", help="dump raw per-round results as JSON")
    p.add_argument("--png", metavar="PATH", default="bench-results.png",
                   help="bar chart path (default bench-results.png)")
    p.add_argument("--no-png", action="store_true", help="don't write the chart")
    p.add_argument("--adaptive", action="store_true",
                   help="size each loop's runs to --target seconds instead of the same n for all "
                        "(steadier numbers for fast loops, but unequal work)")
    p.add_argument("--target", type=float, default=TARGET_SECONDS,
                   help=f"seconds per measurement with --adaptive (default {TARGET_SECONDS})")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds before one measurement counts as hung (default 60, 10 with --quick)")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 if any cell errored (skips and unavailable loops don't count)")
    p.add_argument("--in-process", action="store_true",
                   help="run rows in this process (for profilers/debuggers); by default each row "
                        "runs in a child process so a crashing loop costs one cell, not the run")
    p.add_argument("--verbose", action="store_true", help="full tracebacks for errors")
    p.add_argument("--list", action="store_true", help="list rows and exit")
    p.add_argument("--child-fd", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.rounds < 1:
        p.error("--rounds must be >= 1")
    unknown = [x for x in a.loops if x not in KNOWN]
    if unknown:
        p.error(f"unknown loop(s) {unknown}; known: {','.join(KNOWN)}")
    if a.timeout is None:
        a.timeout = 10.0 if a.quick else 60.0
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    rows = load_all()
    if a.list:
        for r in rows:
            print(f"{r.name:<24} n={r.n:<10} quick={r.quick_n:<8} {r.doc}")
        return 0
    if a.rows is not None:
        by_name = {r.name: r for r in rows}
        missing = [x for x in a.rows if x not in by_name]
        if missing:
            print(f"unknown row(s) {missing}; known: {','.join(by_name)}", file=sys.stderr)
            return 2
        rows = [by_name[x] for x in a.rows]

    loops = load_loops(a.loops)
    opts = Options(rounds=a.rounds, quick=a.quick, timeout=a.timeout, adaptive=a.adaptive,
                   target=a.target, verbose=a.verbose)
    if a.child_fd is not None:
        return child_main(a.child_fd, rows[0], loops, opts)

    sizing = ("QUICK sizes (smoke run: the numbers are noise)" if a.quick
              else f"sizes calibrated per loop to ~{a.target:g}s per measurement (--adaptive)"
              if a.adaptive else "same work n for every loop")
    print(report.header(loops, a.rounds, sizing))
    if not any(s.available for s in loops):
        print("no loop available", file=sys.stderr)
        return 2
    print()
    print(report.table_head(loops), flush=True)
    t0 = time.perf_counter()
    results: list[RowResult] = []
    for r in rows:
        if a.in_process:
            res = run_row(r, loops, opts, progress=progress_to_stderr)
        else:
            res = run_row_isolated(r, loops, opts, progress=progress_to_stderr)
        progress_to_stderr("")
        results.append(res)
        print(report.table_line(res, loops), flush=True)  # stream: rows can take a while
    print()
    print(report.footnotes(results))
    print(f"total time {time.perf_counter() - t0:.1f}s")

    if a.json:
        report.write_json(a.json, report.to_json(results, loops, vars(a)))
        print(f"raw results: {a.json}")
    if not a.no_png:
        m = report.machine_info()
        title = (f"event loop rates ÷ asyncio ({a.rounds} rounds{', QUICK' if a.quick else ''}) "
                 f"— {m['cpu']}, {m['cpu_count']} CPUs, {m['python']}")
        err = report.write_png(a.png, results, loops, title)
        print(f"chart: {a.png}" if err is None else f"chart: {err}")

    errors = any(c.error is not None for res in results for c in res.cells.values())
    return 1 if a.strict and errors else 0
