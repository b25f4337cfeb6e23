"""Running and stopping the loop: run_forever, stop, run_until_complete,
close, is_running/is_closed, running-loop bookkeeping."""

import asyncio
import contextlib
import gc
import socket
import threading
import weakref

import pytest

from conftest import run


def test_fresh_loop_state(loop):
    assert isinstance(loop, asyncio.AbstractEventLoop)
    assert loop.is_running() is False
    assert loop.is_closed() is False
    assert loop.get_debug() is False


def test_closed_flag_attribute(loop_factory):
    # BaseEventLoop's private _closed flag: uvloop's and other suites read it.
    lp = loop_factory()
    assert lp._closed is False
    lp.close()
    assert lp._closed is True
    lp.close()  # idempotent
    assert lp._closed is True


def test_loop_attributes_set_like_any_object(loop):
    # Plain, object.__setattr__ and deletion all work on a loop instance.
    loop.custom = 1
    object.__setattr__(loop, "other", 2)
    assert (loop.custom, loop.other) == (1, 2)
    del loop.custom
    object.__delattr__(loop, "other")
    assert not hasattr(loop, "custom") and not hasattr(loop, "other")
    with pytest.raises(AttributeError):
        del loop.never_set


def test_run_forever_until_stop(loop):
    calls = []

    def cb(n):
        calls.append(n)
        if n < 3:
            loop.call_soon(cb, n + 1)
        else:
            loop.stop()

    loop.call_soon(cb, 0)
    loop.run_forever()
    assert calls == [0, 1, 2, 3]
    assert not loop.is_running()


def test_stop_before_run_forever_runs_one_iteration(loop):
    calls = []

    def a():
        calls.append("a")
        loop.call_soon(b)

    def b():
        calls.append("b")

    loop.call_soon(a)
    loop.stop()
    loop.run_forever()
    # Only the callbacks that were ready when the iteration began ran.
    assert calls == ["a"]
    # The loop is reusable; the leftover callback runs next time.
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == ["a", "b"]


def test_stop_before_run_forever_with_nothing_scheduled_returns(loop):
    loop.stop()
    loop.run_forever()  # must return, not block
    assert not loop.is_running()
    # The stop request was consumed: a second run needs its own stop.
    ran = []
    loop.call_soon(ran.append, 1)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert ran == [1]


def test_stop_in_middle_of_iteration_order(loop):
    calls = []

    def a():
        calls.append("a")
        loop.call_soon(b)

    def b():
        calls.append("b")

    def c():
        calls.append("c")

    loop.call_soon(a)
    loop.call_soon(loop.stop)
    loop.call_soon(c)
    loop.run_forever()
    # stop() lets the whole current iteration finish (c) but b, scheduled
    # during the iteration, waits for the next one.
    assert calls == ["a", "c"]
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == ["a", "c", "b"]


def test_stop_called_twice_stops_once(loop):
    calls = []
    loop.call_soon(loop.stop)
    loop.call_soon(loop.stop)
    loop.run_forever()
    loop.call_soon(calls.append, 1)
    loop.call_soon(calls.append, 2)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == [1, 2]


def test_is_running_inside_and_outside(loop):
    seen = []
    loop.call_soon(lambda: seen.append(loop.is_running()))
    loop.call_soon(loop.stop)
    assert not loop.is_running()
    loop.run_forever()
    assert seen == [True]
    assert not loop.is_running()


def test_run_until_complete_coroutine_result(loop):
    async def coro(x):
        await asyncio.sleep(0)
        return x + 1

    assert loop.run_until_complete(coro(41)) == 42


def test_run_until_complete_future(loop):
    fut = loop.create_future()
    loop.call_soon(fut.set_result, "value")
    assert loop.run_until_complete(fut) == "value"
    assert fut.done()


def test_run_until_complete_task(loop):
    async def coro():
        return "t"

    task = loop.create_task(coro())
    assert loop.run_until_complete(task) == "t"


def test_run_until_complete_awaitable_object(loop):
    class Awaitable:
        def __await__(self):
            yield from asyncio.sleep(0).__await__()
            return "awaited"

    assert loop.run_until_complete(Awaitable()) == "awaited"


@pytest.mark.parametrize("bad", [None, 1, "str", lambda: None])
def test_run_until_complete_non_awaitable(loop, bad):
    with pytest.raises(TypeError):
        loop.run_until_complete(bad)
    assert not loop.is_running()


def test_run_until_complete_future_of_other_loop(loop_factory):
    a = loop_factory()
    b = loop_factory()
    fut = b.create_future()
    with pytest.raises(ValueError):
        a.run_until_complete(fut)
    fut.cancel()


def test_run_until_complete_exception_propagates(loop):
    async def coro():
        await asyncio.sleep(0)
        raise KeyError("k")

    with pytest.raises(KeyError):
        loop.run_until_complete(coro())
    assert not loop.is_running()
    # usable afterwards
    assert loop.run_until_complete(asyncio.sleep(0, 5)) == 5


def test_run_until_complete_future_exception(loop):
    fut = loop.create_future()
    loop.call_soon(fut.set_exception, ValueError("v"))
    with pytest.raises(ValueError, match="v"):
        loop.run_until_complete(fut)


def test_run_until_complete_cancelled_future(loop):
    fut = loop.create_future()
    loop.call_soon(fut.cancel)
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(fut)


def test_run_until_complete_stopped_before_done(loop):
    fut = loop.create_future()
    loop.call_soon(loop.stop)
    with pytest.raises(RuntimeError,
                       match="Event loop stopped before Future completed"):
        loop.run_until_complete(fut)
    fut.cancel()


def test_run_until_complete_done_future_returns_immediately(loop):
    fut = loop.create_future()
    fut.set_result(3)
    assert loop.run_until_complete(fut) == 3


def test_run_until_complete_returns_when_future_done_not_later(loop):
    # Callbacks scheduled far in the future do not delay the return.
    loop.call_later(30, lambda: None)
    fut = loop.create_future()
    loop.call_soon(fut.set_result, 1)
    t0 = loop.time()
    assert loop.run_until_complete(fut) == 1
    assert loop.time() - t0 < 5


def test_close_is_idempotent(loop):
    loop.close()
    assert loop.is_closed()
    loop.close()
    assert loop.is_closed()


def test_close_while_running_raises(loop):
    errors = []

    def cb():
        try:
            loop.close()
        except RuntimeError as exc:
            errors.append(str(exc))
        loop.stop()

    loop.call_soon(cb)
    loop.run_forever()
    assert len(errors) == 1
    assert "running" in errors[0]
    assert not loop.is_closed()


def test_run_forever_on_closed_loop(loop):
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.run_forever()


def test_run_until_complete_on_closed_loop(loop):
    loop.close()
    coro = asyncio.sleep(0)
    try:
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            loop.run_until_complete(coro)
    finally:
        coro.close()


def test_nested_run_until_complete_raises(loop):
    async def inner():
        return 1

    async def outer():
        coro = inner()
        try:
            with pytest.raises(RuntimeError,
                               match="This event loop is already running"):
                loop.run_until_complete(coro)
        finally:
            coro.close()
        return "outer-done"

    assert run(loop, outer()) == "outer-done"
    assert not loop.is_running()


def test_nested_run_forever_raises(loop):
    errors = []

    def cb():
        try:
            loop.run_forever()
        except RuntimeError as exc:
            errors.append(str(exc))
        loop.stop()

    loop.call_soon(cb)
    loop.run_forever()
    assert errors and "This event loop is already running" in errors[0]


def test_running_other_loop_while_one_runs_raises(loop_factory):
    a = loop_factory()
    b = loop_factory()

    async def inner():
        return 1

    async def outer():
        coro = inner()
        try:
            with pytest.raises(RuntimeError,
                               match="Cannot run the event loop while "
                                     "another loop is running"):
                b.run_until_complete(coro)
        finally:
            coro.close()
        with pytest.raises(RuntimeError):
            b.run_forever()
        return "ok"

    assert run(a, outer()) == "ok"
    assert not b.is_running()
    # b is still fine afterwards
    assert b.run_until_complete(asyncio.sleep(0, "b")) == "b"


def test_loops_in_different_threads(loop_factory):
    # One loop per thread can run concurrently.
    main_loop = loop_factory()
    other = loop_factory()
    result = {}

    def thread_main():
        try:
            result["v"] = other.run_until_complete(asyncio.sleep(0.01, "t"))
        except BaseException as exc:  # pragma: no cover
            result["exc"] = exc

    async def main():
        th = threading.Thread(target=thread_main)
        th.start()
        await main_loop.run_in_executor(None, th.join, 5)
        return "m"

    assert run(main_loop, main()) == "m"
    assert result == {"v": "t"}


def test_get_running_loop_in_callbacks_and_coroutines(loop):
    seen = []

    def cb():
        seen.append(("cb-running", asyncio.get_running_loop()))
        seen.append(("cb-event", asyncio.get_event_loop()))

    async def coro():
        seen.append(("coro-running", asyncio.get_running_loop()))
        seen.append(("coro-event", asyncio.get_event_loop()))
        seen.append(("coro-private", asyncio.events._get_running_loop()))
        loop.call_soon(cb)
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    run(loop, coro())
    assert len(seen) == 5
    for name, obj in seen:
        assert obj is loop, name


def test_no_running_loop_after_run(loop):
    loop.run_until_complete(asyncio.sleep(0))
    assert asyncio.events._get_running_loop() is None
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert asyncio.events._get_running_loop() is None


def test_no_running_loop_after_run_until_complete_raised(loop):
    async def bad():
        raise ValueError

    with pytest.raises(ValueError):
        loop.run_until_complete(bad())
    assert asyncio.events._get_running_loop() is None
    assert not loop.is_running()


def test_keyboard_interrupt_from_callback_propagates(loop):
    calls = []

    def boom():
        raise KeyboardInterrupt

    loop.call_soon(boom)
    loop.call_soon(calls.append, "after")
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    assert not loop.is_running()
    assert asyncio.events._get_running_loop() is None
    # The loop is usable again, and the callback that was queued behind the
    # interrupting one was not lost.
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == ["after"]
    assert loop.run_until_complete(asyncio.sleep(0, "again")) == "again"


def test_keyboard_interrupt_from_callback_out_of_run_until_complete(loop):
    loop.call_soon(lambda: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        loop.run_until_complete(asyncio.sleep(0.5))
    assert asyncio.events._get_running_loop() is None
    assert loop.run_until_complete(asyncio.sleep(0, 1)) == 1


def test_system_exit_from_callback_propagates(loop):
    def boom():
        raise SystemExit(4)

    loop.call_soon(boom)
    with pytest.raises(SystemExit) as info:
        loop.run_forever()
    assert info.value.code == 4
    assert not loop.is_running()
    assert asyncio.events._get_running_loop() is None


def test_keyboard_interrupt_from_coroutine(loop):
    async def coro():
        await asyncio.sleep(0)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        loop.run_until_complete(coro())
    assert not loop.is_running()
    assert loop.run_until_complete(asyncio.sleep(0, 2)) == 2


def test_run_forever_reentrant_after_stop(loop):
    for i in range(3):
        out = []
        loop.call_soon(out.append, i)
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert out == [i]


def test_loop_repr(loop):
    assert "running=False closed=False debug=False" in repr(loop)
    seen = []
    loop.call_soon(lambda: seen.append(repr(loop)))
    loop.call_soon(loop.stop)
    loop.set_debug(True)
    loop.run_forever()
    assert "running=True closed=False debug=True" in seen[0]
    loop.set_debug(False)
    loop.close()
    assert "running=False closed=True debug=False" in repr(loop)


def test_call_soon_rejects_unknown_keyword(loop):
    with pytest.raises(TypeError):
        loop.call_soon(lambda **kw: None, foo=1)
    with pytest.raises(TypeError):
        loop.call_later(0, lambda **kw: None, foo=1)


def test_closed_loop_is_garbage_collected(loop_factory):
    import gc
    import weakref

    loop = loop_factory.raw()
    # reference cycles through scheduled handles and futures
    loop.call_soon(loop.stop)
    loop.call_later(100, loop.stop)
    fut = loop.create_future()
    fut.add_done_callback(lambda f: loop.stop())
    loop.run_forever()
    loop.close()
    ref = weakref.ref(loop)
    del loop, fut
    gc.collect()
    assert ref() is None


@contextlib.contextmanager
def _no_cyclic_gc():
    """Only reference counting frees objects inside the block."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def _busy(loop):
    # The hot paths (call_soon from C Tasks, futures, timers, threadsafe
    # wake-ups) all run, so whatever they cache on the loop is in place.
    fut = loop.create_future()
    loop.call_soon(fut.set_result, 1)
    await fut
    loop.call_soon_threadsafe(lambda: None)
    loop.call_later(0, lambda: None)
    await asyncio.gather(*(asyncio.sleep(0) for _ in range(3)))
    await loop.create_task(asyncio.sleep(0.001))


async def _streams(loop):
    async def echo(r, w):
        w.write(await r.read(10))
        await w.drain()
        w.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    r, w = await asyncio.open_connection(*server.sockets[0].getsockname())
    w.write(b"hi")
    assert await r.read(10) == b"hi"
    w.close()
    await w.wait_closed()
    server.close()
    await server.wait_closed()


async def _executor(loop):
    assert await loop.run_in_executor(None, sum, [1, 2]) == 3
    await loop.shutdown_default_executor()


async def _signal_handler_left(loop):
    import signal
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)  # removed by close()


@pytest.mark.parametrize("work", [_busy, _streams, _executor, _signal_handler_left],
                         ids=["callbacks", "streams", "executor", "signal"])
def test_closed_loop_is_freed_by_refcounting(loop_factory, work):
    # As with stock asyncio, a loop that ran and was closed is not part of
    # a reference cycle: dropping the last reference frees it at once (tornado's
    # circlerefs test checks exactly this).
    with _no_cyclic_gc():
        loop = loop_factory.raw()
        loop.run_until_complete(work(loop))
        loop.close()
        ref = weakref.ref(loop)
        del loop
        assert ref() is None


def test_methods_bound_while_running_keep_loop_alive(loop_factory):
    # A method taken from a running loop holds the loop, as a bound method
    # of a stock loop does, and still works after the run.
    loop = loop_factory.raw()
    got = []

    async def grab():
        return asyncio.get_running_loop().call_soon

    call_soon = loop.run_until_complete(grab())
    ref = weakref.ref(loop)
    del loop
    gc.collect()
    assert ref() is not None
    call_soon(got.append, 1)
    ref().call_soon(ref().stop)
    ref().run_forever()
    assert got == [1]
    ref().close()


def test_unclosed_loop_is_freed_by_the_collector(loop_factory):
    # A stock loop refers to itself (its self-pipe's reader handle) until
    # close(): dropped unclosed, it is freed, and warns, only when the cyclic
    # collector runs. Suites time their ResourceWarning checks around
    # gc.collect() (aiomysql's test___del__ failed on ferroloop, whose loop
    # warned at once, before the test's pytest.warns block).
    import warnings

    def unclosed(w):
        return [x for x in w if "unclosed event loop" in str(x.message)]

    with _no_cyclic_gc(), warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always", ResourceWarning)
        loop = loop_factory.raw()
        ref = weakref.ref(loop)
        del loop
        assert ref() is not None
        assert unclosed(w) == []
        gc.collect()
        assert ref() is None
        assert len(unclosed(w)) == 1


def test_unclosed_loop_with_cycles_is_collected_and_warns(loop_factory):
    import gc
    import weakref

    loop = loop_factory.raw()
    loop.call_later(100, loop.stop)      # loop -> handle -> loop
    loop.call_soon(loop.call_soon, loop.stop)
    ref = weakref.ref(loop)
    with pytest.warns(ResourceWarning, match="unclosed event loop"):
        del loop
        gc.collect()
    assert ref() is None
    # (the fd-leak check of the fixture verifies that its fds were closed)


def test_subclassing_loop(loop_factory):
    base = type(loop_factory())

    class MyLoop(base):
        extra_attr = "x"

        def __init__(self):
            super().__init__()
            self.custom = 42

    loop = MyLoop()
    loop_factory.loops.append(loop)
    assert loop.custom == 42
    assert loop.run_until_complete(asyncio.sleep(0, "sub")) == "sub"
    assert isinstance(loop, base)


def test_patching_base_event_loop_methods_reaches_the_loop(loop):
    """A stock loop inherits create_connection & co. from BaseEventLoop, so
    test suites patch them there (asyncssh: a slow create_connection to test
    its connect timeout; aioice: create_datagram_endpoint). The patch
    reaches the loop, bound as for a subclass; a Mock, which does not bind,
    is called without the loop. Unpatched, the loop's own method runs."""
    from unittest import mock

    seen = []

    async def slow_connect(self, *args, **kwargs):
        seen.append((self is loop, args))
        await asyncio.sleep(3600)

    async def main():
        with mock.patch("asyncio.BaseEventLoop.create_connection", slow_connect):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(
                    loop.create_connection(asyncio.Protocol, "", 1), 0.05)
        assert seen == [(True, (asyncio.Protocol, "", 1))]
        endpoint = mock.AsyncMock(return_value="patched")
        with mock.patch.object(
                asyncio.BaseEventLoop, "create_datagram_endpoint", endpoint):
            assert await loop.create_datagram_endpoint(1, local_addr=2) == "patched"
        endpoint.assert_awaited_once_with(1, local_addr=2)
        gai = mock.AsyncMock(return_value=["answer"])
        with mock.patch.object(asyncio.BaseEventLoop, "getaddrinfo", gai):
            assert await loop.getaddrinfo("example.com", 80) == ["answer"]
        # (ferroloop passes the keyword arguments' defaults explicitly)
        gai.assert_awaited_once()
        assert gai.await_args.args == ("example.com", 80)
        executor = mock.Mock(return_value="future")
        with mock.patch.object(asyncio.BaseEventLoop, "run_in_executor", executor):
            assert loop.run_in_executor(None, print) == "future"
        # Restored: the real methods again.
        with pytest.raises(ConnectionRefusedError):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            sock.close()
            await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        assert (await loop.getaddrinfo("127.0.0.1", 80))[0][4] == ("127.0.0.1", 80)

    run(loop, main())


def test_coroutine_methods_are_coroutine_functions(loop):
    """inspect.iscoroutinefunction answers as for a stock loop, method by
    method: mock's autospec decides by it whether to build an AsyncMock
    (aiohttp's suite awaits autospecced create_connection & co.)."""
    import inspect
    from unittest import mock

    stock = asyncio.new_event_loop()
    try:
        for name in dir(asyncio.AbstractEventLoop):
            if not name.startswith("_"):
                assert inspect.iscoroutinefunction(getattr(loop, name)) == \
                    inspect.iscoroutinefunction(getattr(stock, name)), name
    finally:
        stock.close()

    async def main():
        with mock.patch.object(loop, "create_connection", autospec=True) as cc:
            cc.return_value = ("transport", "protocol")
            assert await loop.create_connection(asyncio.Protocol, "h", 1) == (
                "transport", "protocol")

    run(loop, main())
