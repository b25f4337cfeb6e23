"""Errors raised by callbacks and the exception-handler API."""

import asyncio
import contextvars
import logging
import sys

import pytest

from conftest import run


def _asyncio_records(caplog, level=logging.ERROR):
    return [r for r in caplog.records
            if r.name == "asyncio" and r.levelno >= level]


def test_exception_in_callback_goes_to_handler(loop):
    contexts = []

    def handler(l, ctx):
        contexts.append((l, ctx))

    def bad_callback():
        raise ZeroDivisionError("cb-failed")

    loop.set_exception_handler(handler)
    h = loop.call_soon(bad_callback)
    after = []
    loop.call_soon(after.append, "still-running")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert after == ["still-running"]
    assert len(contexts) == 1
    l, ctx = contexts[0]
    assert l is loop
    assert ctx["message"].startswith("Exception in callback ")
    assert "bad_callback" in ctx["message"]
    assert isinstance(ctx["exception"], ZeroDivisionError)
    assert str(ctx["exception"]) == "cb-failed"
    assert ctx["handle"] is h


def test_exception_in_timer_callback_goes_to_handler(loop):
    contexts = []
    loop.set_exception_handler(lambda l, ctx: contexts.append(ctx))

    def bad_timer():
        raise KeyError("t")

    h = loop.call_later(0.001, bad_timer)
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert len(contexts) == 1
    assert contexts[0]["handle"] is h
    assert isinstance(contexts[0]["exception"], KeyError)
    assert contexts[0]["message"].startswith("Exception in callback ")


@pytest.mark.parametrize("schedule", ["call_soon", "call_later"])
def test_callback_that_cancels_its_own_handle_then_raises(loop, schedule):
    # Cancelling drops a handle's callback and arguments, also while the
    # callback runs: the report of its error then names no callback
    # ("None()"), as asyncio's does. (Found by differential fuzzing.)
    contexts = []
    loop.set_exception_handler(lambda l, ctx: contexts.append(ctx))
    handles = []

    def cancel_self_and_fail(arg):
        handles[0].cancel()
        raise ValueError(arg)

    if schedule == "call_soon":
        handles.append(loop.call_soon(cancel_self_and_fail, "x"))
    else:
        handles.append(loop.call_later(0, cancel_self_and_fail, "x"))
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    [ctx] = contexts
    assert ctx["message"] == "Exception in callback None()"
    assert ctx["handle"] is handles[0]
    assert handles[0].cancelled()
    assert str(ctx["exception"]) == "x"


def test_exception_handler_called_positionally(loop):
    calls = []

    class Handler:
        def __call__(self, *args, **kwargs):
            calls.append((args, kwargs))

    loop.set_exception_handler(Handler())
    loop.call_soon(lambda: 1 / 0)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert len(calls) == 1
    args, kwargs = calls[0]
    assert kwargs == {}
    assert len(args) == 2
    assert args[0] is loop
    assert isinstance(args[1], dict)


def test_custom_handler_runs_in_the_failing_callbacks_context(loop):
    # From 3.12 on asyncio runs a custom handler in the context of the handle
    # (or task) it reports on, so it sees what the callback set (gh-96704);
    # 3.11 runs it in the loop's own context.
    name = contextvars.ContextVar("name", default="outer")
    seen = []

    def handler(lp, context):
        about = context.get("handle") or context.get("future")
        seen.append((about is not None, name.get()))

    def callback():
        name.set("callback")
        1 / 0

    async def task():
        name.set("task")
        1 / 0

    async def main():
        loop.set_exception_handler(handler)
        loop.call_soon(callback)
        t = loop.create_task(task())
        await asyncio.sleep(0.01)
        del t  # the unretrieved exception is reported when the task goes
        for _ in range(3):
            await asyncio.sleep(0)

    run(loop, main())
    expected = ("callback", "task") if sys.version_info >= (3, 12) else ("outer",) * 2
    assert seen == [(True, expected[0]), (True, expected[1])]


def test_set_get_exception_handler(loop):
    assert loop.get_exception_handler() is None

    def handler(l, ctx):
        pass

    loop.set_exception_handler(handler)
    assert loop.get_exception_handler() is handler
    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None


@pytest.mark.parametrize("bad", [1, "handler", object()])
def test_set_exception_handler_non_callable(loop, bad):
    with pytest.raises(TypeError):
        loop.set_exception_handler(bad)
    assert loop.get_exception_handler() is None


def test_default_exception_handler_logs(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")

    def failing_cb():
        raise RuntimeError("logged-error-marker")

    loop.call_soon(failing_cb)
    loop.call_soon(loop.stop)
    loop.run_forever()
    records = _asyncio_records(caplog)
    assert len(records) == 1
    rec = records[0]
    assert rec.levelno == logging.ERROR
    assert rec.getMessage().startswith("Exception in callback ")
    assert "failing_cb" in rec.getMessage()
    assert rec.exc_info is not None
    assert isinstance(rec.exc_info[1], RuntimeError)
    assert "logged-error-marker" in caplog.text


def test_default_exception_handler_direct_call(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    exc = ValueError("direct-marker")
    loop.default_exception_handler({"message": "custom message here",
                                    "exception": exc,
                                    "extra_key": "extra_value"})
    records = _asyncio_records(caplog)
    assert len(records) == 1
    msg = records[0].getMessage()
    assert msg.startswith("custom message here")
    assert "extra_key" in msg and "extra_value" in msg
    assert records[0].exc_info[1] is exc


def test_default_exception_handler_without_message(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    loop.default_exception_handler({})
    records = _asyncio_records(caplog)
    assert len(records) == 1
    assert records[0].getMessage().startswith(
        "Unhandled exception in event loop")


def test_call_exception_handler_uses_custom_handler(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    got = []
    loop.set_exception_handler(lambda l, ctx: got.append(ctx))
    ctx = {"message": "m", "foo": 1}
    loop.call_exception_handler(ctx)
    assert got == [ctx]
    assert _asyncio_records(caplog) == []


def test_call_exception_handler_default_logs(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    loop.call_exception_handler({"message": "plain-message-marker"})
    records = _asyncio_records(caplog)
    assert len(records) == 1
    assert "plain-message-marker" in records[0].getMessage()


def test_custom_handler_that_raises_is_logged_not_propagated(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")

    def handler(l, ctx):
        raise OSError("handler-failed-marker")

    loop.set_exception_handler(handler)
    # direct call
    loop.call_exception_handler({"message": "original"})
    records = _asyncio_records(caplog)
    assert len(records) == 1
    assert "Unhandled error in exception handler" in records[0].getMessage()
    assert isinstance(records[0].exc_info[1], OSError)
    caplog.clear()
    # from a failing callback
    loop.call_soon(lambda: 1 / 0)
    loop.call_soon(loop.stop)
    loop.run_forever()
    records = _asyncio_records(caplog)
    assert len(records) == 1
    assert "Unhandled error in exception handler" in records[0].getMessage()
    assert "handler-failed-marker" in caplog.text


def test_custom_handler_keyboard_interrupt_propagates(loop):
    def handler(l, ctx):
        raise KeyboardInterrupt

    loop.set_exception_handler(handler)
    with pytest.raises(KeyboardInterrupt):
        loop.call_exception_handler({"message": "x"})


def test_subclassed_default_handler_via_set_exception_handler(loop, caplog):
    # A handler may delegate back to the default one.
    caplog.set_level(logging.DEBUG, logger="asyncio")
    seen = []

    def handler(l, ctx):
        seen.append(ctx["message"])
        l.default_exception_handler(ctx)

    loop.set_exception_handler(handler)
    loop.call_soon(lambda: 1 / 0)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert len(seen) == 1
    assert len(_asyncio_records(caplog)) == 1


def test_keyboard_interrupt_and_system_exit_not_sent_to_handler(loop):
    got = []
    loop.set_exception_handler(lambda l, ctx: got.append(ctx))
    loop.call_soon(lambda: (_ for _ in ()).throw(SystemExit(2)))
    with pytest.raises(SystemExit):
        loop.run_forever()
    loop.call_soon(lambda: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    assert got == []


def test_base_exception_subclass_from_callback_propagates(loop):
    class MyBase(BaseException):
        pass

    got = []
    loop.set_exception_handler(lambda l, ctx: got.append(ctx))
    loop.call_soon(lambda: (_ for _ in ()).throw(MyBase()))
    loop.call_soon(loop.stop)
    # asyncio's Handle._run catches BaseException other than
    # KeyboardInterrupt/SystemExit and reports it to the handler.
    loop.run_forever()
    assert len(got) == 1
    assert isinstance(got[0]["exception"], MyBase)


def test_unretrieved_task_exception_reported(loop):
    got = []
    loop.set_exception_handler(lambda l, ctx: got.append(ctx))

    async def failing():
        raise ValueError("never-retrieved")

    async def main():
        loop.create_task(failing())
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    run(loop, main())
    import gc
    gc.collect()
    assert len(got) == 1
    assert got[0]["message"] == "Task exception was never retrieved"
    assert isinstance(got[0]["exception"], ValueError)


def test_subclass_call_exception_handler_override_is_used(loop_factory):
    base = type(loop_factory())
    seen = []

    class MyLoop(base):
        def call_exception_handler(self, context):
            seen.append(context)

    loop = MyLoop()
    loop_factory.loops.append(loop)
    loop.call_soon(lambda: 1 / 0)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert len(seen) == 1
    assert isinstance(seen[0]["exception"], ZeroDivisionError)


def test_subclass_default_exception_handler_override_is_used(loop_factory):
    base = type(loop_factory())
    seen = []

    class MyLoop(base):
        def default_exception_handler(self, context):
            seen.append(context)

    loop = MyLoop()
    loop_factory.loops.append(loop)
    loop.call_soon(lambda: 1 / 0)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert len(seen) == 1
    assert isinstance(seen[0]["exception"], ZeroDivisionError)
