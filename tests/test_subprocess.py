"""Subprocesses: subprocess_exec/_shell, the subprocess transport, and fault
cases (signals, early-closed pipes, a stalled reader, many children, failed
exec, loops outside the main thread).

Stock asyncio before 3.14 needs a child watcher to reap children; the
``sp_loop`` fixture attaches a ThreadedChildWatcher (3.11's default) for the
asyncio param, as the stdlib's own subprocess tests do (3.14 has no watchers:
its loops reap their children themselves). ferroloop reaps its own children
and gets none."""

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from conftest import run

PY = sys.executable


@contextlib.contextmanager
def stock_child_watcher(loop_kind):
    """The ThreadedChildWatcher a stock loop reaps its children with, where
    this Python has watchers at all (before 3.14)."""
    if loop_kind != "asyncio" or not hasattr(asyncio, "ThreadedChildWatcher"):
        yield
        return
    watcher = asyncio.ThreadedChildWatcher()
    asyncio.get_event_loop_policy().set_child_watcher(watcher)
    try:
        yield
    finally:
        asyncio.get_event_loop_policy().set_child_watcher(None)
        watcher.close()


@pytest.fixture
def sp_loop(loop, loop_kind):
    with stock_child_watcher(loop_kind):
        yield loop


class Proto(asyncio.SubprocessProtocol):
    def __init__(self, loop):
        self.events = []
        self.data = {1: bytearray(), 2: bytearray()}
        self.lost = loop.create_future()
        self.exited = loop.create_future()

    def connection_made(self, transport):
        self.events.append("made")

    def pipe_data_received(self, fd, data):
        self.data[fd] += data

    def pipe_connection_lost(self, fd, exc):
        self.events.append(("pipe_lost", fd))

    def process_exited(self):
        self.events.append("exited")
        self.exited.set_result(None)

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)


def test_exec_communicate(sp_loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import sys; d = sys.stdin.buffer.read(); "
            "sys.stdout.buffer.write(d.upper()); sys.stderr.write('err')",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await proc.communicate(b"hello")
        assert (out, err) == (b"HELLO", b"err")
        assert proc.returncode == 0

    run(sp_loop, main(), timeout=15)


def test_transport_api_and_event_order(sp_loop):
    loop = sp_loop

    async def main():
        t, p = await loop.subprocess_exec(
            lambda: Proto(loop), PY, "-c", "print('out')", stdin=None)
        assert isinstance(t, asyncio.SubprocessTransport)
        assert t.get_pid() > 0
        assert t.get_pipe_transport(0) is None
        assert isinstance(t.get_pipe_transport(1), asyncio.ReadTransport)
        assert t.get_extra_info("subprocess").pid == t.get_pid()
        await p.lost
        assert t.get_returncode() == 0
        assert bytes(p.data[1]).strip() == b"out"
        assert p.events[0] == "made" and p.events[-1] == "lost"
        assert sorted(e for e in p.events[1:-1] if e != "exited") == [
            ("pipe_lost", 1), ("pipe_lost", 2)]
        # After connection_lost the process is gone for good.
        with pytest.raises(ProcessLookupError):
            t.send_signal(signal.SIGTERM)
        with pytest.raises(ProcessLookupError):
            t.kill()
        t.close()

    run(loop, main(), timeout=15)


def test_shell(sp_loop):
    async def main():
        proc = await asyncio.create_subprocess_shell(
            "echo $((6*7)); exit 3", stdout=subprocess.PIPE)
        out, _ = await proc.communicate()
        assert out == b"42\n"
        assert proc.returncode == 3
        with pytest.raises(ValueError, match="cmd must be a string"):
            await sp_loop.subprocess_shell(asyncio.SubprocessProtocol, ["ls"])
        with pytest.raises(ValueError, match="shell must be False"):
            await sp_loop.subprocess_exec(asyncio.SubprocessProtocol, "ls", shell=True)
        with pytest.raises(ValueError, match="bufsize must be 0"):
            await sp_loop.subprocess_exec(asyncio.SubprocessProtocol, "ls", bufsize=1)
        with pytest.raises(ValueError, match="universal_newlines must be False"):
            await sp_loop.subprocess_exec(
                asyncio.SubprocessProtocol, "ls", universal_newlines=True)

    run(sp_loop, main(), timeout=15)


def test_killed_by_signal(sp_loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import time; print('up', flush=True); time.sleep(60)",
            stdout=subprocess.PIPE)
        assert await proc.stdout.readline() == b"up\n"
        proc.send_signal(signal.SIGKILL)
        assert await proc.wait() == -signal.SIGKILL
        proc2 = await asyncio.create_subprocess_exec(PY, "-c", "import time; time.sleep(60)")
        proc2.terminate()
        assert await proc2.wait() == -signal.SIGTERM
        # Signalling an exited process that asyncio already reaped.
        with pytest.raises(ProcessLookupError):
            proc2.kill()

    run(sp_loop, main(), timeout=15)


def test_child_closes_stdout_early(sp_loop):
    loop = sp_loop

    async def main():
        t, p = await loop.subprocess_exec(
            lambda: Proto(loop), PY, "-c",
            "import os, sys, time; sys.stdout.write('bye'); sys.stdout.flush(); "
            "os.close(1); time.sleep(0.3); sys.exit(5)",
            stdin=None, stderr=None)
        await p.lost
        assert bytes(p.data[1]) == b"bye"
        # The pipe closed first, the process exited later.
        assert p.events.index(("pipe_lost", 1)) < p.events.index("exited")
        assert t.get_returncode() == 5
        t.close()

    run(loop, main(), timeout=15)


def test_exits_before_its_pipe_closes(sp_loop):
    loop = sp_loop

    async def main():
        # The child exits at once; a grandchild keeps stdout open a while.
        t, p = await loop.subprocess_shell(
            lambda: Proto(loop), "(sleep 0.3; echo late) & echo early",
            stdin=None, stderr=None)
        await p.exited
        assert t.get_returncode() == 0
        assert not p.lost.done()
        await p.lost
        assert bytes(p.data[1]) == b"early\nlate\n"
        assert p.events.index("exited") < p.events.index(("pipe_lost", 1))
        t.close()

    run(loop, main(), timeout=15)


def test_stalled_reader_megabytes(sp_loop):
    size = 8 * 1024 * 1024

    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", f"import sys; sys.stdout.buffer.write(b'z' * {size})",
            stdout=subprocess.PIPE)
        # Don't read for a while: the child blocks on a full pipe, the
        # transport pauses; nothing deadlocks and nothing is lost.
        await asyncio.sleep(0.3)
        assert proc.returncode is None
        data = await proc.stdout.read()
        assert len(data) == size and data == b"z" * size
        assert await proc.wait() == 0

    run(sp_loop, main(), timeout=15)


def test_cat_4mib_communicate(sp_loop):
    blob = os.urandom(4 * 1024 * 1024)

    async def main():
        proc = await asyncio.create_subprocess_exec(
            "cat", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        out, _ = await proc.communicate(blob)
        assert out == blob
        assert proc.returncode == 0

    run(sp_loop, main(), timeout=15)


def test_200_concurrent(sp_loop):
    async def one(i):
        proc = await asyncio.create_subprocess_exec(
            "sh", "-c", f"exit {i % 7}", stdin=subprocess.DEVNULL)
        return await proc.wait()

    async def main():
        results = await asyncio.gather(*(one(i) for i in range(200)))
        assert results == [i % 7 for i in range(200)]

    run(sp_loop, main(), timeout=18)


def test_failed_exec_raises_in_caller(sp_loop):
    async def main():
        with pytest.raises(FileNotFoundError):
            await asyncio.create_subprocess_exec("/nonexistent/program-xyz")
        with tempfile.NamedTemporaryFile(suffix=".sh") as f:
            os.chmod(f.name, 0o644)
            with pytest.raises(PermissionError):
                await asyncio.create_subprocess_exec(f.name)
        with pytest.raises(FileNotFoundError):
            await asyncio.create_subprocess_exec("true", cwd="/nonexistent/dir-xyz")

    run(sp_loop, main(), timeout=15)


def test_popen_keywords(sp_loop):
    async def main():
        with tempfile.TemporaryDirectory() as d:
            r, w = os.pipe()
            try:
                proc = await asyncio.create_subprocess_exec(
                    PY, "-c",
                    "import os, sys; print(os.getcwd(), os.environ['FL_X'], "
                    f"os.getsid(0) == os.getpid(), os.umask(0)); os.write({w}, b'fd')",
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    cwd=d, env={**os.environ, "FL_X": "yes"},
                    start_new_session=True, pass_fds=(w,), umask=0o27)
                out, err = await proc.communicate()
                assert err is None
                cwd, x, leader, umask = out.decode().split()
                assert os.path.samefile(cwd, d)
                assert (x, leader, umask) == ("yes", "True", str(0o27))
                assert os.read(r, 10) == b"fd"
            finally:
                os.close(r)
                os.close(w)
            with open(os.path.join(d, "out"), "wb") as f:
                proc = await asyncio.create_subprocess_exec(
                    "echo", "to a file", stdout=f)
                assert await proc.wait() == 0
            with open(os.path.join(d, "out"), "rb") as f:
                assert f.read() == b"to a file\n"

    run(sp_loop, main(), timeout=15)


def test_slow_preexec_fn_does_not_block_loop(sp_loop, loop_kind):
    if loop_kind == "asyncio":
        pytest.skip("stock asyncio runs Popen (and preexec_fn's wait) on the loop")

    ticks = []

    async def ticker():
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    async def main():
        tick_task = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)
        proc = await asyncio.create_subprocess_exec(
            "true", preexec_fn=lambda: time.sleep(0.3))
        assert await proc.wait() == 0
        tick_task.cancel()
        assert len(ticks) >= 10

    run(sp_loop, main(), timeout=15)


def test_cancelled_spawn_leaves_no_child(sp_loop):
    loop = sp_loop

    async def main():
        task = asyncio.ensure_future(asyncio.create_subprocess_exec(
            PY, "-c", "import time; time.sleep(60)"))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(loop, main(), timeout=15)
    # Give the disposal a moment, then no child of ours may be left running.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        time.sleep(0.02)
    else:
        pytest.fail("child still running")


def test_loop_in_a_thread(loop_kind, loop_factory):
    result = []

    def worker():
        lp = loop_factory()

        async def main():
            proc = await asyncio.create_subprocess_exec(
                "sh", "-c", "echo threaded; exit 4", stdout=subprocess.PIPE)
            out, _ = await proc.communicate()
            return out, proc.returncode

        try:
            result.append(run(lp, main(), timeout=10))
        except BaseException as exc:
            result.append(exc)
        finally:
            lp.close()

    with stock_child_watcher(loop_kind):
        th = threading.Thread(target=worker)
        th.start()
        th.join()
    assert result == [(b"threaded\n", 4)]


def test_close_kills_running_child(sp_loop):
    loop = sp_loop

    async def main():
        t, p = await loop.subprocess_exec(
            lambda: Proto(loop), PY, "-c", "import time; time.sleep(60)")
        t.close()
        assert t.is_closing()
        await p.lost
        assert t.get_returncode() == -signal.SIGKILL

    run(loop, main(), timeout=15)


def test_unclosed_transport_warns(sp_loop):
    loop = sp_loop

    async def main():
        t, p = await loop.subprocess_exec(lambda: Proto(loop), "true")
        await p.lost
        return t

    t = run(loop, main(), timeout=15)
    with pytest.warns(ResourceWarning, match="unclosed transport"):
        t.__del__()


@pytest.mark.parametrize("where", ["main thread (SIGCHLD)", "other thread (timer)"])
def test_reaping_without_pidfd(loop_kind, loop_factory, monkeypatch, where):
    """The fallbacks for systems without pidfd_open: SIGCHLD-driven polling
    for a loop in the main thread, timer polling elsewhere."""
    if loop_kind == "asyncio":
        pytest.skip("ferroloop's own reaping fallback")
    import ferroloop.subprocess as fsp

    monkeypatch.setattr(fsp, "_USE_PIDFD", False)
    in_thread = where.startswith("other")

    async def main():
        loop = asyncio.get_running_loop()
        proc = await asyncio.create_subprocess_exec("sleep", "0.2")
        assert (fsp._SigchldReaper._by_loop.get(loop) is None) == in_thread
        assert (signal.SIGCHLD in loop._signal_handlers) != in_thread
        await proc.wait()
        procs = [await asyncio.create_subprocess_exec(
            "sh", "-c", f"sleep 0.0{i}; exit {i}") for i in range(5)]
        assert [await p.wait() for p in procs] == list(range(5))
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "print('x' * 100000)", stdout=subprocess.PIPE)
        out, _ = await proc.communicate()
        assert len(out) == 100001 and proc.returncode == 0
        # Once no child is left, SIGCHLD is given back.
        assert signal.SIGCHLD not in loop._signal_handlers

    result = []

    def go():
        lp = loop_factory()
        try:
            result.append(run(lp, main(), timeout=15))
        except BaseException as exc:
            result.append(exc)
        finally:
            lp.close()

    if in_thread:
        th = threading.Thread(target=go)
        th.start()
        th.join()
    else:
        go()
    assert result == [None]


def test_pdeathsig_child_outlives_the_spawn(sp_loop):
    """PR_SET_PDEATHSIG ties a child to the *thread* that forked it: a
    child that asks for it must not be killed just because a helper thread
    finished spawning it."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_PDEATHSIG = 1

    def preexec():
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    async def main():
        proc = await asyncio.create_subprocess_exec(
            "sh", "-c", "sleep 0.3; exit 7", preexec_fn=preexec)
        assert await proc.wait() == 7

    run(sp_loop, main(), timeout=15)
