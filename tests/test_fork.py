"""os.fork(): the child can drop the inherited loop and run a new one,
without disturbing the parent's loop."""

import asyncio
import os
import signal
import socket
import time

import pytest


def _wait_child(pid, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid == pid:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("forked child did not exit in time")


def _child(loop_factory, inherited):
    """Runs in the child; never returns (os._exit)."""
    code = 1
    try:
        inherited.close()
        assert inherited.is_closed()
        new = loop_factory.raw()
        try:
            async def main():
                fut = new.create_future()
                new.call_later(0.01, fut.set_result, "child-ok")
                r = await fut
                r2 = await new.run_in_executor(None, lambda: 2)
                return r, r2

            if new.run_until_complete(main()) == ("child-ok", 2):
                code = 0
            else:
                code = 2
        finally:
            new.close()
    except BaseException:
        code = 3
    os._exit(code)


def test_fork_child_closes_inherited_loop_and_runs_new(loop_factory):
    loop = loop_factory()
    # Exercise the parent loop (timers, readers, a run) before forking.
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        got = []
        loop.add_reader(a, lambda: got.append(a.recv(10)))
        loop.call_later(100, lambda: None)
        loop.run_until_complete(asyncio.sleep(0.01))

        pid = os.fork()
        if pid == 0:  # child
            _child(loop_factory, loop)
        assert _wait_child(pid) == 0

        # The parent's loop still works: timers and readers.  (Not checked:
        # call_soon_threadsafe wakeups.  On stock asyncio the child's close()
        # unregisters the self-pipe from the epoll instance it shares with
        # the parent, so those stop waking the parent's loop.)
        b.send(b"parent")

        async def main():
            for _ in range(200):
                if got:
                    break
                await asyncio.sleep(0.01)
            fut = loop.create_future()
            loop.call_later(0.01, fut.set_result, "timer")
            return await fut

        assert loop.run_until_complete(asyncio.wait_for(main(), 5)) == "timer"
        assert got == [b"parent"]
        loop.remove_reader(a)
    finally:
        a.close()
        b.close()


def test_fork_child_from_unused_loop(loop_factory):
    loop = loop_factory()
    pid = os.fork()
    if pid == 0:
        _child(loop_factory, loop)
    assert _wait_child(pid) == 0
    assert loop.run_until_complete(asyncio.sleep(0, "parent")) == "parent"


def test_fork_child_new_loop_without_closing_inherited(loop_factory):
    loop = loop_factory()
    loop.run_until_complete(asyncio.sleep(0))
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            new = loop_factory.raw()
            try:
                if new.run_until_complete(asyncio.sleep(0.01, 7)) == 7:
                    code = 0
            finally:
                new.close()
        except BaseException:
            code = 3
        os._exit(code)
    assert _wait_child(pid) == 0
    assert loop.run_until_complete(asyncio.sleep(0, "p")) == "p"
