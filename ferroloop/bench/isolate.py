"""Each row runs in a child process, so a loop that kills the interpreter
(segfault, abort, an extension rebuilt under a running process) costs its
own cell instead of the whole run.  Within the row everything stays in one
process, as the interleaving needs: the child runs all loops and rounds.

Protocol: the child writes lines to an inherited pipe: ``start LOOP`` before
each measurement, ``progress TEXT``, and finally ``result JSON``.  If it dies
without a result, the last ``start`` names the culprit; the row is re-run
without that loop so the others still get numbers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from .loops import LoopSpec
from .registry import Row
from .runner import Cell, Options, RowResult


def _child_argv(row: str, loops: list[str], opts: Options, fd: int) -> list[str]:
    argv = [sys.executable, "-m", "ferroloop.bench", "--child-fd", str(fd), "--rows", row,
            "--loops", ",".join(loops), "--rounds", str(opts.rounds),
            "--timeout", str(opts.timeout), "--target", str(opts.target)]
    argv += [flag for flag, on in (("--quick", opts.quick), ("--adaptive", opts.adaptive),
                                   ("--verbose", opts.verbose)) if on]
    return argv


def _why(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit status {rc}"


def _spawn(row: str, loops: list[str], opts: Options,
           progress: Callable[[str], None] | None) -> tuple[int, str | None, dict[str, Any] | None]:
    r, w = os.pipe()
    env = dict(os.environ)
    # The child must import this same ferroloop, wherever the parent found it.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    proc = subprocess.Popen(_child_argv(row, loops, opts, w), pass_fds=(w,), env=env)
    os.close(w)
    last: str | None = None
    result: dict[str, Any] | None = None
    with os.fdopen(r, "r") as pipe:
        for line in pipe:
            kind, _, rest = line.rstrip("\n").partition(" ")
            if kind == "start":
                last = rest
            elif kind == "progress" and progress:
                progress(rest)
            elif kind == "result":
                result = json.loads(rest)
    return proc.wait(), last, result


def run_row_isolated(row: Row, loops: list[LoopSpec], opts: Options,
                     progress: Callable[[str], None] | None = None) -> RowResult:
    cells = {s.name: Cell() for s in loops}
    sizes: dict[str, int] = {}
    pending = [s.name for s in loops if s.available]
    while pending:
        rc, last, result = _spawn(row.name, pending, opts, progress)
        if result is not None:
            sizes.update(result["sizes"])
            for name in pending:
                cells[name] = Cell.from_json(result["cells"][name])
            break
        if last not in pending:  # died before measuring anything: blame nobody
            for name in pending:
                cells[name].error = f"bench child process {_why(rc)} before measuring"
            break
        assert last is not None
        cells[last].error = f"process {_why(rc)} while measuring (see stderr)"
        pending.remove(last)
    for s in loops:
        if not s.available:
            cells[s.name].skipped = "loop unavailable"
    return RowResult(row, sizes, cells)


def child_main(fd: int, row: Row, loops: list[LoopSpec], opts: Options) -> int:
    import faulthandler

    from .runner import run_row

    faulthandler.enable()  # a segfault still prints the Python stack to stderr
    out = os.fdopen(fd, "w", buffering=1)  # line-buffered: 'start' must land before a crash

    def send(kind: str, text: str) -> None:
        out.write(f"{kind} {text}\n")

    res = run_row(row, loops, opts, on_start=lambda name: send("start", name),
                  progress=lambda msg: send("progress", msg))
    payload = {"sizes": res.sizes, "cells": {k: c.to_json() for k, c in res.cells.items()}}
    send("result", json.dumps(payload))
    out.close()
    return 0
