"""Async generator hooks and shutdown_asyncgens; the default executor,
run_in_executor and shutdown_default_executor."""

import asyncio
import concurrent.futures
import gc
import sys
import threading

import pytest

from conftest import run


def test_asyncgen_hooks_installed_while_running(loop):
    before = sys.get_asyncgen_hooks()
    seen = []

    async def main():
        seen.append(sys.get_asyncgen_hooks())

    loop.run_until_complete(main())
    inside = seen[0]
    assert inside.firstiter is not None
    assert inside.finalizer is not None
    assert inside != before
    assert sys.get_asyncgen_hooks() == before


def test_asyncgen_hooks_restored_after_exception(loop):
    before = sys.get_asyncgen_hooks()

    def boom():
        raise KeyboardInterrupt

    loop.call_soon(boom)
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    assert sys.get_asyncgen_hooks() == before


def test_shutdown_asyncgens_finalizes_suspended_generator(loop):
    log = []
    keep = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            log.append("finally")
            await asyncio.sleep(0)  # finalizer may await
            log.append("finally-after-await")

    async def main():
        g = agen()
        assert await g.__anext__() == 1
        keep.append(g)

    loop.run_until_complete(main())
    assert log == []
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert log == ["finally", "finally-after-await"]


def test_shutdown_asyncgens_reports_errors(loop):
    contexts = []
    loop.set_exception_handler(lambda l, ctx: contexts.append(ctx))
    keep = []

    async def agen():
        try:
            yield 1
        finally:
            raise ValueError("in-finally")

    async def main():
        g = agen()
        await g.__anext__()
        keep.append(g)

    loop.run_until_complete(main())
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert len(contexts) == 1
    assert isinstance(contexts[0]["exception"], ValueError)
    assert "asyncgen" in contexts[0]
    assert contexts[0]["asyncgen"] is keep[0]


def test_shutdown_asyncgens_with_nothing_to_do(loop):
    assert loop.run_until_complete(loop.shutdown_asyncgens()) is None


def test_garbage_collected_asyncgen_is_finalized_by_loop(loop):
    log = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            log.append(("finally", asyncio.get_running_loop() is loop))

    async def main():
        g = agen()
        await g.__anext__()
        del g
        gc.collect()
        for _ in range(5):
            await asyncio.sleep(0)

    run(loop, main())
    assert log == [("finally", True)]


def test_asyncgen_iterated_after_shutdown_warns(loop):
    # After shutdown_asyncgens, new async generators are not tracked and a
    # ResourceWarning is issued on first iteration.
    loop.run_until_complete(loop.shutdown_asyncgens())

    async def agen():
        yield 1

    async def main():
        g = agen()
        with pytest.warns(ResourceWarning,
                          match="scheduled after loop.shutdown_asyncgens"):
            await g.__anext__()
        await g.aclose()

    run(loop, main())


# ---------------------------------------------------------------------------
# Executors
# ---------------------------------------------------------------------------

def test_run_in_executor_default(loop):
    main_ident = threading.get_ident()

    def work(a, b):
        return a + b, threading.get_ident()

    assert loop._default_executor is None
    result, ident = run(loop, loop.run_in_executor(None, work, 2, 3))
    assert result == 5
    assert ident != main_ident
    assert isinstance(loop._default_executor,
                      concurrent.futures.ThreadPoolExecutor)


def test_run_in_executor_returns_asyncio_future(loop):
    fut = loop.run_in_executor(None, int, "7")
    assert isinstance(fut, asyncio.Future)
    assert fut.get_loop() is loop
    assert run(loop, fut) == 7


def test_run_in_executor_exception(loop):
    def fail():
        raise LookupError("executor-fail")

    with pytest.raises(LookupError, match="executor-fail"):
        run(loop, loop.run_in_executor(None, fail))


def test_run_in_executor_explicit_executor(loop):
    with concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="explicit-pool") as ex:
        name = run(loop, loop.run_in_executor(
            ex, lambda: threading.current_thread().name))
    assert name.startswith("explicit-pool")
    assert loop._default_executor is None


def test_set_default_executor(loop):
    ex = concurrent.futures.ThreadPoolExecutor(
        1, thread_name_prefix="my-default")
    try:
        loop.set_default_executor(ex)
        assert loop._default_executor is ex
        name = run(loop, loop.run_in_executor(
            None, lambda: threading.current_thread().name))
        assert name.startswith("my-default")
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        ex.shutdown(wait=True)


def test_set_default_executor_rejects_non_thread_pool(loop):
    class FakeExecutor(concurrent.futures.Executor):
        def submit(self, fn, *args, **kwargs):  # pragma: no cover
            raise AssertionError

    with pytest.raises(TypeError):
        loop.set_default_executor(FakeExecutor())
    with pytest.raises(TypeError):
        loop.set_default_executor(None)
    assert loop._default_executor is None


def test_set_default_executor_rejects_process_pool(loop):
    ex = concurrent.futures.ProcessPoolExecutor(1)
    try:
        with pytest.raises(TypeError):
            loop.set_default_executor(ex)
    finally:
        ex.shutdown(wait=True)


def test_shutdown_default_executor(loop):
    run(loop, loop.run_in_executor(None, int))
    ex = loop._default_executor
    assert ex is not None
    threads = list(ex._threads)
    loop.run_until_complete(loop.shutdown_default_executor())
    for t in threads:
        assert not t.is_alive()
    with pytest.raises(RuntimeError):
        loop.run_in_executor(None, int)


def test_shutdown_default_executor_without_executor(loop):
    loop.run_until_complete(loop.shutdown_default_executor())
    with pytest.raises(RuntimeError,
                       match="Executor shutdown has been called"):
        loop.run_in_executor(None, int)


def test_run_in_executor_after_close(loop):
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.run_in_executor(None, int)


def test_close_shuts_down_default_executor(loop):
    run(loop, loop.run_in_executor(None, int))
    ex = loop._default_executor
    loop.close()
    assert ex._shutdown
    assert loop._default_executor is None


def test_run_in_executor_debug_rejects_coroutine_function(loop):
    loop.set_debug(True)

    async def coro_fn():
        pass

    with pytest.raises(TypeError):
        loop.run_in_executor(None, coro_fn)


def test_shutdown_coroutines_carry_asyncio_names(loop):
    # Warning filters written against the stock loop match these names
    # (pytest-asyncio ignores ".*BaseEventLoop.shutdown_asyncgens.*").
    for name in ("shutdown_asyncgens", "shutdown_default_executor"):
        coro = getattr(loop, name)()
        try:
            assert coro.__qualname__ == f"BaseEventLoop.{name}"
        finally:
            coro.close()


DAEMON_LOOP_AT_EXIT = """
import asyncio, sys, threading, time

def spin():
    while True:                 # Python code that is running when the
        pass                    # main thread exits

async def timer():
    while True:                 # a server-like loop that keeps waking up
        await asyncio.sleep(0.001)

async def callback():
    await asyncio.sleep(0)
    spin()                      # inside a task step (a handle's callback)

class Spin(asyncio.Protocol):
    def connection_made(self, transport):
        transport.write(b"ping")

    def data_received(self, data):
        spin()                  # inside a protocol callback of a transport

async def protocol():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Spin, "127.0.0.1", 0)
    await loop.create_connection(Spin, *server.sockets[0].getsockname())
    await loop.create_future()

def body(kind, main):
    if kind == "ferroloop":
        import ferroloop
        asyncio.Runner(loop_factory=ferroloop.new_event_loop).run(main())
    else:
        asyncio.run(main())

for _ in range(2):
    threading.Thread(target=body, args=(sys.argv[1], globals()[sys.argv[2]]),
                     daemon=True).start()
time.sleep(0.2)
print("main thread exits", flush=True)
"""


@pytest.mark.parametrize("wake", ["timer", "callback", "protocol"])
def test_daemon_thread_loop_running_at_interpreter_exit(loop_kind, tmp_path, wake):
    # Daemon threads whose loops keep waking up while the main thread exits:
    # the interpreter ends them as it finalizes (before 3.14 by pthread_exit
    # when they retake the GIL). That must not crash the process: it was
    # "FATAL: exception not rethrown" and SIGABRT on ferroloop, found by
    # python-socks' suite (uvicorn servers in daemon threads).
    import subprocess

    from conftest import subprocess_env

    script = tmp_path / "daemon_loop.py"
    script.write_text(DAEMON_LOOP_AT_EXIT)
    for _ in range(3):
        proc = subprocess.run(
            [sys.executable, str(script), loop_kind, wake], capture_output=True,
            text=True, timeout=60, env=subprocess_env())
        assert (proc.returncode, proc.stdout, proc.stderr) == (
            0, "main thread exits\n", ""), proc


UNCLOSED_DEBUG_LOOP_AT_EXIT = """
import asyncio, sys, warnings
warnings.simplefilter("ignore", ResourceWarning)
if sys.argv[1] == "ferroloop":
    import ferroloop
    loop = ferroloop.new_event_loop()
else:
    loop = asyncio.new_event_loop()
loop.set_debug(True)
asyncio.set_event_loop(loop)   # the policy keeps it until finalization
print("exits", flush=True)
"""


def test_unclosed_debug_loop_at_interpreter_exit(loop_kind, tmp_path):
    # A debug-mode loop left unclosed and set as the current loop (as
    # aiosmtpd's suite does) is freed while the interpreter tears its
    # modules down: closing it then must not trip over module globals that
    # are already None (close()'s debug log did: "Exception ignored in
    # Loop.__del__ ... TypeError: 'NoneType' object is not callable").
    import subprocess

    from conftest import subprocess_env

    script = tmp_path / "unclosed_loop.py"
    script.write_text(UNCLOSED_DEBUG_LOOP_AT_EXIT)
    proc = subprocess.run(
        [sys.executable, str(script), loop_kind], capture_output=True,
        text=True, timeout=60, env=subprocess_env())
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "exits\n", ""), proc


UNCLOSED_LOOP_AT_EXIT = """
import asyncio, sys
if sys.argv[1] == "ferroloop":
    import ferroloop
    loop = ferroloop.new_event_loop()
else:
    loop = asyncio.new_event_loop()
asyncio.set_event_loop(loop)   # the policy keeps it; never closed
del loop
print("exits", flush=True)
"""


def test_unclosed_loop_at_interpreter_exit_is_silent(loop_kind, tmp_path):
    # As pytest-asyncio leaves its last loop: a stock loop that was never
    # closed sits in a reference cycle and is not finalized at exit, so even
    # with ResourceWarnings shown nothing is printed. ferroloop printed
    # "unclosed event loop" from __del__ (seen at the end of aiomcache's suite).
    import subprocess

    from conftest import subprocess_env

    script = tmp_path / "unclosed_loop_exit.py"
    script.write_text(UNCLOSED_LOOP_AT_EXIT)
    proc = subprocess.run(
        [sys.executable, "-W", "default::ResourceWarning", str(script), loop_kind],
        capture_output=True, text=True, timeout=60, env=subprocess_env())
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "exits\n", ""), proc
