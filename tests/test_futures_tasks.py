"""Futures, tasks, task factories and the asyncio high-level primitives
running on the loop."""

import asyncio
import contextvars

import pytest

from conftest import run

VAR = contextvars.ContextVar("ft_var", default="default")


def test_create_future(loop):
    fut = loop.create_future()
    assert type(fut) is asyncio.Future
    assert fut.get_loop() is loop
    assert not fut.done()
    fut.cancel()


def test_future_callbacks_run_via_loop(loop):
    fut = loop.create_future()
    out = []
    fut.add_done_callback(lambda f: out.append(f.result()))
    fut.set_result(5)
    assert out == []  # callbacks are scheduled, not called synchronously
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == [5]


def test_create_task(loop):
    async def coro():
        return "r"

    task = loop.create_task(coro())
    assert type(task) is asyncio.Task
    assert task.get_loop() is loop
    assert loop.run_until_complete(task) == "r"


def test_create_task_name(loop):
    async def coro():
        return asyncio.current_task().get_name()

    task = loop.create_task(coro(), name="my-task")
    assert task.get_name() == "my-task"
    assert loop.run_until_complete(task) == "my-task"
    task2 = loop.create_task(coro())
    assert task2.get_name().startswith("Task-")
    loop.run_until_complete(task2)


def test_create_task_context(loop):
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "task-ctx")

    async def coro():
        v = VAR.get()
        VAR.set("changed-inside")
        return v

    task = loop.create_task(coro(), context=ctx)
    assert loop.run_until_complete(task) == "task-ctx"
    assert ctx[VAR] == "changed-inside"
    assert VAR.get() == "default"


def test_create_task_non_coroutine(loop):
    with pytest.raises(TypeError):
        loop.create_task(lambda: None)


def test_create_task_argument_forms(loop):
    async def coro(v):
        return v

    # coro by keyword, name and context together, name=None explicitly.
    ctx = contextvars.copy_context()
    t1 = loop.create_task(coro=coro(1))
    t2 = loop.create_task(coro(2), name="both", context=ctx)
    t3 = loop.create_task(coro(3), name=None, context=None)
    assert t2.get_name() == "both"
    assert t3.get_name().startswith("Task-")
    assert loop.run_until_complete(asyncio.gather(t1, t2, t3)) == [1, 2, 3]
    refused = [coro(4), coro(5), coro(6)]
    with pytest.raises(TypeError):
        loop.create_task(refused[0], bogus=1)
    with pytest.raises(TypeError):
        loop.create_task()
    with pytest.raises(TypeError):
        loop.create_task(refused[1], refused[2])
    # The refused calls never wrapped their coroutines: close them.
    for c in refused:
        c.close()


# Keyword sets that reach loop.create_task (from asyncio.create_task,
# TaskGroup.create_task and users). Which ones a loop accepts, and what its
# task factory then receives, is the running Python's rule: 3.14 passes any
# keyword on as given, eager_start among them; before, name and context only.
CREATE_TASK_KEYWORDS = [
    {}, {"name": "n"}, {"context": None}, {"name": None, "context": "copy"},
    {"eager_start": True}, {"eager_start": False, "name": "e"}, {"bogus": 1},
]


def _create_task_outcome(loop, kwargs, with_factory, inside):
    """What one create_task call did: refused (TypeError) or the task's
    result and name, and the keywords the task factory got."""
    seen = []
    if with_factory:
        def factory(lp, coro, **kw):
            seen.append(sorted(kw))
            return asyncio.Task(coro, loop=lp, **kw)

        loop.set_task_factory(factory)
    kwargs = dict(kwargs)
    if kwargs.get("context") == "copy":
        kwargs["context"] = contextvars.copy_context()

    async def job():
        return 7

    def attempt():
        coro = job()
        try:
            return loop.create_task(coro, **kwargs)
        except TypeError:
            coro.close()
            return None

    async def from_inside():
        return attempt()

    # Inside a run, ferroloop's native create_task entry takes the call.
    task = run(loop, from_inside()) if inside else attempt()
    if task is None:
        got = "TypeError"
    else:
        got = run(loop, task), task.get_name() if kwargs.get("name") else None
    return sorted(kwargs), with_factory, inside, got, seen


def test_create_task_keywords_follow_this_python(ferroloop):
    outcomes = {}
    for kind, make in (("asyncio", asyncio.SelectorEventLoop),
                       ("ferroloop", ferroloop.new_event_loop)):
        outcomes[kind] = []
        for with_factory in (False, True):
            for inside in (False, True):
                for kwargs in CREATE_TASK_KEYWORDS:
                    lp = make()
                    try:
                        outcomes[kind].append(
                            _create_task_outcome(lp, kwargs, with_factory, inside))
                    finally:
                        lp.close()
    assert outcomes["ferroloop"] == outcomes["asyncio"]


def test_create_task_on_closed_loop_refused(loop_factory):
    lp = loop_factory()
    lp.close()

    async def coro():
        pass

    c = coro()
    with pytest.raises(RuntimeError, match="closed"):
        lp.create_task(c)
    c.close()


def test_create_task_uses_patched_task_class(loop, monkeypatch):
    from asyncio import tasks

    made = []

    class MyTask(asyncio.Task):
        def __init__(self, *args, **kwargs):
            made.append(kwargs.get("name"))
            super().__init__(*args, **kwargs)

    async def coro():
        return 7

    monkeypatch.setattr(tasks, "Task", MyTask)
    t = loop.create_task(coro(), name="patched")
    assert type(t) is MyTask
    assert made == ["patched"]
    assert loop.run_until_complete(t) == 7


def test_create_task_overridden_in_subclass(loop_factory):
    lp = loop_factory()
    calls = []
    base = type(lp)

    class Sub(base):
        def create_task(self, coro, **kw):
            calls.append(kw)
            return super().create_task(coro, **kw)

    lp.close()
    sub = Sub()
    try:
        async def coro():
            return "sub"

        assert sub.run_until_complete(sub.create_task(coro(), name="n")) == "sub"
        assert calls and calls[0] == {"name": "n"}
    finally:
        sub.close()


def test_create_task_debug_trims_source_traceback(loop):
    loop.set_debug(True)

    async def coro():
        pass

    t = loop.create_task(coro())  # this line must be the last frame
    tb = t._source_traceback
    assert tb and tb[-1][2] == "test_create_task_debug_trims_source_traceback"
    loop.run_until_complete(t)


def test_create_future_follows_patches_and_overrides(loop, loop_factory, monkeypatch):
    from asyncio import futures

    fut = loop.create_future()
    assert type(fut) is asyncio.Future and fut.get_loop() is loop

    class MyFuture(asyncio.Future):
        pass

    monkeypatch.setattr(futures, "Future", MyFuture)
    assert type(loop.create_future()) is MyFuture
    monkeypatch.undo()

    probe = loop_factory()
    base = type(probe)
    probe.close()

    class Sub(base):
        def create_future(self):
            return MyFuture(loop=self)

    sub = Sub()
    try:
        assert type(sub.create_future()) is MyFuture
    finally:
        sub.close()


def test_task_factory(loop):
    calls = []

    def factory(l, coro, **kwargs):
        calls.append((l, kwargs))
        return asyncio.Task(coro, loop=l, **kwargs)

    assert loop.get_task_factory() is None
    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory

    async def coro():
        return VAR.get()

    t = loop.create_task(coro(), name="factory-named")
    assert t.get_name() == "factory-named"
    assert loop.run_until_complete(t) == "default"
    assert calls == [(loop, {})]  # legacy two-argument call without context

    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "via-factory")
    t2 = loop.create_task(coro(), context=ctx)
    assert loop.run_until_complete(t2) == "via-factory"
    assert calls[1] == (loop, {"context": ctx})

    loop.set_task_factory(None)
    assert loop.get_task_factory() is None
    t3 = loop.create_task(coro())
    loop.run_until_complete(t3)
    assert len(calls) == 2


def test_task_factory_used_by_ensure_future_and_gather(loop):
    created = []

    def factory(l, coro, **kwargs):
        t = asyncio.Task(coro, loop=l, **kwargs)
        created.append(t)
        return t

    loop.set_task_factory(factory)

    async def leaf(i):
        return i

    async def main():
        return await asyncio.gather(leaf(1), leaf(2))

    assert loop.run_until_complete(main()) == [1, 2]
    assert len(created) == 3  # main + two leaves


@pytest.mark.parametrize("bad", [1, "factory", object()])
def test_set_task_factory_non_callable(loop, bad):
    with pytest.raises(TypeError):
        loop.set_task_factory(bad)
    assert loop.get_task_factory() is None


def test_all_tasks_and_current_task(loop):
    async def sleeper():
        await asyncio.sleep(10)

    async def main():
        me = asyncio.current_task()
        assert me is asyncio.current_task(loop)
        t = loop.create_task(sleeper())
        await asyncio.sleep(0)
        tasks = asyncio.all_tasks(loop)
        assert me in tasks and t in tasks
        assert asyncio.all_tasks() == tasks
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert t not in asyncio.all_tasks()
        return me

    me = run(loop, main())
    assert me.done()
    assert asyncio.all_tasks(loop) == set()
    assert asyncio.current_task(loop) is None


def test_current_task_in_plain_callback_is_none(loop):
    seen = []
    loop.call_soon(lambda: seen.append(asyncio.current_task()))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [None]


def test_cancellation_propagates(loop):
    events = []

    async def inner():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            events.append("inner-cancelled")
            raise

    async def outer():
        try:
            await inner()
        except asyncio.CancelledError:
            events.append("outer-cancelled")
            raise

    async def main():
        t = loop.create_task(outer())
        await asyncio.sleep(0.01)
        t.cancel("why")
        with pytest.raises(asyncio.CancelledError):
            await t
        assert t.cancelled()
        return events

    assert run(loop, main()) == ["inner-cancelled", "outer-cancelled"]


def test_cancel_task_waiting_on_future(loop):
    async def main():
        fut = loop.create_future()

        async def waiter():
            return await fut

        t = loop.create_task(waiter())
        await asyncio.sleep(0)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert fut.cancelled()

    run(loop, main())


def test_gather(loop):
    async def val(i, d):
        await asyncio.sleep(d)
        return i

    async def main():
        return await asyncio.gather(val(1, 0.02), val(2, 0.0), val(3, 0.01))

    assert run(loop, main()) == [1, 2, 3]


def test_gather_return_exceptions(loop):
    async def bad():
        raise ValueError("x")

    async def good():
        return 1

    async def main():
        return await asyncio.gather(bad(), good(), return_exceptions=True)

    r = run(loop, main())
    assert isinstance(r[0], ValueError) and r[1] == 1


def test_wait_first_completed(loop):
    async def main():
        fast = loop.create_task(asyncio.sleep(0.01, "fast"))
        slow = loop.create_task(asyncio.sleep(10, "slow"))
        done, pending = await asyncio.wait(
            {fast, slow}, return_when=asyncio.FIRST_COMPLETED)
        assert done == {fast} and pending == {slow}
        slow.cancel()
        return fast.result()

    assert run(loop, main()) == "fast"


def test_wait_timeout(loop):
    async def main():
        t = loop.create_task(asyncio.sleep(10))
        done, pending = await asyncio.wait({t}, timeout=0.02)
        assert done == set() and pending == {t}
        t.cancel()

    run(loop, main())


def test_wait_for_timeout(loop):
    async def main():
        t0 = loop.time()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.sleep(10), 0.03)
        assert loop.time() - t0 >= 0.03 - 1e-6
        return await asyncio.wait_for(asyncio.sleep(0, "ok"), 1)

    assert run(loop, main()) == "ok"


def test_shield(loop):
    async def main():
        inner = loop.create_task(asyncio.sleep(0.02, "inner"))
        outer = asyncio.ensure_future(asyncio.shield(inner))
        await asyncio.sleep(0)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        assert not inner.cancelled()
        return await inner

    assert run(loop, main()) == "inner"


def test_timeout_context_manager(loop):
    async def main():
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.02):
                await asyncio.sleep(10)
        async with asyncio.timeout(1):
            await asyncio.sleep(0)
        async with asyncio.timeout_at(loop.time() + 1) as cm:
            assert cm.when() == pytest.approx(loop.time() + 1, abs=0.5)
        return "ok"

    assert run(loop, main()) == "ok"


def test_task_group(loop):
    async def main():
        results = []

        async def worker(i):
            await asyncio.sleep(0.001 * i)
            results.append(i)

        async with asyncio.TaskGroup() as tg:
            for i in range(5):
                tg.create_task(worker(i))
        assert sorted(results) == list(range(5))

        async def fails():
            await asyncio.sleep(0)
            raise ValueError("tg")

        async def sleeps():
            await asyncio.sleep(10)

        with pytest.raises(ExceptionGroup) as info:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(fails())
                s = tg.create_task(sleeps())
        assert s.cancelled()
        assert isinstance(info.value.exceptions[0], ValueError)
        return "ok"

    assert run(loop, main()) == "ok"


def test_queue(loop):
    async def main():
        q = asyncio.Queue(maxsize=2)
        out = []

        async def producer():
            for i in range(10):
                await q.put(i)
            await q.put(None)

        async def consumer():
            while (item := await q.get()) is not None:
                out.append(item)

        await asyncio.gather(producer(), consumer())
        return out

    assert run(loop, main()) == list(range(10))


def test_lock_event_semaphore_condition(loop):
    async def main():
        lock = asyncio.Lock()
        order = []

        async def locked(i):
            async with lock:
                order.append(("in", i))
                await asyncio.sleep(0.001)
                order.append(("out", i))

        await asyncio.gather(*(locked(i) for i in range(3)))
        for k in range(0, 6, 2):
            assert order[k][0] == "in" and order[k + 1][0] == "out"
            assert order[k][1] == order[k + 1][1]

        ev = asyncio.Event()
        loop.call_later(0.01, ev.set)
        await asyncio.wait_for(ev.wait(), 2)
        assert ev.is_set()

        sem = asyncio.Semaphore(2)
        active = 0
        peak = 0

        async def limited():
            nonlocal active, peak
            async with sem:
                active += 1
                peak = max(peak, active)
                await asyncio.sleep(0.002)
                active -= 1

        await asyncio.gather(*(limited() for _ in range(6)))
        assert peak == 2

        cond = asyncio.Condition()
        box = []

        async def waiter():
            async with cond:
                await cond.wait_for(lambda: box)
                return box[0]

        w = loop.create_task(waiter())
        await asyncio.sleep(0)
        async with cond:
            box.append("cond-value")
            cond.notify_all()
        assert await w == "cond-value"
        return "ok"

    assert run(loop, main()) == "ok"


def test_sleep_result_and_zero(loop):
    async def main():
        a = await asyncio.sleep(0, "zero")
        b = await asyncio.sleep(0.001, "small")
        return a, b

    assert run(loop, main()) == ("zero", "small")


def test_wrap_future_from_thread(loop):
    import concurrent.futures

    async def main():
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            cf = ex.submit(lambda: "from-thread")
            return await asyncio.wrap_future(cf)

    assert run(loop, main()) == "from-thread"


def test_run_coroutine_threadsafe(loop):
    import threading

    result = {}

    async def add(a, b):
        await asyncio.sleep(0)
        return a + b

    async def main():
        def thread_fn():
            fut = asyncio.run_coroutine_threadsafe(add(1, 2), loop)
            result["v"] = fut.result(5)

        th = threading.Thread(target=thread_fn)
        th.start()
        while th.is_alive():
            await asyncio.sleep(0.005)
        th.join()

    run(loop, main())
    assert result == {"v": 3}


def test_to_thread(loop):
    import threading

    async def main():
        return await asyncio.to_thread(threading.get_ident)

    assert run(loop, main()) != threading.get_ident()


def test_many_tasks(loop):
    async def leaf(i):
        await asyncio.sleep(0)
        return i

    async def main():
        return sum(await asyncio.gather(*(leaf(i) for i in range(2000))))

    assert run(loop, main()) == sum(range(2000))
