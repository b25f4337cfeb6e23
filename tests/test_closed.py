"""Operations on a closed loop raise RuntimeError('Event loop is closed')."""

import asyncio
import gc
import os
import socket
import warnings
import weakref

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


class _KeepsTransport(asyncio.DatagramProtocol, asyncio.Protocol):
    """Holds its transport, as nearly every protocol does: a cycle."""

    def connection_made(self, transport):
        self.transport = transport


async def _open_udp(loop):
    tr, _ = await loop.create_datagram_endpoint(
        _KeepsTransport, local_addr=("127.0.0.1", 0))
    port = tr.get_extra_info("sockname")[1]

    def check_released():
        # The socket was closed: its port can be bound again.
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind(("127.0.0.1", port))
        finally:
            s.close()

    return check_released


async def _open_read_pipe(loop):
    r, w = os.pipe()
    await loop.connect_read_pipe(_KeepsTransport, os.fdopen(r, "rb"))

    def check_released():
        # The read end was closed: writing finds no reader.
        try:
            with pytest.raises(BrokenPipeError):
                os.write(w, b"x")
        finally:
            os.close(w)

    return check_released


@pytest.mark.parametrize("opener", [_open_udp, _open_read_pipe], ids=["udp", "read_pipe"])
def test_transport_left_open_is_collected_after_close(loop_factory, opener):
    # sanic's HTTP/3 server leaves its UDP endpoint open and closes the loop.
    # Nothing but the protocol <-> transport cycle holds the transport then:
    # the collector frees it (it warns and closes its fd) and the loop.
    loop = loop_factory.raw()
    check_released = loop.run_until_complete(opener(loop))
    loop.close()
    ref = weakref.ref(loop)
    del loop
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        gc.collect()
        gc.collect()
    assert ref() is None, "the closed loop was not freed"
    assert any("unclosed transport" in str(w.message) for w in caught)
    check_released()


def test_private_flags_are_assignable(loop):
    # Plain attributes on BaseEventLoop that servers assign: sanic resets
    # _stopping after run_forever() returns; _debug switches debug checks.
    errors, backstop = [], []
    loop.set_exception_handler(lambda l, ctx: errors.append(ctx))
    loop.call_later(1, lambda: (backstop.append(True), loop.stop()))
    loop.call_soon(setattr, loop, "_stopping", True)
    loop.run_forever()
    assert not errors
    assert not backstop, "assigning _stopping did not stop the loop"
    loop._stopping = False
    assert loop._stopping is False
    loop._debug = True
    assert loop.get_debug() is True
    loop._debug = False
    assert loop.get_debug() is False
