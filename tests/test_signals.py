"""Unix signal handling: add_signal_handler/remove_signal_handler and
Ctrl-C (SIGINT) while the loop is blocked."""

import asyncio
import os
import signal
import threading
import time

import pytest

from conftest import run


def test_signal_handler_runs_on_loop_with_args(loop):
    got = []
    fut = loop.create_future()

    def handler(*args):
        got.append((args, asyncio.get_running_loop() is loop,
                    threading.get_ident()))
        if not fut.done():
            fut.set_result(None)

    loop.add_signal_handler(signal.SIGUSR1, handler, "arg1", 2)
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        run(loop, fut)
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
    assert got == [(("arg1", 2), True, threading.get_ident())]


def test_signal_handler_runs_not_in_python_signal_context(loop):
    # The callback is run by the loop as a normal callback: it may schedule
    # other callbacks and use the loop freely.
    out = []
    fut = loop.create_future()

    def handler():
        loop.call_soon(out.append, "scheduled-from-handler")
        loop.call_soon(fut.set_result, None)

    loop.add_signal_handler(signal.SIGUSR2, handler)
    try:
        os.kill(os.getpid(), signal.SIGUSR2)
        run(loop, fut)
    finally:
        loop.remove_signal_handler(signal.SIGUSR2)
    assert out == ["scheduled-from-handler"]


def test_signal_wakes_blocked_loop(loop):
    fut = loop.create_future()
    loop.add_signal_handler(signal.SIGUSR1, lambda: fut.set_result("sig"))
    timer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1))
    try:
        t0 = time.monotonic()
        timer.start()
        assert loop.run_until_complete(asyncio.wait_for(fut, 10)) == "sig"
        assert time.monotonic() - t0 < 2
    finally:
        timer.cancel()
        timer.join()
        loop.remove_signal_handler(signal.SIGUSR1)


def test_signal_handler_multiple_signals(loop):
    got = []
    done = loop.create_future()

    def handler(name):
        got.append(name)
        if len(got) == 2 and not done.done():
            done.set_result(None)

    loop.add_signal_handler(signal.SIGUSR1, handler, "usr1")
    loop.add_signal_handler(signal.SIGUSR2, handler, "usr2")
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR2)
        run(loop, done)
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
        loop.remove_signal_handler(signal.SIGUSR2)
    assert sorted(got) == ["usr1", "usr2"]


def test_replacing_signal_handler(loop):
    got = []
    fut = loop.create_future()
    loop.add_signal_handler(signal.SIGUSR1, got.append, "old")
    loop.add_signal_handler(signal.SIGUSR1,
                            lambda: (got.append("new"), fut.set_result(None)))
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        run(loop, fut)
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
    assert got == ["new"]


def test_remove_signal_handler_return_values(loop):
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_remove_signal_handler_restores_default(loop):
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    assert signal.getsignal(signal.SIGUSR1) is not signal.SIG_DFL
    loop.remove_signal_handler(signal.SIGUSR1)
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_remove_sigint_handler_restores_default_int_handler(loop):
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    assert loop.remove_signal_handler(signal.SIGINT) is True
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_close_removes_signal_handlers(loop):
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    loop.close()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_removed_signal_handler_not_called(loop):
    got = []
    # Ignore the signal at the OS level after removal, so the process is not
    # killed by SIGUSR1's default action.
    loop.add_signal_handler(signal.SIGUSR1, got.append, 1)
    loop.remove_signal_handler(signal.SIGUSR1)
    loop.add_signal_handler(signal.SIGUSR2, got.append, 2)
    try:
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR2)
        loop.run_until_complete(asyncio.sleep(0.05))
    finally:
        loop.remove_signal_handler(signal.SIGUSR2)
    assert got == [2]


def test_add_signal_handler_sigkill(loop):
    with pytest.raises(RuntimeError):
        loop.add_signal_handler(signal.SIGKILL, lambda: None)
    with pytest.raises(RuntimeError):
        loop.add_signal_handler(signal.SIGSTOP, lambda: None)


@pytest.mark.parametrize("sig", [0, 1000, -1])
def test_add_signal_handler_invalid_number(loop, sig):
    with pytest.raises(ValueError):
        loop.add_signal_handler(sig, lambda: None)
    with pytest.raises(ValueError):
        loop.remove_signal_handler(sig)


def test_add_signal_handler_non_int(loop):
    with pytest.raises(TypeError):
        loop.add_signal_handler("SIGUSR1", lambda: None)


def test_add_signal_handler_coroutine_function(loop):
    async def coro_fn():
        pass

    with pytest.raises(TypeError):
        loop.add_signal_handler(signal.SIGUSR1, coro_fn)
    coro = coro_fn()
    try:
        with pytest.raises(TypeError):
            loop.add_signal_handler(signal.SIGUSR1, coro)
    finally:
        coro.close()
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_add_signal_handler_on_closed_loop(loop):
    loop.close()
    with pytest.raises(RuntimeError):
        loop.add_signal_handler(signal.SIGUSR1, lambda: None)


def test_add_signal_handler_from_non_main_thread(loop):
    result = {}

    def thread_main():
        try:
            loop.add_signal_handler(signal.SIGUSR1, lambda: None)
        except BaseException as exc:
            result["exc"] = exc
        else:  # pragma: no cover
            result["exc"] = None
            loop.remove_signal_handler(signal.SIGUSR1)

    th = threading.Thread(target=thread_main)
    th.start()
    th.join(5)
    # stock asyncio: set_wakeup_fd's ValueError is re-raised as RuntimeError
    assert isinstance(result["exc"], RuntimeError)
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_sigint_while_blocked_raises_keyboard_interrupt(loop):
    signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT))
    t0 = time.monotonic()
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(asyncio.sleep(5))
    finally:
        timer.cancel()
        timer.join()
    assert time.monotonic() - t0 < 2
    assert not loop.is_running()
    assert asyncio.events._get_running_loop() is None
    # the loop is usable again
    assert loop.run_until_complete(asyncio.sleep(0.01, "again")) == "again"


def test_sigint_while_blocked_in_run_forever(loop):
    signal.signal(signal.SIGINT, signal.default_int_handler)
    guard = loop.call_later(5, loop.stop)
    timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT))
    t0 = time.monotonic()
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            loop.run_forever()
    finally:
        timer.cancel()
        timer.join()
        guard.cancel()
    assert time.monotonic() - t0 < 2


def test_sigint_with_loop_handler_calls_handler(loop):
    fut = loop.create_future()
    loop.add_signal_handler(signal.SIGINT, lambda: fut.set_result("handled"))
    timer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT))
    try:
        timer.start()
        assert run(loop, fut) == "handled"
    finally:
        timer.cancel()
        timer.join()
        loop.remove_signal_handler(signal.SIGINT)


def test_python_signal_handler_runs_while_loop_blocked(loop):
    # A plain signal.signal() handler (not the loop's) must run promptly
    # while the loop waits for I/O, not only when the loop next wakes up.
    fut = loop.create_future()

    def py_handler(signum, frame):
        loop.call_soon_threadsafe(
            lambda: fut.done() or fut.set_result(signum))

    signal.signal(signal.SIGUSR2, py_handler)
    timer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR2))
    t0 = time.monotonic()
    try:
        timer.start()
        assert run(loop, fut, timeout=10) == signal.SIGUSR2
    finally:
        timer.cancel()
        timer.join()
    assert time.monotonic() - t0 < 2


def test_sigint_under_runner_cancels_main_and_raises(loop_factory):
    # asyncio.Runner turns the first Ctrl-C into a cancellation of the main
    # task, then raises KeyboardInterrupt out of run().
    signal.signal(signal.SIGINT, signal.default_int_handler)
    state = {}

    async def main():
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise

    timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT))
    t0 = time.monotonic()
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            timer.start()
            with pytest.raises(KeyboardInterrupt):
                runner.run(main())
    finally:
        timer.cancel()
        timer.join()
    assert time.monotonic() - t0 < 2
    assert state == {"cancelled": True}
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
