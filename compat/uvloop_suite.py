"""Run uvloop's own test suite, asyncio flavour, on stock asyncio and on
ferroloop, and fail on any test that passes on the first but not the second.

uvloop's suite (from its PyPI sdist: downloaded, never committed) runs every
test twice, as ``Test_UV_*`` on uvloop and as ``Test_AIO_*`` on
``asyncio.new_event_loop()``. The AIO variants are a second, independent
specification of stock asyncio's behaviour (TCP, Unix, UDP, pipes, processes,
signals, DNS, executors, context, SSL). We run them once as they are and once
with ``AIOTestCase`` making ferroloop loops. The UV variants are not run:
they test uvloop's own extensions beyond asyncio.

    python compat/uvloop_suite.py            # download (cached), run, compare
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
UVLOOP_VERSION = "0.23.0"
CACHE = ROOT / ".cache" / "compat"

# Runs inside a child interpreter, in the unpacked sdist's directory.
CHILD = r"""
import asyncio, json, signal, sys, unittest
from uvloop import _testbase as tb

kind, out = sys.argv[1], sys.argv[2]
if kind == "ferroloop":
    import ferroloop
    tb.AIOTestCase.new_loop = lambda self: ferroloop.new_event_loop()
    tb.AIOTestCase.new_policy = lambda self: ferroloop.EventLoopPolicy()

class Hung(Exception):
    pass

def on_alarm(*_):
    raise Hung("test ran over 60 s")

signal.signal(signal.SIGALRM, on_alarm)
run = unittest.TestCase.run

def run_with_watchdog(self, result=None):
    signal.alarm(60)
    try:
        return run(self, result)
    finally:
        signal.alarm(0)

unittest.TestCase.run = run_with_watchdog
loader = unittest.TestLoader()
loader.testNamePatterns = ["*AIO*"]
suite = loader.discover("tests", top_level_dir=".")
res = unittest.TextTestRunner(verbosity=0, stream=sys.stderr).run(suite)
bad = sorted({t.id() for t, _ in res.failures + res.errors + res.unexpectedSuccesses})
with open(out, "w") as f:
    json.dump({"run": res.testsRun, "skipped": len(res.skipped), "bad": bad}, f)
"""


def fetch_sdist() -> Path:
    """The unpacked uvloop sdist (downloaded once into .cache/compat)."""
    dest = CACHE / f"uvloop-{UVLOOP_VERSION}"
    if (dest / "tests").is_dir():
        return dest
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
         "--no-binary", ":all:", "--no-deps", "-d", str(CACHE), f"uvloop=={UVLOOP_VERSION}"],
        check=True,
    )
    with tarfile.open(CACHE / f"uvloop-{UVLOOP_VERSION}.tar.gz") as tar:
        try:
            tar.extractall(CACHE, filter="data")
        except TypeError:  # Python before 3.11.4: no extraction filters
            tar.extractall(CACHE)
    return dest


def ensure_deps() -> None:
    """uvloop itself (its _testbase module) and what its test modules import:
    pyOpenSSL (test_tcp), psutil (test_process), aiohttp (test_aiohttp).
    Without psutil, test_process fails to import on both loops alike and its
    38 tests silently drop out of the comparison."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
         f"uvloop=={UVLOOP_VERSION}", "pyOpenSSL", "psutil", "aiohttp"],
        check=True,
    )


def run_kind(kind: str, sdist: Path, workdir: Path) -> dict:
    # Run the tests from a copy of tests/ only: the sdist's own uvloop/
    # package (no compiled extension) must not shadow the installed one.
    out = workdir / f"{kind}.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p
    )
    proc = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", CHILD, kind, str(out)],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=1800,
    )
    if not out.exists():
        sys.stderr.write(proc.stderr[-5000:])
        raise SystemExit(f"uvloop suite on {kind}: the run did not finish (exit {proc.returncode})")
    return json.loads(out.read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-install", action="store_true", help="don't pip install uvloop/pyOpenSSL")
    args = ap.parse_args()
    if not args.no_install:
        ensure_deps()
    sdist = fetch_sdist()
    with tempfile.TemporaryDirectory(prefix="uvloop-suite-") as tmp:
        work = Path(tmp)
        subprocess.run(["cp", "-r", str(sdist / "tests"), str(work / "tests")], check=True)
        results = {kind: run_kind(kind, sdist, work) for kind in ("asyncio", "ferroloop")}
    for kind, r in results.items():
        print(f"uvloop {UVLOOP_VERSION} suite, AIO tests on {kind:9s}: "
              f"{r['run']} run, {len(r['bad'])} failed, {r['skipped']} skipped")
    # A module that fails to import fails the same way on both loops, which
    # would hide all of its tests from the comparison: refuse to go on.
    unloaded = sorted({t for r in results.values() for t in r["bad"]
                       if t.startswith("unittest.loader._FailedTest.")})
    for test in unloaded:
        print(f"  could not load test module: {test.rsplit('.', 1)[-1]}")
    regressions = sorted(set(results["ferroloop"]["bad"]) - set(results["asyncio"]["bad"]))
    for test in regressions:
        print(f"  fails on ferroloop only: {test}")
    print(f"uvloop suite: {len(regressions)} ferroloop-only failures")
    return 1 if regressions or unloaded else 0


if __name__ == "__main__":
    sys.exit(main())
