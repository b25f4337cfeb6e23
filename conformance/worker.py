"""Worker: run ONE test_asyncio module against ONE loop kind, with a watchdog.

Started by run.py as `python -m conformance.worker ...`, one process per
(module, kind) -- and again if it dies -- so modules and kinds can't
contaminate each other (policies, child watchers, leaked threads...).

Progress goes to a JSON-lines file, flushed line by line so it survives the
process being killed:

    {"event": "plan", "ids": [...]}           tests this attempt will run, in order
    {"event": "start", "id": ...}             a test started
    {"event": "result", "id": ..., "outcome": ..., "duration": ..., "traceback": ...}
    {"event": "fatal", "message": ...}        could not set up (kind or module import)
    {"event": "module_skipped", "reason": ...}
    {"event": "done"}

outcome is one of pass, fail, error, skip, xfail, xpass.  Errors raised
outside a test (setUpClass, tearDownModule...) are results too, with unittest's
own id for them, e.g. "setUpClass (test.test_asyncio.test_x.SomeTests)".

Watchdog: faulthandler.dump_traceback_later(timeout, exit=True) is re-armed
whenever a test starts or stops.  It runs in a C thread that needs no GIL, so
it fires even when the loop is stuck inside native code -- unlike a SIGALRM
Python handler, which only runs when the main thread gets back to the
interpreter.  On expiry it dumps every thread's traceback to the --faulthandler
file and _exit(1)s; run.py then marks the running test "hung" and restarts
the worker with everything already done in --skip-file.  Re-arming at
stopTest (instead of cancelling) also bounds the time spent in class/module
fixtures between tests.
"""

from __future__ import annotations

import argparse
import faulthandler
import fnmatch
import json
import os
import sys
import time
import traceback
import unittest
import warnings
from types import TracebackType
from typing import IO, Any

from conformance import kinds as kinds_mod
from conformance import modules as modules_mod

# unittest's exc_info tuple, as typeshed spells it
ExcInfo = tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]

# Worst outcome wins when a test reports several (subtests, cleanups).
_SEVERITY = {"pass": 0, "xfail": 1, "skip": 2, "xpass": 3, "fail": 4, "error": 5}

MAX_TRACEBACK = 20_000


def short_id(test_id: str) -> str:
    """'test.test_asyncio.test_locks.LockTests.test_x' -> 'test_locks.LockTests.test_x'."""
    prefix = modules_mod.PACKAGE + "."
    return test_id.replace(prefix, "")


class ProgressWriter:
    def __init__(self, path: str) -> None:
        self._fh: IO[str] = open(path, "a", encoding="utf-8")
        # Tests fork (multiprocessing, subprocess tests...); a forked child
        # that ends up back in unittest code must not write our progress.
        self._pid = os.getpid()

    def write(self, **event: Any) -> None:
        if os.getpid() != self._pid:
            return
        self._fh.write(json.dumps(event) + "\n")
        self._fh.flush()


class WatchdogResult(unittest.TestResult):
    """Records one result line per test and arms the per-test watchdog."""

    def __init__(self, progress: ProgressWriter, timeout: float, hang_file: IO[str]) -> None:
        super().__init__()
        self._progress = progress
        self._timeout = timeout
        self._hang_file = hang_file
        self._current: dict[str, Any] | None = None

    def _arm(self) -> None:
        faulthandler.dump_traceback_later(self._timeout, exit=True, file=self._hang_file)

    # -- lifecycle ---------------------------------------------------------

    def startTest(self, test: unittest.TestCase) -> None:
        super().startTest(test)
        test_id = short_id(test.id())
        self._current = {"id": test_id, "outcome": "pass", "tracebacks": [], "t0": time.monotonic()}
        self._progress.write(event="start", id=test_id)
        self._arm()

    def stopTest(self, test: unittest.TestCase) -> None:
        cur = self._current
        if cur is not None:
            tb = "\n".join(cur["tracebacks"])[:MAX_TRACEBACK] or None
            self._progress.write(
                event="result",
                id=cur["id"],
                outcome=cur["outcome"],
                duration=round(time.monotonic() - cur["t0"], 3),
                traceback=tb,
            )
        self._current = None
        self._arm()
        super().stopTest(test)

    # -- outcomes ----------------------------------------------------------

    def _record(self, test: unittest.TestCase, outcome: str, text: str | None = None) -> None:
        cur = self._current
        if cur is None or not _belongs_to(test, cur["id"]):
            # Outside startTest/stopTest: a class or module fixture
            # (unittest passes an _ErrorHolder whose id() names it).
            self._progress.write(
                event="result", id=short_id(test.id()), outcome=outcome, duration=0.0,
                traceback=(text or "")[:MAX_TRACEBACK] or None,
            )
            return
        if _SEVERITY[outcome] > _SEVERITY[cur["outcome"]]:
            cur["outcome"] = outcome
        if text:
            cur["tracebacks"].append(text)

    def addSuccess(self, test: unittest.TestCase) -> None:
        super().addSuccess(test)
        self._record(test, "pass")

    def addFailure(self, test: unittest.TestCase, err: ExcInfo) -> None:
        super().addFailure(test, err)
        self._record(test, "fail", self.failures[-1][1])

    def addError(self, test: unittest.TestCase, err: ExcInfo) -> None:
        super().addError(test, err)
        self._record(test, "error", self.errors[-1][1])

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        super().addSkip(test, reason)
        self._record(test, "skip", f"skipped: {reason}")

    def addExpectedFailure(self, test: unittest.TestCase, err: ExcInfo) -> None:
        super().addExpectedFailure(test, err)
        self._record(test, "xfail")

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
        super().addUnexpectedSuccess(test)
        self._record(test, "xpass", "unexpected success")

    def addSubTest(self, test: unittest.TestCase, subtest: unittest.TestCase, err: ExcInfo | None) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None and err[0] is not None:
            outcome = "fail" if issubclass(err[0], test.failureException) else "error"
            text = self._exc_info_to_string(err, test)  # type: ignore[attr-defined]
            self._record(test, outcome, f"[{subtest.id()}]\n{text}")


def _belongs_to(test: unittest.TestCase, current_id: str) -> bool:
    return short_id(test.id()) == current_id


def _matches(test_id: str, patterns: list[str]) -> bool:
    """-k semantics: substring, or (with wildcards) a glob found anywhere in the id."""
    for pat in patterns:
        if any(c in pat for c in "*?["):
            if fnmatch.fnmatchcase(test_id, f"*{pat}*"):
                return True
        elif pat in test_id:
            return True
    return False


def _flatten(suite: unittest.TestSuite) -> list[unittest.TestCase]:
    out: list[unittest.TestCase] = []
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            out.extend(_flatten(item))
        else:
            out.append(item)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--module", required=True)
    p.add_argument("--kind", required=True)
    p.add_argument("--timeout", type=float, default=40.0, help="per-test watchdog, seconds")
    p.add_argument("--progress", required=True, help="JSON-lines progress file (appended)")
    p.add_argument("--faulthandler", required=True, help="file for watchdog/crash tracebacks")
    p.add_argument("--skip-file", help="JSON list of test ids not to run (already done)")
    p.add_argument("--only-file", help="JSON list of test ids: run only these")
    p.add_argument("-k", dest="patterns", action="append", default=[],
                   help="only tests whose id matches (substring or fnmatch pattern)")
    args = p.parse_args(argv)

    progress = ProgressWriter(args.progress)
    hang_file = open(args.faulthandler, "a", encoding="utf-8")
    # Crashes (segfaults, aborts from native code) dump tracebacks too.
    faulthandler.enable(file=hang_file, all_threads=True)

    try:
        kind = kinds_mod.KINDS[args.kind]
        spec = modules_mod.lookup(args.module)
        # Install the kind BEFORE importing the test module so nothing in it
        # can capture the stock policy at import time.
        kinds_mod.install(kind)
        factory = kind.factory()
    except Exception:
        progress.write(event="fatal", message="setting up loop kind failed:\n" + traceback.format_exc())
        return 2

    try:
        mod = spec.import_module()
    except unittest.SkipTest as exc:
        progress.write(event="module_skipped", reason=str(exc))
        progress.write(event="done")
        return 0
    except Exception:
        progress.write(event="fatal", message="importing the test module failed:\n" + traceback.format_exc())
        return 2

    loader = unittest.TestLoader()
    tests: list[unittest.TestCase] = []
    for cls in modules_mod.load_test_classes(spec, mod, kind, factory):
        tests.extend(_flatten(loader.loadTestsFromTestCase(cls)))

    skip: set[str] = set()
    if args.skip_file:
        with open(args.skip_file, encoding="utf-8") as fh:
            skip = set(json.load(fh))
    only: set[str] | None = None
    if args.only_file:
        with open(args.only_file, encoding="utf-8") as fh:
            only = set(json.load(fh))

    selected: list[unittest.TestCase] = []
    for test in tests:
        tid = short_id(test.id())
        if tid in skip or (only is not None and tid not in only):
            continue
        if args.patterns and not _matches(tid, args.patterns):
            continue
        selected.append(test)
    progress.write(event="plan", ids=[short_id(t.id()) for t in selected])

    # Like unittest's runner: show each warning once rather than raising or
    # hiding it; output goes to the worker log that run.py keeps.
    warnings.simplefilter("default")

    result = WatchdogResult(progress, args.timeout, hang_file)
    # A flat suite still gets class/module fixtures: TestSuite tracks them
    # from consecutive tests' classes, and generated classes carry the test
    # module's __module__.
    suite = unittest.TestSuite(selected)
    faulthandler.dump_traceback_later(args.timeout, exit=True, file=hang_file)
    try:
        suite.run(result)
    finally:
        faulthandler.cancel_dump_traceback_later()
    progress.write(event="done")
    sys.stdout.flush()
    sys.stderr.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
