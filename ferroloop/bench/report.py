"""Table, JSON and PNG output."""

from __future__ import annotations

import json
import os
import platform
from typing import Any

from .loops import BASELINE, SUBJECT, LoopSpec
from .runner import Cell, RowResult

ROW_W = 22
CELL_W = 16
RATIO_W = 18


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:  # the model name matters more than "x86_64" when comparing tables
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }


def fmt_rate(rate: float, is_bytes: bool) -> str:
    units = (
        ((2**30, "GiB/s"), (2**20, "MiB/s"), (2**10, "KiB/s"), (1, "B/s"))
        if is_bytes
        else ((1e9, "G/s"), (1e6, "M/s"), (1e3, "k/s"), (1, "/s"))
    )
    div, suffix = next((u for u in units if rate >= u[0]), units[-1])
    v = rate / div
    # Three significant digits without falling into exponent notation.
    num = f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"
    return num + suffix


def fmt_cell(cell: Cell, is_bytes: bool) -> str:
    if cell.error is not None:
        return "ERROR"
    if cell.skipped is not None:
        return "skip" if cell.skipped != "loop unavailable" else "-"
    if not cell.samples:
        return "-"
    s = fmt_rate(cell.median, is_bytes)
    if len(cell.samples) > 1:
        s += f" ±{cell.rstdev * 100:.0f}%"
    return s


def ratio(res: RowResult) -> tuple[float, str] | None:
    """ferroloop median ÷ the best other loop's median, and that loop's name."""
    subj = res.cells.get(SUBJECT)
    others = [(c.median, name) for name, c in res.cells.items() if name != SUBJECT and c.ok]
    if subj is None or not subj.ok or not others:
        return None
    best, best_name = max(others)
    return subj.median / best, best_name


def header(loops: list[LoopSpec], rounds: int, sizing: str) -> str:
    m = machine_info()
    lines = [
        f"ferroloop bench: {rounds} round(s), {sizing}; loops interleaved per round, order rotated",
        f"machine: {m['cpu']}, {m['cpu_count']} CPUs ({m['cpus_usable']} usable), {m['platform']}",
        f"python:  {m['python']}",
        "loops:",
    ]
    for s in loops:
        if s.available:
            extra = f"  [{s.note}]" if s.note else ""
            lines.append(f"  {s.name:<10} {s.version:<16} {s.loop_class}{extra}")
        else:
            lines.append(f"  {s.name:<10} SKIPPED, {s.note}")
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    if load > 0.5 * (m["cpus_usable"] or 1):
        lines.append(f"WARNING: load average {load:.2f} on {m['cpus_usable']} CPUs before the run:"
                     " other processes compete, expect noisy numbers")
    lines.append(
        "cells: median rate over rounds ± relative stdev; "
        f"ratio: {SUBJECT} ÷ best other loop (>1 = {SUBJECT} faster)"
    )
    return "\n".join(lines)


def table_head(loops: list[LoopSpec]) -> str:
    cols = "".join(f"{s.name:>{CELL_W}}" for s in loops)
    return f"{'row':<{ROW_W}}{cols}  {SUBJECT[:5] + '/best-other':<{RATIO_W}}"


def table_line(res: RowResult, loops: list[LoopSpec]) -> str:
    label = f"{res.row.name}"
    cols = "".join(f"{fmt_cell(res.cells[s.name], res.row.is_bytes):>{CELL_W}}" for s in loops)
    r = ratio(res)
    rtxt = f"×{r[0]:.2f} vs {r[1]}" if r else "n/a"
    return f"{label:<{ROW_W}}{cols}  {rtxt:<{RATIO_W}}"


def footnotes(results: list[RowResult]) -> str:
    lines: list[str] = []
    for res in results:
        for name, c in res.cells.items():
            if c.error is not None:
                lines.append(f"  ERROR {res.row.name} / {name}: {c.error}")
            elif c.skipped not in (None, "loop unavailable"):
                lines.append(f"  skip  {res.row.name} / {name}: {c.skipped}")
    units = ", ".join(f"{r.row.name}={r.row.unit}/s" for r in results)
    lines.append(f"units: {units}")
    return "\n".join(lines)


def to_json(results: list[RowResult], loops: list[LoopSpec], args: dict[str, Any]) -> dict[str, Any]:
    return {
        "machine": machine_info(),
        "args": args,
        "loops": [
            {"name": s.name, "available": s.available, "version": s.version,
             "class": s.loop_class, "note": s.note}
            for s in loops
        ],
        "rows": [
            {
                "name": r.row.name,
                "unit": r.row.unit,
                "sizes": r.sizes,
                "doc": r.row.doc,
                "ratio": (lambda x: {"value": x[0], "vs": x[1]} if x else None)(ratio(r)),
                "loops": {name: c.to_json() for name, c in r.cells.items()},
            }
            for r in results
        ],
    }


def write_json(path: str, data: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def write_png(path: str, results: list[RowResult], loops: list[LoopSpec], title: str) -> str | None:
    """Grouped bars: each loop's median rate ÷ asyncio's, per row, with
    min..max whiskers.  Returns an error message instead of raising."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # headless: CI and ssh sessions have no display
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed, no chart written: pip install matplotlib"

    names = [s.name for s in loops if s.available]
    if not names or not results:
        return "nothing to plot"
    base_name = BASELINE if BASELINE in names else names[0]
    rows: list[str] = []
    # loop name -> (normalised median, lower whisker, upper whisker) per row
    norm: dict[str, tuple[list[float], list[float], list[float]]] = {n: ([], [], []) for n in names}
    for r in results:
        base = r.cells[base_name]
        if not base.ok:
            continue
        rows.append(r.row.name)
        b = base.median
        for n in names:
            c = r.cells[n]
            v, lo, hi = norm[n]
            if c.ok:
                v.append(c.median / b)
                lo.append((c.median - min(c.rates)) / b)
                hi.append((max(c.rates) - c.median) / b)
            else:
                v.append(0.0)
                lo.append(0.0)
                hi.append(0.0)
    if not rows:
        return f"no row has a {base_name} result to normalise to"

    from matplotlib.ticker import FuncFormatter

    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(7.0, 1.1 * len(rows) + 2), 5))
    for i, n in enumerate(names):
        v, lo, hi = norm[n]
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(rows))]
        bars = ax.bar(xs, v, width, yerr=[lo, hi], capsize=2, label=n,
                      edgecolor="black" if n == SUBJECT else None, linewidth=1.2)
        ax.bar_label(bars, labels=[f"{x:.2f}" if x else "" for x in v],
                     fontsize=7, rotation=90, padding=3)
    # Log scale: ratios spread from <1 to 15x+, and 2x faster should look
    # as far from 1 as 2x slower.
    ax.set_yscale("log", base=2)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    shown = [x for n in names for x in norm[n][0] if x > 0]
    ax.set_ylim(min(0.5, min(shown) / 1.5), max(2.0, max(shown)) * 2.5)  # room for labels
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(rows)), rows, rotation=20, ha="right")
    ax.set_ylabel(f"rate ÷ {base_name} (higher is better, log scale)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None
