"""Debug mode: set_debug/get_debug, PYTHONASYNCIODEBUG, slow callbacks,
thread checks, coroutine origin tracking."""

import asyncio
import logging
import subprocess
import sys
import threading
import time

import pytest

from conftest import run, subprocess_env


def test_set_get_debug(loop):
    assert loop.get_debug() is False
    loop.set_debug(True)
    assert loop.get_debug() is True
    loop.set_debug(False)
    assert loop.get_debug() is False


def test_debug_attribute_is_the_flag_not_get_debug(loop):
    """`loop._debug` is the flag set_debug() sets, whatever get_debug() says:
    a subclass's override of get_debug() does not change it, and a class
    whose get_debug() reads `_debug` (BaseEventLoop's does) still works."""
    base = type(loop)
    loop.set_debug(True)

    class AlwaysQuiet(base):
        def get_debug(self):
            return False

    class ReadsTheFlag(base):
        def get_debug(self):
            return self._debug

    for cls in (AlwaysQuiet, ReadsTheFlag):
        loop.__class__ = cls
        try:
            assert loop._debug is True
        finally:
            loop.__class__ = base
    loop._debug = False
    assert loop.get_debug() is False


def test_runner_debug_true(loop_factory):
    async def main():
        return asyncio.get_running_loop().get_debug()

    with asyncio.Runner(debug=True, loop_factory=loop_factory) as runner:
        assert runner.run(main()) is True
        assert runner.get_loop() is loop_factory.loops[0]
    with asyncio.Runner(debug=False, loop_factory=loop_factory) as runner:
        assert runner.run(main()) is False


def test_runner_closes_loop_and_shuts_down(loop_factory):
    state = {}

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            state["agen-finally"] = True

    async def main():
        g = agen()
        await g.__anext__()
        state["g"] = g  # keep it alive and suspended
        await asyncio.get_running_loop().run_in_executor(None, int)
        return "main"

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        assert runner.run(main()) == "main"
        loop = runner.get_loop()
    assert loop.is_closed()
    assert state.get("agen-finally") is True


def _debug_in_subprocess(kind, *pyargs, **env):
    code = (
        "import asyncio, sys\n"
        "if sys.argv[1] == 'ferroloop':\n"
        "    import ferroloop\n"
        "    loop = ferroloop.new_event_loop()\n"
        "else:\n"
        "    loop = asyncio.SelectorEventLoop()\n"
        "print('DEBUG=' + str(loop.get_debug()))\n"
        "loop.close()\n"
    )
    proc = subprocess.run(
        [sys.executable, *pyargs, "-c", code, kind],
        capture_output=True, text=True, timeout=30,
        env=subprocess_env(**env))
    assert proc.returncode == 0, proc.stderr
    lines = [l for l in proc.stdout.splitlines() if l.startswith("DEBUG=")]
    assert len(lines) == 1, proc.stdout
    return lines[0].split("=", 1)[1]


def test_pythonasynciodebug_env_enables_debug(loop_kind, loop_factory):
    assert _debug_in_subprocess(loop_kind, PYTHONASYNCIODEBUG="1") == "True"


def test_no_env_debug_off(loop_kind, loop_factory):
    assert _debug_in_subprocess(loop_kind) == "False"


def test_dev_mode_enables_debug(loop_kind, loop_factory):
    assert _debug_in_subprocess(loop_kind, "-X", "dev") == "True"


def test_ignore_environment_disables_env_debug(loop_kind, loop_factory):
    assert _debug_in_subprocess(loop_kind, "-E",
                                PYTHONASYNCIODEBUG="1") == "False"


def test_slow_callback_duration_default_and_settable(loop):
    assert loop.slow_callback_duration == pytest.approx(0.1)
    loop.slow_callback_duration = 0.01
    assert loop.slow_callback_duration == pytest.approx(0.01)


def test_slow_callback_logged_in_debug(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01

    def slow_callback_marker():
        time.sleep(0.05)

    loop.call_soon(slow_callback_marker)
    loop.call_soon(loop.stop)
    loop.run_forever()
    warnings = [r for r in caplog.records
                if r.name == "asyncio" and r.levelno == logging.WARNING
                and r.getMessage().startswith("Executing ")]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    msg = warnings[0].getMessage()
    assert " took " in msg and "seconds" in msg
    assert "slow_callback_marker" in msg
    assert "Handle" in msg


def test_slow_callback_not_logged_without_debug(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    loop.slow_callback_duration = 0.01
    loop.call_soon(time.sleep, 0.03)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert not [r for r in caplog.records
                if r.getMessage().startswith("Executing ")]


def test_fast_callback_not_logged_in_debug(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    loop.set_debug(True)
    loop.slow_callback_duration = 10
    loop.call_soon(lambda: None)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert not [r for r in caplog.records
                if r.getMessage().startswith("Executing ")]


def test_debug_call_soon_from_other_thread_raises(loop):
    loop.set_debug(True)
    errors = []

    async def main():
        fut = loop.create_future()

        def other_thread():
            try:
                loop.call_soon(lambda: None)
            except RuntimeError as exc:
                errors.append(str(exc))
            try:
                loop.call_later(0.01, lambda: None)
            except RuntimeError as exc:
                errors.append(str(exc))
            loop.call_soon_threadsafe(fut.set_result, None)

        th = threading.Thread(target=other_thread)
        th.start()
        await fut
        th.join()

    run(loop, main())
    assert len(errors) == 2
    for e in errors:
        assert "Non-thread-safe operation invoked on an event loop other " \
               "than the current one" in e


def test_non_debug_call_soon_from_other_thread_allowed(loop):
    # Without debug, no thread check is made (the call just isn't safe).
    errors = []

    async def main():
        fut = loop.create_future()

        def other_thread():
            try:
                h = loop.call_soon(lambda: None)
                h.cancel()
            except RuntimeError as exc:  # pragma: no cover
                errors.append(exc)
            loop.call_soon_threadsafe(fut.set_result, None)

        th = threading.Thread(target=other_thread)
        th.start()
        await fut
        th.join()

    run(loop, main())
    assert errors == []


def test_debug_call_soon_threadsafe_from_other_thread_ok(loop):
    loop.set_debug(True)

    async def main():
        fut = loop.create_future()
        th = threading.Thread(
            target=lambda: loop.call_soon_threadsafe(fut.set_result, "ok"))
        th.start()
        r = await fut
        th.join()
        return r

    assert run(loop, main()) == "ok"


def test_debug_call_soon_threadsafe_from_a_thread_with_no_python_frame(loop):
    """_thread.start_new_thread calls the function straight from C: the new
    thread has no Python frame, as a native library's own thread (a Rust or C
    extension calling back into the loop) has none. Debug mode still records
    a (here empty) source traceback instead of failing the call."""
    import _thread
    loop.set_debug(True)

    async def main():
        fut = loop.create_future()
        _thread.start_new_thread(loop.call_soon_threadsafe,
                                 (fut.set_result, "ok"))
        return await asyncio.wait_for(fut, 5)

    assert run(loop, main()) == "ok"


def test_coroutine_origin_tracking_in_debug(loop):
    before = sys.get_coroutine_origin_tracking_depth()
    assert before == 0
    loop.set_debug(True)
    seen = []

    async def main():
        seen.append(sys.get_coroutine_origin_tracking_depth())

    loop.run_until_complete(main())
    assert seen[0] > 0
    assert sys.get_coroutine_origin_tracking_depth() == before


def test_coroutine_origin_tracking_off_without_debug(loop):
    seen = []

    async def main():
        seen.append(sys.get_coroutine_origin_tracking_depth())

    loop.run_until_complete(main())
    assert seen == [0]
    assert sys.get_coroutine_origin_tracking_depth() == 0


def test_coroutine_origin_tracking_restored_after_exception(loop):
    loop.set_debug(True)

    async def main():
        raise ValueError

    with pytest.raises(ValueError):
        loop.run_until_complete(main())
    assert sys.get_coroutine_origin_tracking_depth() == 0


def test_set_debug_while_running_toggles_tracking(loop):
    seen = []

    async def main():
        # asyncio applies the change from a callback scheduled by set_debug
        seen.append(sys.get_coroutine_origin_tracking_depth())
        loop.set_debug(True)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        seen.append(sys.get_coroutine_origin_tracking_depth())
        loop.set_debug(False)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        seen.append(sys.get_coroutine_origin_tracking_depth())

    loop.run_until_complete(main())
    assert seen[0] == 0 and seen[1] > 0 and seen[2] == 0


def test_debug_handle_source_traceback(loop):
    loop.set_debug(True)
    contexts = []
    loop.set_exception_handler(lambda l, ctx: contexts.append(ctx))
    loop.call_soon(lambda: 1 / 0)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert len(contexts) == 1
    assert "source_traceback" in contexts[0]


def test_debug_never_awaited_coroutine_warning_has_origin(loop):
    loop.set_debug(True)
    import warnings

    async def never():
        pass

    async def main():
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            c = never()
            del c
            import gc
            gc.collect()
        return [str(x.message) for x in w]

    msgs = run(loop, main())
    assert any("was never awaited" in m and "Coroutine created at" in m
               for m in msgs), msgs
