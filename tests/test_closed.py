"""Operations on a closed loop raise RuntimeError('Event loop is closed')."""

import asyncio

import pytest


def _coro():
    async def c():
        pass
    return c()


def _call_soon(loop):
    return loop.call_soon(lambda: None)


def _call_later(loop):
    return loop.call_later(1, lambda: None)


def _call_at(loop):
    return loop.call_at(loop.time() + 1, lambda: None)


def _call_soon_threadsafe(loop):
    return loop.call_soon_threadsafe(lambda: None)


def _create_task(loop):
    coro = _coro()
    try:
        return loop.create_task(coro)
    finally:
        coro.close()


def _run_in_executor(loop):
    return loop.run_in_executor(None, int)


def _run_forever(loop):
    return loop.run_forever()


def _run_until_complete(loop):
    coro = _coro()
    try:
        return loop.run_until_complete(coro)
    finally:
        coro.close()


OPS = [_call_soon, _call_later, _call_at, _call_soon_threadsafe,
       _create_task, _run_in_executor, _run_forever, _run_until_complete]


@pytest.mark.parametrize("op", OPS, ids=lambda f: f.__name__.lstrip("_"))
def test_operation_on_closed_loop(loop, op):
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        op(loop)


def test_closed_loop_queries_still_work(loop):
    loop.close()
    assert loop.is_closed()
    assert not loop.is_running()
    assert isinstance(loop.time(), float)
    assert loop.get_debug() is False
    loop.stop()  # harmless
    loop.close()


def test_close_discards_pending_callbacks(loop):
    out = []
    loop.call_soon(out.append, 1)
    loop.call_later(0.001, out.append, 2)
    loop.close()
    assert out == []


def test_close_with_pending_task_no_crash(loop):
    async def forever():
        await asyncio.sleep(100)

    async def main():
        loop.create_task(forever())
        await asyncio.sleep(0)

    loop.run_until_complete(main())
    loop.close()  # pending task is just abandoned


def test_create_future_on_closed_loop_is_usable_but_loop_closed(loop):
    loop.close()
    fut = loop.create_future()
    assert fut.get_loop() is loop
    # resolving it would need to schedule callbacks on the closed loop
    fut.add_done_callback(lambda f: None)
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        fut.set_result(1)


def test_patched_is_closed_does_not_close_the_loop(loop):
    # asyncio's own checks read the private flag, not the public method
    # (janus' suite patches loop.is_closed and then creates tasks).
    from unittest import mock

    async def answer():
        return 42

    async def main():
        with mock.patch.object(loop, "is_closed", return_value=True):
            assert await loop.create_task(answer()) == 42
            fut = loop.create_future()
            loop.call_soon(fut.set_result, 7)
            assert await fut == 7
            assert loop._closed is False

    loop.run_until_complete(main())
