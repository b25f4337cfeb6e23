"""call_soon / call_later / call_at / call_soon_threadsafe, handles, time,
contextvars."""

import asyncio
import contextvars
import functools
import random
import threading
import time

import pytest

from conftest import run

# Stock asyncio may run a timer up to its clock resolution early.
EPS = 1e-6


def test_call_soon_fifo(loop):
    out = []
    for i in range(100):
        loop.call_soon(out.append, i)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == list(range(100))


def test_call_soon_args(loop):
    out = []

    def cb(*args):
        out.append(args)

    loop.call_soon(cb)
    loop.call_soon(cb, 1)
    loop.call_soon(cb, 1, "two", None)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == [(), (1,), (1, "two", None)]


def test_call_soon_partial_and_bound_method(loop):
    out = []

    class Obj:
        def meth(self, x):
            out.append(("meth", x))

    loop.call_soon(functools.partial(out.append, "partial"))
    loop.call_soon(Obj().meth, 5)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ["partial", ("meth", 5)]


def test_call_soon_returns_handle(loop):
    h = loop.call_soon(lambda: None)
    assert not h.cancelled()
    h.cancel()
    assert h.cancelled()


def test_callbacks_scheduled_during_turn_run_next_turn(loop):
    out = []

    def a():
        out.append("a")
        loop.call_soon(out.append, "a-child")

    def b():
        out.append("b")
        loop.call_soon(out.append, "b-child")

    loop.call_soon(a)
    loop.call_soon(b)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ["a", "b"]
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ["a", "b", "a-child", "b-child"]


def test_call_soon_non_callable_debug_raises(loop):
    loop.set_debug(True)
    with pytest.raises(TypeError):
        loop.call_soon(1)
    with pytest.raises(TypeError):
        loop.call_soon("not callable")


@pytest.mark.parametrize("method", ["call_soon", "call_soon_threadsafe", "call_later", "call_at"])
def test_non_callable_is_reported_when_it_runs(loop, method):
    # Outside debug mode asyncio does not check callability when scheduling:
    # the call returns a handle and the TypeError reaches the exception
    # handler when the handle runs (sanic's tests schedule a Task this way).
    errors = []
    loop.set_exception_handler(lambda l, ctx: errors.append(ctx))
    args = {"call_later": (0,), "call_at": (loop.time(),)}.get(method, ())
    bad = object()
    handle = getattr(loop, method)(*args, bad)
    assert isinstance(handle, asyncio.Handle)
    assert not errors
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert len(errors) == 1
    assert errors[0]["message"].startswith("Exception in callback ")
    assert errors[0]["handle"] is handle
    assert isinstance(errors[0]["exception"], TypeError)
    assert "not callable" in str(errors[0]["exception"])


def test_call_soon_coroutine_debug_raises(loop):
    loop.set_debug(True)

    async def coro_fn():
        pass

    with pytest.raises(TypeError, match="coroutines cannot be used with "
                                        "call_soon()"):
        loop.call_soon(coro_fn)
    coro = coro_fn()
    try:
        with pytest.raises(TypeError, match="coroutines cannot be used with "
                                            "call_soon()"):
            loop.call_soon(coro)
    finally:
        coro.close()


def test_call_later_and_call_at_coroutine_debug_raises(loop):
    loop.set_debug(True)

    async def coro_fn():
        pass

    # (stock asyncio names call_at() here, as call_later delegates to it)
    with pytest.raises(TypeError, match="coroutines cannot be used with "):
        loop.call_later(0.1, coro_fn)
    with pytest.raises(TypeError, match="coroutines cannot be used with "
                                        "call_at()"):
        loop.call_at(loop.time() + 1, coro_fn)
    with pytest.raises(TypeError, match="coroutines cannot be used with "
                                        "call_soon_threadsafe()"):
        loop.call_soon_threadsafe(coro_fn)


def test_call_later_none_delay_raises(loop):
    with pytest.raises(TypeError):
        loop.call_later(None, lambda: None)


def test_call_at_none_when_raises(loop):
    with pytest.raises(TypeError):
        loop.call_at(None, lambda: None)


def test_call_later_fires_not_before_delay(loop):
    fired = []
    t0 = loop.time()
    loop.call_later(0.05, lambda: fired.append(loop.time()))
    loop.call_later(0.06, loop.stop)
    run_guard = loop.call_later(5, loop.stop)
    loop.run_forever()
    run_guard.cancel()
    assert len(fired) == 1
    assert fired[0] - t0 >= 0.05 - EPS


def test_call_later_zero_and_negative_delay(loop):
    out = []
    loop.call_later(0, out.append, "zero")
    loop.call_later(-1, out.append, "negative")
    loop.call_later(0.01, loop.stop)
    guard = loop.call_later(5, loop.stop)
    loop.run_forever()
    guard.cancel()
    assert sorted(out) == ["negative", "zero"]
    # Negative delay means an earlier deadline.
    assert out == ["negative", "zero"]


def test_negative_delay_timer_runs_after_ready_callbacks(loop):
    # A past-due timer is moved to the ready queue at the start of the next
    # iteration, so call_soon callbacks already queued run first.
    out = []
    loop.call_later(-10, out.append, "timer")
    loop.call_soon(out.append, "soon")
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert out == ["soon", "timer"]


def test_call_at_runs_at_deadline(loop):
    fired = []
    when = loop.time() + 0.03
    h = loop.call_at(when, lambda: fired.append(loop.time()))
    assert h.when() == when
    loop.call_at(when + 0.01, loop.stop)
    loop.run_forever()
    assert len(fired) == 1
    assert fired[0] >= when - EPS


def test_timers_ordered_by_deadline_then_scheduling_order(loop):
    # (A few timers with equal deadlines run in scheduling order on stock
    # asyncio; with many, its heap stops guaranteeing that.)
    out = []
    base = loop.time() + 0.02
    loop.call_at(base + 0.02, out.append, "c")
    loop.call_at(base, out.append, "a1")
    loop.call_at(base + 0.01, out.append, "b")
    loop.call_at(base, out.append, "a2")
    loop.call_at(base, out.append, "a3")
    loop.call_at(base + 0.03, loop.stop)
    loop.run_forever()
    assert out == ["a1", "a2", "a3", "b", "c"]


def test_call_later_ordering(loop):
    out = []
    for delay in (0.03, 0.01, 0.02, 0.0):
        loop.call_later(delay, out.append, delay)
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert out == [0.0, 0.01, 0.02, 0.03]


def test_cancelled_timer_never_runs(loop):
    out = []
    h1 = loop.call_later(0.01, out.append, "cancelled")
    h2 = loop.call_later(0.01, out.append, "kept")
    h1.cancel()
    assert h1.cancelled()
    assert not h2.cancelled()
    loop.call_later(0.03, loop.stop)
    loop.run_forever()
    assert out == ["kept"]


def test_cancelled_call_soon_never_runs(loop):
    out = []
    h = loop.call_soon(out.append, "no")
    loop.call_soon(out.append, "yes")
    h.cancel()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ["yes"]


def test_cancel_handle_from_earlier_callback_same_iteration(loop):
    out = []
    handles = {}

    def first():
        out.append("first")
        handles["second"].cancel()

    loop.call_soon(first)
    handles["second"] = loop.call_soon(out.append, "second")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ["first"]


def test_cancel_is_idempotent(loop):
    h = loop.call_later(10, lambda: None)
    h.cancel()
    h.cancel()
    assert h.cancelled()
    h2 = loop.call_soon(lambda: None)
    h2.cancel()
    h2.cancel()
    assert h2.cancelled()


def test_many_cancelled_timers_do_not_block_stop(loop):
    handles = [loop.call_later(100 + i, lambda: None) for i in range(500)]
    for h in handles:
        h.cancel()
    loop.call_later(0.01, loop.stop)
    t0 = time.monotonic()
    loop.run_forever()
    assert time.monotonic() - t0 < 5


def test_timer_handle_when(loop):
    t0 = loop.time()
    h = loop.call_later(10, lambda: None)
    t1 = loop.time()
    assert t0 + 10 <= h.when() <= t1 + 10
    when = loop.time() + 123.456
    h2 = loop.call_at(when, lambda: None)
    assert h2.when() == when
    h.cancel()
    h2.cancel()


def test_handle_types(loop):
    # Documented: call_soon returns an asyncio.Handle, call_later/call_at an
    # asyncio.TimerHandle.
    h = loop.call_soon(lambda: None)
    th = loop.call_later(10, lambda: None)
    ta = loop.call_at(loop.time() + 10, lambda: None)
    assert isinstance(h, asyncio.Handle)
    assert isinstance(th, asyncio.TimerHandle)
    assert isinstance(ta, asyncio.TimerHandle)
    assert isinstance(th, asyncio.Handle)
    assert isinstance(loop.call_soon_threadsafe(lambda: None), asyncio.Handle)
    for x in (h, th, ta):
        x.cancel()


@pytest.mark.skipif(not hasattr(asyncio.Handle, "get_context"),
                    reason="Handle.get_context() is new in Python 3.12")
def test_handle_get_context(loop):
    ctx = contextvars.copy_context()
    h = loop.call_soon(lambda: None, context=ctx)
    assert h.get_context() is ctx
    th = loop.call_later(10, lambda: None, context=ctx)
    assert th.get_context() is ctx
    h_default = loop.call_soon(lambda: None)
    assert isinstance(h_default.get_context(), contextvars.Context)
    for x in (h, th, h_default):
        x.cancel()


def test_timer_handle_comparisons(loop):
    def cb():
        pass

    base = loop.time() + 100
    h1 = loop.call_at(base, cb)
    h2 = loop.call_at(base + 1, cb)
    assert h1 < h2
    assert h1 <= h2
    assert h2 > h1
    assert h2 >= h1
    assert not h2 < h1
    assert h1 != h2
    assert h1 == h1
    # handles are hashable
    assert len({h1, h2}) == 2
    assert {h1: 1}[h1] == 1
    for h in (h1, h2):
        h.cancel()


def test_timer_handle_equality_same_when(loop):
    # asyncio.TimerHandle.__eq__ compares (when, callback, args, cancelled);
    # __hash__ is hash(when).
    def cb(*a):
        pass

    def other(*a):
        pass

    when = loop.time() + 100
    h1 = loop.call_at(when, cb, 1)
    h2 = loop.call_at(when, cb, 1)
    h3 = loop.call_at(when, other, 1)
    h4 = loop.call_at(when, cb, 2)
    assert h1 is not h2
    assert h1 == h2
    assert not (h1 != h2)
    assert hash(h1) == hash(h2)
    assert h1 != h3
    assert h1 != h4
    assert not (h1 < h2) and not (h2 < h1)
    assert h1 <= h2 and h2 >= h1
    h2.cancel()
    assert h1 != h2  # cancelled state participates in equality
    for h in (h1, h3, h4):
        h.cancel()


def test_timer_handle_compare_with_other_types(loop):
    h = loop.call_later(100, lambda: None)
    try:
        assert (h == 1) is False
        assert (h != 1) is True
        with pytest.raises(TypeError):
            h < 1
    finally:
        h.cancel()


def test_time_monotonic_and_seconds(loop):
    t1 = loop.time()
    time.sleep(0.02)
    t2 = loop.time()
    assert isinstance(t1, float)
    assert t2 - t1 >= 0.015  # seconds, not milliseconds
    assert t2 - t1 < 10      # ... and not microseconds/nanoseconds
    values = [loop.time() for _ in range(1000)]
    assert values == sorted(values)


def test_time_sub_millisecond_resolution(loop):
    smallest = None
    prev = loop.time()
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline:
        now = loop.time()
        if now != prev:
            d = now - prev
            if smallest is None or d < smallest:
                smallest = d
            prev = now
            if smallest < 0.0005:
                break
    assert smallest is not None
    assert 0 < smallest < 0.001


def test_time_advances_while_running(loop):
    async def main():
        t1 = loop.time()
        await asyncio.sleep(0.02)
        t2 = loop.time()
        return t2 - t1

    assert run(loop, main()) >= 0.02



def test_time_follows_a_patched_time_monotonic(loop):
    """asyncio's loop.time() calls time.monotonic(), so suites that patch it
    (mock.patch, freezegun) move the loop's clock, and timers with it."""
    from unittest import mock

    fired = []

    async def main():
        with mock.patch("time.monotonic", return_value=1000.0):
            assert loop.time() == 1000.0
            loop.call_at(1000.5, fired.append, "late")
            loop.call_at(999.0, fired.append, "due")
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert fired == ["due"]
        assert loop.time() < 1000.0 or time.monotonic() >= 1000.0
        return loop.time()

    # Not run(): on 3.12+ its wait_for timeout follows the patched clock too.
    t = loop.run_until_complete(main())
    assert abs(t - time.monotonic()) < 1.0


def test_time_monotonic_patched_while_the_loop_sleeps(loop):
    """A fast-forwarded clock wakes a sleeping timer on the next turn."""
    from unittest import mock

    async def main():
        base = time.monotonic()
        clock = mock.Mock(return_value=base)
        with mock.patch("time.monotonic", clock):
            waiter = asyncio.ensure_future(asyncio.sleep(3600, "woke"))
            await asyncio.sleep(0)
            clock.return_value = base + 7200
            # The poll still sleeps by the old deadline: wake it.
            loop.call_soon(lambda: None)
            return await asyncio.wait_for(waiter, 3600 * 3)

    # Not run(): on 3.12+ its wait_for timeout follows the patched clock too.
    assert loop.run_until_complete(main()) == "woke"


def test_scheduled_lists_the_pending_timer_handles(loop):
    """loop._scheduled holds the pending TimerHandles, earliest first (a
    heapq heap, as asyncio's is); some suites fire them by hand."""
    async def main():
        now = loop.time()
        later = loop.call_at(now + 200, lambda: None)
        soon = loop.call_at(now + 100, lambda: None)
        last = loop.call_at(now + 300, lambda: None)
        scheduled = list(loop._scheduled)
        assert all(isinstance(h, asyncio.TimerHandle) for h in scheduled)
        mine = sorted((h for h in scheduled if h in (soon, later, last)), key=asyncio.TimerHandle.when)
        assert mine == [soon, later, last]
        whens = [h.when() for h in scheduled]
        assert all(whens[(i - 1) // 2] <= whens[i] for i in range(1, len(whens)))
        # Firing one by hand and cancelling it, as zeroconf's tests do.
        got = []
        h = loop.call_at(now + 50, got.append, "by hand")
        (mine,) = [x for x in loop._scheduled if x is h]
        mine._run()
        mine.cancel()
        assert got == ["by hand"]
        for t in (soon, later, last):
            t.cancel()

    run(loop, main())


def test_call_soon_threadsafe_wakes_blocked_loop(loop):
    loop.call_later(10, loop.stop)  # long pending timer; also a hang guard

    def poke():
        time.sleep(0.05)
        loop.call_soon_threadsafe(loop.stop)

    th = threading.Thread(target=poke)
    t0 = time.monotonic()
    th.start()
    loop.run_forever()
    elapsed = time.monotonic() - t0
    th.join()
    assert elapsed < 2


def test_call_soon_threadsafe_from_many_threads(loop):
    N = 8
    M = 50
    out = []
    done = []

    def worker(i):
        for j in range(M):
            loop.call_soon_threadsafe(out.append, (i, j))
        loop.call_soon_threadsafe(done.append, i)

    async def main():
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(N)]
        for t in threads:
            t.start()
        while len(done) < N:
            await asyncio.sleep(0.005)
        for t in threads:
            t.join()

    run(loop, main())
    assert len(out) == N * M
    for i in range(N):  # per-thread FIFO
        assert [j for (k, j) in out if k == i] == list(range(M))


def test_call_soon_threadsafe_args_and_handle(loop):
    out = []
    h = loop.call_soon_threadsafe(out.append, "x")
    h2 = loop.call_soon_threadsafe(out.append, "cancelled")
    assert not h.cancelled()
    h2.cancel()
    assert h2.cancelled()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ["x"]


def test_huge_delay_timer_does_not_block_or_overflow(loop):
    out = []
    handles = [loop.call_later(1e10, out.append, "never"),
               loop.call_at(loop.time() + 1e12, out.append, "never"),
               loop.call_later(float("inf"), out.append, "never")]
    loop.call_soon(loop.stop)
    t0 = time.monotonic()
    loop.run_forever()
    assert time.monotonic() - t0 < 2
    assert out == []
    # With only huge timers pending, a thread-safe wakeup still works.
    loop.call_later(10, loop.stop)
    th = threading.Timer(0.05, loop.call_soon_threadsafe, (loop.stop,))
    th.start()
    t0 = time.monotonic()
    loop.run_forever()
    th.join()
    assert time.monotonic() - t0 < 2
    for h in handles:
        h.cancel()


def test_timer_cancelled_by_earlier_timer_same_tick(loop):
    out = []
    handles = {}
    when = loop.time() + 0.01

    def first():
        out.append("first")
        handles["second"].cancel()

    loop.call_at(when, first)
    handles["second"] = loop.call_at(when, out.append, "second")
    loop.call_at(when, out.append, "third")
    loop.call_at(when + 0.01, loop.stop)
    loop.run_forever()
    assert out == ["first", "third"]


def test_timer_scheduled_from_timer_runs(loop):
    out = []

    def first():
        out.append(("first", loop.time()))
        loop.call_later(0.01, lambda: out.append(("second", loop.time())))

    loop.call_later(0.01, first)
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert [n for n, _ in out] == ["first", "second"]
    assert out[1][1] - out[0][1] >= 0.01 - EPS


def test_many_timers_fire_in_deadline_order(loop):
    # Only the deadline order is checked here: stock asyncio keeps timers in
    # a heap, which does not order equal deadlines by scheduling order once
    # the heap is large.
    rng = random.Random(1234)
    base = loop.time() + 0.01
    when_of = {}
    out = []
    handles = []
    for i in range(2500):
        when = base + rng.randrange(50) * 0.001
        h = loop.call_at(when, out.append, i)
        when_of[i] = when
        handles.append(h)
    cancelled = set(range(2000, 2500, 2))
    for i in cancelled:
        handles[i].cancel()
    loop.call_at(base + 0.06, loop.stop)
    loop.run_forever()
    assert sorted(out) == sorted(set(range(2500)) - cancelled)
    whens = [when_of[i] for i in out]
    assert whens == sorted(whens)


def test_handle_repr(loop):
    def my_callback_name():
        pass

    h = loop.call_soon(my_callback_name)
    th = loop.call_later(100, my_callback_name)
    r, tr = repr(h), repr(th)
    assert r.startswith("<Handle") and r.endswith(">")
    assert "my_callback_name" in r
    assert tr.startswith("<TimerHandle") and "when=" in tr
    assert "my_callback_name" in tr
    h.cancel()
    th.cancel()
    assert "cancelled" in repr(h)
    assert "cancelled" in repr(th)


def test_sleep0_round_robin(loop):
    out = []

    async def worker(name):
        for i in range(3):
            out.append((name, i))
            await asyncio.sleep(0)

    async def main():
        await asyncio.gather(worker("a"), worker("b"), worker("c"))

    run(loop, main())
    assert out == [(n, i) for i in range(3) for n in "abc"]


def test_busy_callbacks_do_not_starve_timers_and_io(loop):
    import socket
    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        state = {"spins": 0, "timer": False, "io": False}

        def spin():
            state["spins"] += 1
            if not (state["timer"] and state["io"]):
                if state["spins"] > 2_000_000:
                    loop.stop()
                    return
                loop.call_soon(spin)
            else:
                loop.stop()

        def on_read():
            a.recv(10)
            loop.remove_reader(a)
            state["io"] = True

        loop.add_reader(a, on_read)
        loop.call_later(0.01, state.__setitem__, "timer", True)
        loop.call_soon(spin)
        b.send(b"x")
        loop.run_forever()
        assert state["timer"] and state["io"], state
    finally:
        loop.remove_reader(a)
        a.close()
        b.close()


# ---------------------------------------------------------------------------
# contextvars
# ---------------------------------------------------------------------------

VAR = contextvars.ContextVar("VAR", default="default")


def test_callback_runs_in_copy_of_current_context(loop):
    seen = []
    token = VAR.set("at-schedule")
    try:
        loop.call_soon(lambda: seen.append(VAR.get()))
        loop.call_later(0.001, lambda: seen.append(VAR.get()))
    finally:
        VAR.reset(token)
    token = VAR.set("after-schedule")  # must not be seen by the callbacks
    try:
        loop.call_later(0.01, loop.stop)
        loop.run_forever()
    finally:
        VAR.reset(token)
    assert seen == ["at-schedule", "at-schedule"]


def test_callback_runs_in_explicit_context(loop):
    ctx = contextvars.Context()
    ctx.run(VAR.set, "explicit")
    seen = []
    loop.call_soon(lambda: seen.append(VAR.get()), context=ctx)
    loop.call_later(0.001, lambda: seen.append(VAR.get()), context=ctx)
    loop.call_at(loop.time(), lambda: seen.append(VAR.get()), context=ctx)
    loop.call_soon_threadsafe(lambda: seen.append(VAR.get()), context=ctx)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert seen.count("explicit") == 4 and len(seen) == 4


def test_callback_context_changes_do_not_leak(loop):
    seen = []

    def setter():
        VAR.set("inside")
        seen.append(VAR.get())

    loop.call_soon(setter)
    loop.call_soon(lambda: seen.append(VAR.get()))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["inside", "default"]
    assert VAR.get() == "default"


def test_callback_changes_persist_in_explicit_context(loop):
    ctx = contextvars.copy_context()
    loop.call_soon(VAR.set, "persisted", context=ctx)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert ctx[VAR] == "persisted"
    assert VAR.get() == "default"


def test_same_context_reused_by_two_callbacks(loop):
    ctx = contextvars.copy_context()
    seen = []
    loop.call_soon(VAR.set, "first", context=ctx)
    loop.call_soon(lambda: seen.append(VAR.get()), context=ctx)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["first"]


def test_task_context_isolated(loop):
    async def child():
        VAR.set("child")
        return VAR.get()

    async def main():
        VAR.set("main")
        r = await loop.create_task(child())
        return r, VAR.get()

    assert run(loop, main()) == ("child", "main")
    assert VAR.get() == "default"


# ---------------------------------------------------------------------------
# Garbage collection of handles and their contexts
# ---------------------------------------------------------------------------

OWNER = contextvars.ContextVar("OWNER")


class _Owner:
    """Keeps its own handle, and is itself in the context that handle
    captured: owner -> handle -> context -> owner, a cycle only the
    collector can free (a common shape: a request in a contextvar that
    keeps its timeout handle)."""

    def callback(self):
        pass


def _owner_cycle(loop, schedule):
    import weakref

    def make():
        owner = _Owner()
        OWNER.set(owner)
        owner.handle = schedule(loop, owner)
        return weakref.ref(owner)

    # A fresh context, so the contextvar does not leak into the test's own.
    return contextvars.Context().run(make)


@pytest.mark.parametrize("how", ["cancelled_timer", "ran", "cancelled_soon"])
def test_handle_context_cycle_is_collected(loop, how):
    import gc

    if how == "cancelled_timer":
        ref = _owner_cycle(loop, lambda lp, o: lp.call_later(3600, o.callback))
        ref().handle.cancel()
    elif how == "ran":
        ref = _owner_cycle(loop, lambda lp, o: lp.call_soon(o.callback))
    else:
        ref = _owner_cycle(loop, lambda lp, o: lp.call_soon(o.callback))
        ref().handle.cancel()
    # Let the loop run (or drop) the handle and purge cancelled timers.
    for _ in range(3):
        loop.call_soon(loop.stop)
        loop.run_forever()
    gc.collect()
    assert ref() is None, "owner -> handle -> context -> owner cycle leaked"


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("how", ["soon", "timer"])
def test_handle_args_cycle_is_collected(loop, how, debug):
    # owner -> handle -> args -> owner: the argument tuple must be seen by
    # the collector (debug mode keeps the callback after it ran).
    import gc
    import weakref

    loop.set_debug(debug)

    class Owner:
        pass

    def make():
        owner = Owner()
        if how == "soon":
            owner.handle = loop.call_soon(lambda o: None, owner)
        else:
            owner.handle = loop.call_later(0, lambda o: None, owner)
        return weakref.ref(owner)

    ref = make()
    for _ in range(3):
        loop.call_soon(loop.stop)
        loop.run_forever()
    gc.collect()
    assert ref() is None, "owner -> handle -> args -> owner cycle leaked"
    # A handle whose args were handed out is still collected with them.
    owner = Owner()
    owner.handle = loop.call_later(3600, lambda o: None, owner)
    assert owner.handle._args == (owner,)
    owner.handle.cancel()
    ref = weakref.ref(owner)
    del owner
    loop.call_soon(loop.stop)
    loop.run_forever()
    gc.collect()
    assert ref() is None


def test_handle_context_cycle_collected_after_close(loop_factory):
    import gc

    lp = loop_factory()
    ref = _owner_cycle(lp, lambda l, o: l.call_later(3600, o.callback))
    lp.close()
    gc.collect()
    assert ref() is None, "a pending handle's cycle leaked past loop.close()"


def test_default_context_kept_after_run(loop):
    # The copy a handle captured stays its context after the callback ran,
    # with what the callback set in it.
    h = loop.call_soon(VAR.set, "set-inside")
    loop.call_soon(loop.stop)
    loop.run_forever()
    ctx = h._context
    assert isinstance(ctx, contextvars.Context)
    assert ctx[VAR] == "set-inside"
    assert h._context is ctx
    assert VAR.get() == "default"


def test_collections_while_callbacks_are_queued(loop):
    # Full collections while thousands of handles (kept and not kept by the
    # caller, with captured and explicit contexts) wait in the queue and
    # while they run: nothing is freed early, every callback sees its value.
    import gc

    seen = []
    kept = []

    def cb(i):
        seen.append((i, VAR.get()))
        if i % 500 == 0:
            gc.collect()

    ctx = contextvars.copy_context()
    for i in range(3000):
        token = VAR.set(f"v{i}")
        try:
            if i % 3 == 0:
                kept.append(loop.call_soon(cb, i))
            elif i % 3 == 1:
                loop.call_soon(cb, i)
            else:
                kept.append(loop.call_later(0, cb, i))
        finally:
            VAR.reset(token)
        if i % 1000 == 0:
            gc.collect()
    loop.call_soon(lambda: ctx.run(gc.collect))
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    gc.collect()
    assert sorted(seen) == sorted((i, f"v{i}") for i in range(3000))
    assert all(h._context.get(VAR) in (f"v{i}" for i in range(3000)) for h in kept[:5])


# ---------------------------------------------------------------------------
# Calling conventions of the hot methods (ferroloop binds direct C entries)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["call_soon", "call_soon_threadsafe"])
def test_call_soon_argument_forms(loop, name):
    import inspect

    method = getattr(loop, name)
    assert method.__self__ is loop
    assert str(inspect.signature(method)) == "(callback, *args, context=None)"
    seen = []
    method(seen.append, "positional")
    method(callback=lambda: seen.append("keyword"))
    ctx = contextvars.Context()
    ctx.run(VAR.set, "in-ctx")
    method(lambda: seen.append(VAR.get()), context=ctx)
    method(lambda *a: seen.append(a), 1, 2, 3)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["positional", "keyword", "in-ctx", (1, 2, 3)]

    with pytest.raises(TypeError, match="missing 1 required positional argument: 'callback'"):
        method()
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        method(print, bogus=1)
    with pytest.raises(TypeError, match="multiple values for argument 'callback'"):
        method(print, callback=print)
    # Unbound, through the class, as some libraries call it.
    h = type(loop).call_soon(loop, seen.append, "via-class")
    assert isinstance(h, asyncio.Handle)
    h.cancel()


def test_call_soon_closed_loop_and_debug_flag(loop_factory):
    lp = loop_factory()
    assert lp.get_debug() is False
    lp.set_debug(True)
    assert lp.get_debug() is True
    t0 = lp.time()
    assert isinstance(t0, float) and lp.time() >= t0
    lp.close()
    with pytest.raises(RuntimeError, match="closed"):
        lp.call_soon(print)
    with pytest.raises(RuntimeError, match="closed"):
        lp.call_soon_threadsafe(print)


def test_call_at_keeps_the_deadline_object(loop):
    # An int deadline stays an int (aiohttp rounds deadlines with ceil()).
    import math

    when = math.ceil(loop.time() + 100)
    h = loop.call_at(when, lambda: None)
    assert h.when() == when and type(h.when()) is int and type(h._when) is int
    later = loop.call_later(100, lambda: None)
    assert type(later.when()) is float
    assert later < h or later > h or later == h  # still comparable
    h.cancel()
    later.cancel()


def test_patched_loop_time_drives_timers(loop):
    # mock.patch.object(loop, "time") steers scheduling on the stock loop
    # (BaseEventLoop asks self.time()); test suites rely on it.
    from unittest import mock

    async def main():
        # A whole number: now + 1000 + 2600 == now + 3600 exactly, so the
        # two timers' order is not left to the last bit of a float sum.
        now = float(int(loop.time()))
        fired = []
        with mock.patch.object(loop, "time") as t:
            t.return_value = now
            h1 = loop.call_at(now + 3600, fired.append, "call_at")
            t.return_value = now + 1000
            h2 = loop.call_later(2600, fired.append, "call_later")
            assert h2.when() == now + 3600
            t.return_value = now + 3600  # an hour passes
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        assert fired == ["call_at", "call_later"]
        # Unpatched again: a far timer does not fire.
        h3 = loop.call_later(3600, fired.append, "late")
        await asyncio.sleep(0.01)
        assert fired == ["call_at", "call_later"]
        for h in (h1, h2, h3):
            h.cancel()

    # Not run(): its wait_for timeout would follow the patched clock too.
    loop.run_until_complete(main())


def test_subclass_time_override_drives_timers(loop_factory, loop_kind):
    # A loop subclass with its own clock: timers follow it.
    import ferroloop

    base = asyncio.SelectorEventLoop if loop_kind == "asyncio" else ferroloop.Loop

    class FastClock(base):
        offset = 0.0

        def time(self):
            return super().time() + self.offset

    lp = FastClock()
    try:
        fired = []
        lp.call_later(3600, fired.append, 1)
        lp.offset = 3600.0
        lp.call_soon(lp.stop)
        lp.run_forever()
        lp.call_later(0.01, lp.stop)
        lp.run_forever()
        assert fired == [1]
    finally:
        lp.close()


# ---- handles reused after they ran --------------------------------------------
# A loop may reuse the object of a finished handle nobody holds (ferroloop
# does); these pin down that a reused handle is indistinguishable from a new
# one and that a handle user code still holds is never reused.


def _turn(loop):
    loop.call_soon(loop.stop)
    loop.run_forever()


def test_held_handle_stays_distinct_after_it_ran(loop):
    ran = []
    held = [loop.call_soon(ran.append, i) for i in range(3000)]
    _turn(loop)
    # Cancelling a handle that already ran must not touch later callbacks.
    fresh = [loop.call_soon(ran.append, -i) for i in range(3000)]
    assert {id(h) for h in held}.isdisjoint(id(h) for h in fresh)
    for h in held:
        h.cancel()
    _turn(loop)
    assert ran == list(range(3000)) + [-i for i in range(3000)]
    assert not any(h.cancelled() for h in fresh)


def test_weakly_held_handle_is_not_reused(loop):
    import weakref

    h = loop.call_soon(lambda: None)
    ref = weakref.ref(h)
    del h
    _turn(loop)
    later = [loop.call_soon(lambda: None) for _ in range(50)]
    assert ref() is None or all(ref() is not h for h in later)
    _turn(loop)


def test_reused_handles_run_in_their_own_context(loop):
    var = contextvars.ContextVar("var", default="unset")
    seen = []

    def cb(tag):
        seen.append((tag, var.get()))
        var.set("changed by " + tag)

    for round_ in range(3):
        # Drop every handle at once so the loop may reuse their objects.
        for i in range(200):
            token = var.set(f"r{round_}-{i}")
            loop.call_soon(cb, f"{round_}-{i}")
            var.reset(token)
        ctx = contextvars.copy_context()
        ctx.run(var.set, "given")
        h = loop.call_soon(cb, f"{round_}-given", context=ctx)
        assert not h.cancelled()
        assert h._context is ctx
        del h
        _turn(loop)
    want = []
    for round_ in range(3):
        want += [(f"{round_}-{i}", f"r{round_}-{i}") for i in range(200)]
        want.append((f"{round_}-given", "given"))
    assert seen == want
    assert var.get() == "unset"


def test_cancelled_unheld_handles_then_new_ones_run(loop):
    ran = []
    for i in range(100):
        loop.call_soon(ran.append, ("cancelled", i)).cancel()
    _turn(loop)
    hs = [loop.call_soon(ran.append, i) for i in range(100)]
    assert not any(h.cancelled() for h in hs)
    _turn(loop)
    assert ran == list(range(100))


def test_memory_kept_after_a_burst_of_callbacks_is_given_back(loop):
    # A loop may keep finished handles for reuse while turns are large, but
    # once turns shrink again that memory must be released.
    import tracemalloc

    async def main():
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            for _ in range(60_000):
                loop.call_soon(int)
            await asyncio.sleep(0)
            for _ in range(200):
                await asyncio.sleep(0)
            return tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()

    grown = run(loop, main())
    assert grown < 1024 * 1024, f"{grown} bytes still held after the burst"


def test_cancelled_timers_are_dropped_once_they_are_most_of_the_heap(loop):
    """asyncio's rule: with more than 100 timers queued, a turn rebuilds the
    heap once more than half are cancelled. Cancelling twice counts once, and
    a timer taken out of the heap is no longer `_scheduled`."""
    def turn():
        loop.call_soon(loop.stop)
        loop.run_forever()

    base = loop.time() + 1000
    timers = [loop.call_at(base + i, lambda: None) for i in range(300)]
    assert all(t._scheduled for t in timers)
    # 140 of 300 (not the earliest, which a turn drops anyway), each twice.
    for t in timers[150:290]:
        t.cancel()
        t.cancel()
    turn()
    assert len(loop._scheduled) == 300
    assert all(t._scheduled for t in timers)
    for t in timers[130:150]:  # now 160 of 300: more than half
        t.cancel()
    turn()
    assert len(loop._scheduled) == 140
    assert [t._scheduled for t in timers] == [not t.cancelled() for t in timers]
    for t in timers:
        t.cancel()
