"""Shared fixtures for the ferroloop behaviour suite.

Every behaviour test takes the ``loop`` (or ``loop_factory``) fixture, which
is parametrized over two loop factories:

* ``asyncio``   -- stock ``asyncio.SelectorEventLoop`` (the specification),
* ``ferroloop`` -- ``ferroloop.new_event_loop`` (the implementation under test).

A test therefore first proves that it holds on stock asyncio and then holds
ferroloop to the same behaviour.

If ``ferroloop`` cannot be imported, the ferroloop params are skipped with the
import error as the reason.  Setting ``FERROLOOP_REQUIRED=1`` in the
environment (or passing ``--ferroloop-required``) turns that skip into an
error, which is what CI does.

Safety nets applied to every test: a file-descriptor leak check (the open
fds in /proc/self/fd before and after the test, after a gc.collect()); a
faulthandler watchdog that dumps tracebacks and exits after HANG_TIMEOUT
seconds, so a hung loop fails the run instead of stalling it; restoration of
process-wide state (event loop policy, asyncgen hooks, coroutine origin
tracking, SIGINT/SIGUSR1/SIGUSR2 handlers, the signal wakeup fd); and
"coroutine ... was never awaited" warnings / unraisable exceptions are
errors.

Helpers for test modules: ``run(loop, coro, timeout)`` (run_until_complete
guarded by asyncio.wait_for) and ``subprocess_env()`` (an environment in
which a child Python can import ferroloop).
"""

import asyncio
import contextlib
import faulthandler
import gc
import os
import signal
import sys

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)

# Seconds after which a hung test dumps all tracebacks and kills the process,
# so that a broken loop fails the run instead of hanging it forever.
HANG_TIMEOUT = 20


def _try_import():
    sys.modules.pop("ferroloop", None)
    try:
        import ferroloop
    except Exception as exc:  # ImportError, or a broken extension module
        return None, f"{type(exc).__name__}: {exc}"
    if not callable(getattr(ferroloop, "new_event_loop", None)):
        # e.g. a namespace package made of a bare ferroloop/ directory
        where = getattr(ferroloop, "__file__", None) or list(
            getattr(ferroloop, "__path__", []))
        sys.modules.pop("ferroloop", None)
        return None, (f"'ferroloop' found at {where} has no "
                      "new_event_loop() (extension not built?)")
    return ferroloop, None


def _import_ferroloop():
    mod, err = _try_import()
    if mod is None and REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
        mod, _ = _try_import()
        if mod is None:
            sys.path.remove(REPO_ROOT)
    return mod, err


FERROLOOP, FERROLOOP_IMPORT_ERROR = _import_ferroloop()


def pytest_addoption(parser):
    parser.addoption(
        "--ferroloop-required",
        action="store_true",
        default=False,
        help="fail (instead of skip) the ferroloop params when ferroloop "
        "cannot be imported (same as FERROLOOP_REQUIRED=1)",
    )


def pytest_configure(config):
    # A coroutine that is created but never awaited is a bug in the loop
    # (or in a test): make it fail the test that caused it.
    config.addinivalue_line(
        "filterwarnings",
        "error:coroutine .* was never awaited:RuntimeWarning")
    # ... including when it is only noticed when the coroutine is collected
    # (an "Exception ignored in" unraisable exception).
    config.addinivalue_line(
        "filterwarnings",
        "error::pytest.PytestUnraisableExceptionWarning")


def ferroloop_required(config):
    env = os.environ.get("FERROLOOP_REQUIRED", "").strip().lower()
    return config.getoption("--ferroloop-required") or env in (
        "1", "true", "yes", "on")


def require_ferroloop(request):
    """Return the ferroloop module, or skip (or fail, if required)."""
    if FERROLOOP is None:
        msg = f"ferroloop is not importable ({FERROLOOP_IMPORT_ERROR})"
        if ferroloop_required(request.config):
            pytest.fail(msg + " and FERROLOOP_REQUIRED is set", pytrace=False)
        pytest.skip(msg)
    return FERROLOOP


def pytest_report_header(config):
    if FERROLOOP is None:
        state = f"NOT importable: {FERROLOOP_IMPORT_ERROR}"
    else:
        state = f"importable from {getattr(FERROLOOP, '__file__', '?')}"
    return [f"ferroloop: {state}; required={ferroloop_required(config)}"]


def subprocess_env(**extra):
    """Environment for child Pythons: ferroloop importable, no asyncio debug
    leaking in from the parent unless asked for."""
    env = dict(os.environ)
    paths = [REPO_ROOT]
    if FERROLOOP is not None and getattr(FERROLOOP, "__file__", None):
        pkg_parent = os.path.dirname(
            os.path.dirname(os.path.abspath(FERROLOOP.__file__)))
        if pkg_parent not in paths:
            paths.insert(0, pkg_parent)
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.pop("PYTHONASYNCIODEBUG", None)
    env.pop("PYTHONDEVMODE", None)
    env.update(extra)
    return env


# ---------------------------------------------------------------------------
# Safety nets: hangs, fd leaks, global state.
# ---------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _hang_guard():
    faulthandler.dump_traceback_later(HANG_TIMEOUT, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def _open_fds():
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the fd of the listdir itself, already closed
            pass
    return fds


@pytest.fixture(autouse=True)
def _fd_leak_check(request):
    """Fail a test that leaves more file descriptors open than it found."""
    gc.collect()
    before = _open_fds()
    yield
    # Give sockets/loops that are only garbage a chance to be finalized.
    gc.collect()
    after = _open_fds()
    leaked = {fd: target for fd, target in after.items()
              if fd not in before or before[fd] != target}
    if leaked:
        pytest.fail(f"test leaked file descriptors: {leaked}", pytrace=False)


@pytest.fixture(autouse=True)
def _restore_global_state():
    """Restore process-wide state that a loop (or a test) may change."""
    policy = asyncio.get_event_loop_policy()
    hooks = sys.get_asyncgen_hooks()
    depth = sys.get_coroutine_origin_tracking_depth()
    sigint = signal.getsignal(signal.SIGINT)
    sigusr1 = signal.getsignal(signal.SIGUSR1)
    sigusr2 = signal.getsignal(signal.SIGUSR2)
    wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup)
    try:
        yield
    finally:
        asyncio.events._set_running_loop(None)
        asyncio.set_event_loop_policy(policy)
        with contextlib.suppress(Exception):
            asyncio.set_event_loop(None)
        sys.set_asyncgen_hooks(*hooks)
        sys.set_coroutine_origin_tracking_depth(depth)
        signal.signal(signal.SIGINT, sigint)
        signal.signal(signal.SIGUSR1, sigusr1)
        signal.signal(signal.SIGUSR2, sigusr2)
        signal.set_wakeup_fd(wakeup)


# ---------------------------------------------------------------------------
# Loop factories.
# ---------------------------------------------------------------------------

LOOP_KINDS = ["asyncio", "ferroloop"]


def _raw_factory(kind, request):
    if kind == "asyncio":
        return asyncio.SelectorEventLoop
    return require_ferroloop(request).new_event_loop


class LoopFactory:
    """Callable that makes loops of one kind and remembers them, so that
    every loop a test creates is closed at teardown."""

    def __init__(self, kind, raw):
        self.kind = kind
        self.raw = raw
        self.loops = []

    def __call__(self):
        loop = self.raw()
        self.loops.append(loop)
        return loop

    def __repr__(self):
        return f"<LoopFactory {self.kind}>"

    @property
    def is_ferroloop(self):
        return self.kind == "ferroloop"

    def close_all(self):
        errors = []
        for loop in self.loops:
            try:
                if loop.is_running():
                    errors.append(f"{loop!r} still running at teardown")
                    continue
                if not loop.is_closed():
                    loop.close()
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(f"closing {loop!r}: {exc!r}")
        self.loops.clear()
        return errors


@pytest.fixture(params=LOOP_KINDS)
def loop_kind(request):
    return request.param


@pytest.fixture
def loop_factory(request, loop_kind, _fd_leak_check, _restore_global_state):
    factory = LoopFactory(loop_kind, _raw_factory(loop_kind, request))
    try:
        yield factory
    finally:
        errors = factory.close_all()
        if errors:
            pytest.fail("; ".join(errors), pytrace=False)


@pytest.fixture
def loop(loop_factory):
    return loop_factory()


@pytest.fixture
def ferroloop(request, _fd_leak_check, _restore_global_state):
    """The ferroloop package itself (package-level tests, no asyncio param)."""
    return require_ferroloop(request)


# ---------------------------------------------------------------------------
# Helpers shared by the test modules.
# ---------------------------------------------------------------------------

def run(loop, coro, timeout=5.0):
    """run_until_complete with a safety timeout, so a broken loop fails a
    test instead of hanging it."""
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))
