#!/usr/bin/env python3
"""ferroloop conformance harness: CPython's own test_asyncio, stock vs ferroloop.

    python conformance/run.py [options] [modules...]

Runs test.test_asyncio modules (from the interpreter's `test` package, never
copied here) once per loop kind -- each (module, kind) in its own worker
subprocess (conformance/worker.py) -- prints a per-module table of outcomes
per kind, then every test that passes on stock asyncio but not on the other
kind(s).  Modules and how each is run: conformance/modules.py.  Loop kinds:
conformance/kinds.py.

Exit status: 0 iff every test that passes on asyncio also passes on each other
kind, apart from tests listed in conformance/known_differences.txt (or always
0 with --no-fail).  The last line is "conformance: N passed, M failed":
N = tests passing on asyncio that pass on the compared kind too, M = tests
passing on asyncio that don't (not run, hung, failed...) and aren't known
differences; summed over compared kinds.  With asyncio alone, N = tests
passing on asyncio and M = 0.

Table columns per kind: tests = entries recorded (tests, plus unittest's
entries for errors in class/module fixtures); pass includes expected
failures; fail includes unexpected successes; err includes crashes (the
worker died, e.g. a segfault, while the test ran); hung = killed by the
per-test watchdog (--timeout), plus tests never started because the module's
wall-clock cap (--module-timeout) ran out.  Hung/crashed workers are
restarted, skipping every test already done.  Regressions that merely failed
are re-run alone once (--retries) and reported as flaky if they then pass.

Raw per-test data (outcomes, tracebacks, worker logs, faulthandler dumps) go
to conformance/results/ (git-ignored); summary.json there holds everything.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import fnmatch
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# run.py is started as a script; make `conformance.*` importable.  Importing
# kinds/modules is cheap: neither imports ferroloop nor any test module.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from conformance import kinds as kinds_mod  # noqa: E402
from conformance import modules as modules_mod  # noqa: E402

KNOWN_DIFFERENCES = HERE / "known_differences.txt"
DEFAULT_RESULTS = HERE / "results"

# Outcomes recorded per test.  "hung" = killed by the per-test watchdog;
# "crash" = worker died another way while the test ran (segfault, abort,
# os._exit); "notrun" = never started because the module's wall-clock cap ran
# out.  "missing" (only in comparisons) = ran on asyncio, absent on the kind.
PASSING = {"pass", "xfail"}
MAX_DUMP = 16000  # tail of a faulthandler dump kept with a hung/crashed test
COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pass", ("pass", "xfail")),
    ("fail", ("fail", "xpass")),
    ("err", ("error", "crash")),
    ("skip", ("skip",)),
    ("hung", ("hung", "notrun")),
)


@dataclass
class Record:
    outcome: str
    duration: float = 0.0
    traceback: str | None = None


@dataclass
class JobResult:
    module: str
    kind: str
    records: dict[str, Record] = field(default_factory=dict)
    fatal: str | None = None  # worker could not even start testing
    skipped_module: str | None = None  # module raised SkipTest at import
    notes: list[str] = field(default_factory=list)
    attempts: int = 0
    elapsed: float = 0.0


@dataclass
class Options:
    timeout: float
    module_timeout: float
    results: Path
    patterns: list[str]
    verbose: bool


_print_lock = threading.Lock()


def log(msg: str) -> None:
    """Progress chatter goes to stderr; the report goes to stdout."""
    with _print_lock:
        print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# running one (module, kind) job, restarting the worker after hangs/crashes


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    # The worker runs in a scratch cwd; make `conformance` (and an in-tree
    # ferroloop build in /work/main/ferroloop) importable from there.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONASYNCIODEBUG", None)  # same conditions for every kind
    return env


def _read_events(path: Path) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    if not path.exists():
        return events
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a torn last line from a killed worker
    return events


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the worker's process group (its own session: it and whatever
    children the tests spawned), by id."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_job(module: str, kind: str, opts: Options, only: list[str] | None = None,
            tag: str = "") -> JobResult:
    """Run `module` on `kind`, restarting the worker until every planned test
    has an outcome.  Each restart skips all tests that already have one."""
    job = JobResult(module, kind)
    job_dir = opts.results / kind / (module + tag)
    shutil.rmtree(job_dir, ignore_errors=True)
    job_dir.mkdir(parents=True)
    log_path = job_dir / "worker.log"
    t_start = time.monotonic()
    deadline = t_start + opts.module_timeout
    plan: list[str] = []

    with tempfile.TemporaryDirectory(prefix=f"conformance-{kind}-{module}-") as scratch:
        while True:
            job.attempts += 1
            n = job.attempts
            progress = job_dir / f"progress-{n}.jsonl"
            fh_path = job_dir / f"faulthandler-{n}.txt"
            skip_path = job_dir / f"skip-{n}.json"
            skip_path.write_text(json.dumps(sorted(job.records)))
            cmd = [
                sys.executable, "-m", "conformance.worker",
                "--module", module, "--kind", kind,
                "--timeout", str(opts.timeout),
                "--progress", str(progress), "--faulthandler", str(fh_path),
                "--skip-file", str(skip_path),
            ]
            if only is not None:
                only_path = job_dir / "only.json"
                only_path.write_text(json.dumps(only))
                cmd += ["--only-file", str(only_path)]
            for pat in opts.patterns:
                cmd += ["-k", pat]
            with log_path.open("ab") as wlog:
                wlog.write(f"\n===== attempt {n}: {' '.join(cmd)}\n".encode())
                wlog.flush()
                proc = subprocess.Popen(
                    cmd, cwd=scratch, env=_worker_env(), stdin=subprocess.DEVNULL,
                    stdout=wlog, stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group, see _kill_group
                )
                capped = False
                try:
                    rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    capped = True
                    _kill_group(proc)
                    rc = proc.wait()
                # Reap test-spawned children the worker left behind.
                _kill_group(proc)

            n_before = len(job.records)
            events = _read_events(progress)
            running: str | None = None
            finished = False
            for ev in events:
                kind_ev = ev.get("event")
                if kind_ev == "plan":
                    plan = plan or ev["ids"]  # the first attempt's plan is the full one
                elif kind_ev == "start":
                    running = ev["id"]
                elif kind_ev == "result":
                    job.records[ev["id"]] = Record(ev["outcome"], ev.get("duration", 0.0), ev.get("traceback"))
                    if ev["id"] == running:
                        running = None
                elif kind_ev == "fatal":
                    job.fatal = ev["message"]
                elif kind_ev == "module_skipped":
                    job.skipped_module = ev["reason"]
                elif kind_ev == "done":
                    finished = True

            if job.fatal or finished:
                break

            full_dump = fh_path.read_text(errors="replace") if fh_path.exists() else ""
            # Our watchdog writes "Timeout (h:mm:ss)!" before it _exit(1)s.
            hung = "Timeout (" in full_dump
            dump = full_dump[-MAX_DUMP:]
            remaining = [t for t in plan if t not in job.records]
            if capped:
                why = f"module wall-clock cap ({opts.module_timeout:.0f}s) reached"
                if running is not None:
                    job.records[running] = Record("hung", traceback=f"{why}\n{dump}")
                not_run = [t for t in remaining if t != running]
                for tid in not_run:
                    job.records[tid] = Record("notrun", traceback=why)
                job.notes.append(f"{why}; {len(not_run)} test(s) not run (counted as hung)")
                log(f"[{kind}] {module}: {why}")
                break

            # The worker died: killed by our watchdog (hung), or anything else (crash).
            outcome = "hung" if hung else "crash"
            detail = ("hung: killed by the per-test watchdog" if hung
                      else f"crash: worker died with exit status {rc}") + f"\n{dump}"
            if running is not None:
                blamed = [running]
            elif not events:
                job.fatal = f"worker died before running any test (exit status {rc})\n{dump}"
                break
            else:
                # Died between tests: in a class/module fixture.
                blamed, detail = _blame_fixture(dump, remaining, job, outcome, detail)
            if not blamed:
                if not remaining or len(job.records) == n_before:
                    break  # e.g. tearDownModule after the last test (noted)
                log(f"[{kind}] {module}: {job.notes[-1]} -- restarting worker")
                continue
            # Every restart records at least one more entry, so this loop ends.
            for tid in blamed:
                job.records[tid] = Record(outcome, opts.timeout if hung else 0.0, detail)
            log(f"[{kind}] {module}: {outcome}: {blamed[0]}"
                f"{f' (+{len(blamed) - 1} more of its class)' if len(blamed) > 1 else ''} -- restarting worker")

    job.elapsed = time.monotonic() - t_start
    return job


# unittest.suite.TestSuite methods that run fixtures, innermost first wins.
_FIXTURE_FRAMES = (
    ("in _handleClassSetUp", "setUpClass"),
    ("in _tearDownPreviousClass", "tearDownClass"),
    ("in _handleModuleTearDown", "tearDownModule"),
    ("in _handleModuleFixture", "setUpModule"),
)


def _class_of(test_id: str) -> str:
    return test_id.rsplit(".", 1)[0]


def _blame_fixture(dump: str, remaining: list[str], job: JobResult, outcome: str,
                   detail: str) -> tuple[list[str], str]:
    """The worker died outside any test.  Work out from the faulthandler dump
    which fixture it was in; return the tests to mark (none if it was a
    teardown, which is recorded as an entry of its own) and their detail."""
    what = None
    for line in dump.splitlines():  # most recent call first
        what = next((w for marker, w in _FIXTURE_FRAMES if marker in line), None)
        if what:
            break
    detail = f"(in {what or 'a class/module fixture'}, outside the test body)\n{detail}"
    if what == "setUpClass" and remaining:
        cls = _class_of(remaining[0])
        return [t for t in remaining if _class_of(t) == cls], detail
    if what == "setUpModule":
        return list(remaining), detail
    if what in ("tearDownClass", "tearDownModule"):
        done = [t for t in job.records if job.records[t].outcome not in ("hung", "crash")]
        where = _class_of(done[-1]) if done and what == "tearDownClass" else job.module
        job.records[f"{what} ({where})"] = Record(outcome, 0.0, detail)
        job.notes.append(f"worker {outcome} in {what} ({where})")
        return [], detail
    # Unknown: blame the next planned test, so that the restart makes progress.
    return remaining[:1], detail


# --------------------------------------------------------------------------
# known differences


def load_known_differences(path: Path) -> dict[str, str]:
    """'module.Class.test  # reason' per line; fnmatch wildcards allowed."""
    known: dict[str, str] = {}
    if not path.exists():
        return known
    for raw in path.read_text(encoding="utf-8").splitlines():
        line, _, reason = raw.partition("#")
        line = line.strip()
        if line:
            known[line] = reason.strip()
    return known


def known_reason(test_id: str, known: dict[str, str]) -> str | None:
    for pat, reason in known.items():
        if pat == test_id or fnmatch.fnmatchcase(test_id, pat):
            return reason or "(no reason given)"
    return None


# --------------------------------------------------------------------------
# reporting


def counts(job: JobResult | None) -> list[int]:
    """[tests, pass, fail, err, skip, hung] for one job."""
    if job is None:
        return [0] * (1 + len(COLUMNS))
    row = [len(job.records)]
    for _, outcomes in COLUMNS:
        row.append(sum(1 for r in job.records.values() if r.outcome in outcomes))
    return row


def render_table(modules: list[str], kinds: list[str], jobs: dict[tuple[str, str], JobResult]) -> str:
    headers = ["tests"] + [c for c, _ in COLUMNS]
    mod_w = max([len("module"), len("TOTAL")] + [len(m) for m in modules])
    col_w = 5

    def cells(vals: Iterable[object]) -> str:
        return " ".join(f"{v:>{col_w}}" for v in vals)

    def status(k: str, job: JobResult | None) -> str | None:
        if job is not None and job.fatal:
            return f"{k}: FATAL"
        if job is not None and job.skipped_module is not None:
            return f"{k}: module skipped"
        return None

    head = f"{'module':<{mod_w}}"
    for k in kinds:
        head += f" | {k + ':':<{len(k) + 1}} " + cells(headers)
    lines = [head, "-" * len(head)]
    totals = {k: [0] * (1 + len(COLUMNS)) for k in kinds}
    for m in modules:
        line = f"{m:<{mod_w}}"
        for k in kinds:
            job = jobs.get((m, k))
            row = counts(job)
            totals[k] = [a + b for a, b in zip(totals[k], row, strict=True)]
            line += f" | {'':<{len(k) + 1}} " + cells(row)
        marks = [st for k in kinds if (st := status(k, jobs.get((m, k)))) is not None]
        lines.append(line + "".join(f"  [{st}]" for st in marks))
    lines.append("-" * len(head))
    line = f"{'TOTAL':<{mod_w}}"
    for k in kinds:
        line += f" | {'':<{len(k) + 1}} " + cells(totals[k])
    lines.append(line)
    return "\n".join(lines)


@dataclass
class Comparison:
    kind: str
    passed: list[str] = field(default_factory=list)  # pass on both
    regressions: list[tuple[str, str]] = field(default_factory=list)  # (id, outcome on kind)
    known: list[tuple[str, str, str]] = field(default_factory=list)  # (id, outcome, reason)
    known_now_passing: list[str] = field(default_factory=list)
    only_kind_passes: int = 0  # fail on asyncio, pass on kind (informational)


def compare(modules: list[str], base: str, kind: str, jobs: dict[tuple[str, str], JobResult],
            known: dict[str, str]) -> Comparison:
    cmp = Comparison(kind)
    for m in modules:
        bjob, kjob = jobs.get((m, base)), jobs.get((m, kind))
        if bjob is None or kjob is None:
            continue
        for tid, brec in bjob.records.items():
            krec = kjob.records.get(tid)
            k_out = krec.outcome if krec else "missing"
            reason = known_reason(tid, known)
            if brec.outcome not in PASSING:
                if k_out in PASSING:
                    cmp.only_kind_passes += 1
                continue
            if k_out in PASSING:
                cmp.passed.append(tid)
                if reason is not None:
                    cmp.known_now_passing.append(tid)
            elif reason is not None:
                cmp.known.append((tid, k_out, reason))
            else:
                cmp.regressions.append((tid, k_out))
    return cmp


def _module_of(test_id: str) -> str:
    return test_id.split(".", 1)[0]


def write_summary(path: Path, modules: list[str], kinds: list[str], jobs: dict[tuple[str, str], JobResult],
                  comparisons: list[Comparison], argv: list[str]) -> None:
    data: dict[str, Any] = {
        "argv": argv,
        "python": sys.version,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "jobs": {},
        "comparisons": [],
    }
    for (m, k), job in jobs.items():
        data["jobs"].setdefault(k, {})[m] = {
            "counts": dict(zip(["tests"] + [c for c, _ in COLUMNS], counts(job), strict=True)),
            "fatal": job.fatal,
            "module_skipped": job.skipped_module,
            "notes": job.notes,
            "attempts": job.attempts,
            "elapsed": round(job.elapsed, 2),
            "tests": {tid: {"outcome": r.outcome, "duration": r.duration, "traceback": r.traceback}
                      for tid, r in job.records.items()},
        }
    for c in comparisons:
        data["comparisons"].append({
            "kind": c.kind,
            "passed": len(c.passed),
            "regressions": [{"id": t, "outcome": o} for t, o in c.regressions],
            "known_differences": [{"id": t, "outcome": o, "reason": r} for t, o, r in c.known],
            "known_differences_now_passing": c.known_now_passing,
        })
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


# --------------------------------------------------------------------------
# main


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python conformance/run.py",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("modules", nargs="*",
                   help="modules to run (test_locks or locks); default: all non-staged modules")
    p.add_argument("--all", action="store_true", help="include staged modules (see --list)")
    p.add_argument("--loops", default=f"{kinds_mod.BASELINE},ferroloop",
                   help="comma-separated loop kinds (default: %(default)s; see --list)")
    p.add_argument("--jobs", "-j", type=int, default=2, help="concurrent worker processes (default: 2)")
    p.add_argument("--timeout", type=float, default=40.0,
                   help="per-test watchdog in seconds (default: %(default)s; a bit above "
                        "test.support.SHORT_TIMEOUT=30 so the tests' own timeouts fire first)")
    p.add_argument("--module-timeout", type=float, default=900.0,
                   help="wall-clock cap per (module, kind), all restarts included (default: %(default)s)")
    p.add_argument("-k", dest="patterns", action="append", default=[],
                   help="only tests whose id (module.Class.test) contains this / matches this glob; repeatable")
    p.add_argument("--retries", type=int, default=1,
                   help="re-run failing/erroring regressions (not hangs/crashes) this many times, in "
                        "a fresh worker running only them; ones that then pass are reported as flaky "
                        "(default: %(default)s)")
    p.add_argument("--known-differences", type=Path, default=KNOWN_DIFFERENCES)
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results directory")
    p.add_argument("--no-fail", action="store_true", help="always exit 0")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="print tracebacks of the tests that fail only on the compared kind")
    p.add_argument("--list", action="store_true", help="list configured modules and loop kinds, then exit")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)

    if args.list:
        print("modules (* = staged, not in the default run):")
        for spec in modules_mod.MODULES.values():
            how = f"generated from {', '.join(spec.replaces)}" if spec.replaces else "whole module"
            print(f"  {'*' if spec.staged else ' '} {spec.name:<22} {how}")
        print("loop kinds:")
        for kind in kinds_mod.KINDS.values():
            print(f"    {kind.name:<12} {kind.description}")
        return 0

    try:
        modules = ([modules_mod.lookup(m).name for m in args.modules] if args.modules
                   else modules_mod.all_modules() if args.all else modules_mod.default_modules())
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    kinds = [k.strip() for k in args.loops.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in kinds_mod.KINDS]
    if unknown:
        print(f"error: unknown loop kind(s) {unknown}; known: {', '.join(kinds_mod.KINDS)}", file=sys.stderr)
        return 2
    opts = Options(args.timeout, args.module_timeout, args.results.resolve(), args.patterns, args.verbose)
    known = load_known_differences(args.known_differences)

    # Preflight each kind in a throwaway process: a kind that can't even
    # build a loop (ferroloop not compiled yet) is reported once instead of
    # as a FATAL per module.  Its modules still count as regressions.
    broken: dict[str, str] = {}
    for k in kinds:
        r = subprocess.run(
            [sys.executable, "-c",
             "import sys; from conformance import kinds as k; k.preflight(k.KINDS[sys.argv[1]])", k],
            cwd=tempfile.gettempdir(), env=_worker_env(), capture_output=True, text=True, timeout=120,
        )
        if r.returncode != 0:
            broken[k] = (r.stderr.strip().splitlines() or ["?"])[-1]
            log(f"loop kind {k!r} is not usable: {broken[k]}")

    work = [(m, k) for m in modules for k in kinds if k not in broken]
    jobs: dict[tuple[str, str], JobResult] = {}
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(run_job, m, k, opts): (m, k) for m, k in work}
        for fut in concurrent.futures.as_completed(futures):
            m, k = futures[fut]
            job = fut.result()
            jobs[(m, k)] = job
            c = counts(job)
            extra = f" FATAL: {job.fatal.strip().splitlines()[-1]}" if job.fatal else ""
            log(f"[{k}] {m}: {c[0]} tests, {c[1]} pass, {c[2]} fail, {c[3]} err, {c[4]} skip, "
                f"{c[5]} hung ({job.elapsed:.1f}s, {job.attempts} attempt(s)){extra}")
    for k in broken:
        for m in modules:
            jobs[(m, k)] = JobResult(m, k, fatal=f"loop kind unusable: {broken[k]}")

    base = kinds_mod.BASELINE
    compared = [k for k in kinds if k != base] if base in kinds else []
    comparisons = [compare(modules, base, k, jobs, known) for k in compared]

    # Re-run regressions alone (fresh worker, both kinds) to weed out timing
    # flakes caused by e.g. running two workers on two cores.
    flaky: dict[str, list[str]] = {}
    for _ in range(max(0, args.retries)):
        for cmp in comparisons:
            if not cmp.regressions:
                continue
            # Hangs and crashes are not retried: each would cost another
            # watchdog timeout, and they are rarely load-induced flakes.
            by_module: dict[str, list[str]] = {}
            for tid, out_ in cmp.regressions:
                kjob = jobs[(_module_of(tid), cmp.kind)]
                if out_ not in ("hung", "crash", "notrun") and not kjob.fatal:
                    by_module.setdefault(_module_of(tid), []).append(tid)
            if not by_module:
                continue
            n_retry = sum(map(len, by_module.values()))
            log(f"re-running {n_retry} {cmp.kind}-only failure(s) alone to rule out flakes")
            fixed: set[str] = set()
            for m, ids in by_module.items():
                rjob = run_job(m, cmp.kind, opts, only=ids, tag=".retry")
                for tid in ids:
                    rec = rjob.records.get(tid)
                    if rec is not None and rec.outcome in PASSING:
                        fixed.add(tid)
            for tid in fixed:
                flaky.setdefault(cmp.kind, []).append(tid)
            cmp.passed.extend(t for t, _o in cmp.regressions if t in fixed)
            cmp.regressions = [(t, o) for t, o in cmp.regressions if t not in fixed]

    # ---- report -----------------------------------------------------------
    out: list[str] = []
    out.append(render_table(modules, kinds, jobs))
    notes = [f"  [{k}] {m}: {n}" for (m, k), j in sorted(jobs.items()) for n in j.notes]
    notes += [f"  [{k}] {m}: module skipped: {j.skipped_module}" for (m, k), j in sorted(jobs.items())
              if j.skipped_module is not None]
    notes += [f"  [{k}] {m}: FATAL: {j.fatal.strip().splitlines()[-1]}" for (m, k), j in sorted(jobs.items())
              if j.fatal and k not in broken]
    notes += [f"  [{k}] not usable: {msg}" for k, msg in broken.items()]
    if notes:
        out.append("\nnotes:")
        out.extend(notes)

    for cmp in comparisons:
        out.append(f"\n{cmp.kind}-only failures: {len(cmp.regressions)}")
        fatal_mods: dict[str, int] = {}
        for tid, outcome in cmp.regressions:
            kjob = jobs[(_module_of(tid), cmp.kind)]
            if kjob.fatal:
                # One line per module rather than every test of a module
                # that could not run at all.
                fatal_mods[kjob.module] = fatal_mods.get(kjob.module, 0) + 1
                continue
            out.append(f"  {tid}  [{outcome}]")
            if args.verbose:
                rec = jobs[(_module_of(tid), cmp.kind)].records.get(tid)
                tb = rec.traceback if rec and rec.traceback else "(no traceback recorded)"
                out.extend("      " + ln for ln in tb.rstrip().splitlines())
        for m, n_tests in fatal_mods.items():
            out.append(f"  {m}.*  [{n_tests} tests: module could not run on {cmp.kind}, see notes]")
        if cmp.known:
            out.append(f"\n{cmp.kind}: known differences (not counted as failures): {len(cmp.known)}")
            out.extend(f"  {tid}  [{o}]  # {r}" for tid, o, r in cmp.known)
        if cmp.known_now_passing:
            out.append(f"\n{cmp.kind}: listed in known_differences.txt but passing now (remove them?):")
            out.extend(f"  {tid}" for tid in cmp.known_now_passing)
        if flaky.get(cmp.kind):
            out.append(f"\n{cmp.kind}: failed in the full run but passed when re-run alone (flaky):")
            out.extend(f"  {tid}" for tid in sorted(flaky[cmp.kind]))
        if cmp.only_kind_passes:
            out.append(f"\n({cmp.only_kind_passes} test(s) fail on {base} but pass on {cmp.kind})")

    summary_path = opts.results / "summary.json"
    write_summary(summary_path, modules, kinds, jobs, comparisons, argv)
    out.append(f"\nresults: {summary_path}  ({time.monotonic() - t0:.0f}s)")

    if comparisons:
        n_passed = sum(len(c.passed) for c in comparisons)
        n_failed = sum(len(c.regressions) for c in comparisons)
    else:
        # Nothing to compare against: report the single kind's own passes.
        n_passed = sum(counts(j)[1] for j in jobs.values())
        n_failed = 0
    out.append(f"conformance: {n_passed} passed, {n_failed} failed")
    print("\n".join(out), flush=True)

    if args.no_fail:
        return 0
    return 1 if n_failed else 0


if __name__ == "__main__":
    sys.exit(main())
