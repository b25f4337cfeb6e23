"""add_reader / remove_reader / add_writer / remove_writer."""

import asyncio
import errno
import os
import socket

import pytest

from conftest import run


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def _run_until(loop, fut, timeout=5):
    return loop.run_until_complete(asyncio.wait_for(fut, timeout))


def test_add_reader_fires_when_readable(loop, pair):
    a, b = pair
    fut = loop.create_future()
    calls = []

    def on_readable(arg):
        calls.append(arg)
        data = a.recv(100)
        loop.remove_reader(a.fileno())
        if not fut.done():
            fut.set_result(data)

    loop.add_reader(a.fileno(), on_readable, "arg")
    # not readable yet: run a little and make sure it did not fire
    loop.run_until_complete(asyncio.sleep(0.02))
    assert calls == []
    b.send(b"hello")
    assert _run_until(loop, fut) == b"hello"
    assert calls == ["arg"]


def test_reader_level_triggered(loop, pair):
    a, b = pair
    count = []

    def on_readable():
        count.append(1)
        if len(count) == 3:
            loop.remove_reader(a)
            loop.stop()

    b.send(b"x")
    loop.add_reader(a, on_readable)  # never consumes the data
    guard = loop.call_later(5, loop.stop)
    loop.run_forever()
    guard.cancel()
    assert len(count) == 3


def test_add_reader_accepts_object_with_fileno(loop, pair):
    a, b = pair

    class Wrapper:
        def fileno(self):
            return a.fileno()

    fut = loop.create_future()
    loop.add_reader(Wrapper(), lambda: fut.done() or fut.set_result(a.recv(10)))
    b.send(b"w")
    assert _run_until(loop, fut) == b"w"
    # removal by fd or by the object: both name the same fd
    assert loop.remove_reader(a.fileno()) is True
    assert loop.remove_reader(Wrapper()) is False


def test_add_reader_socket_object(loop, pair):
    a, b = pair
    fut = loop.create_future()
    loop.add_reader(a, lambda: fut.done() or fut.set_result(a.recv(10)))
    b.send(b"s")
    assert _run_until(loop, fut) == b"s"
    assert loop.remove_reader(a) is True


def test_remove_reader_return_values(loop, pair):
    a, b = pair
    assert loop.remove_reader(a.fileno()) is False
    loop.add_reader(a.fileno(), lambda: None)
    assert loop.remove_reader(a.fileno()) is True
    assert loop.remove_reader(a.fileno()) is False


def test_remove_writer_return_values(loop, pair):
    a, b = pair
    assert loop.remove_writer(a.fileno()) is False
    loop.add_writer(a.fileno(), lambda: None)
    assert loop.remove_writer(a.fileno()) is True
    assert loop.remove_writer(a.fileno()) is False


def test_removed_reader_does_not_fire(loop, pair):
    a, b = pair
    calls = []
    loop.add_reader(a, calls.append, "no")
    assert loop.remove_reader(a)
    b.send(b"x")
    loop.run_until_complete(asyncio.sleep(0.03))
    assert calls == []


def test_replacing_reader(loop, pair):
    a, b = pair
    calls = []
    fut = loop.create_future()

    def second():
        calls.append("second")
        loop.remove_reader(a)
        fut.set_result(None)

    loop.add_reader(a, calls.append, "first")
    loop.add_reader(a, second)
    b.send(b"x")
    _run_until(loop, fut)
    assert calls == ["second"]


def test_add_writer_fires_when_writable(loop, pair):
    a, b = pair
    fut = loop.create_future()

    def on_writable(x):
        loop.remove_writer(a.fileno())
        a.send(b"from-writer")
        fut.set_result(x)

    loop.add_writer(a.fileno(), on_writable, 42)
    assert _run_until(loop, fut) == 42
    assert b.recv(100) == b"from-writer"


def test_writer_waits_until_buffer_drains(loop, pair):
    a, b = pair
    # fill the send buffer
    try:
        while True:
            a.send(b"x" * 65536)
    except BlockingIOError:
        pass
    calls = []
    fut = loop.create_future()

    def on_writable():
        calls.append(1)
        loop.remove_writer(a)
        fut.set_result(None)

    loop.add_writer(a, on_writable)
    loop.run_until_complete(asyncio.sleep(0.03))
    assert calls == []  # buffer full: not writable
    # drain the peer
    while True:
        try:
            if not b.recv(1 << 20):
                break
        except BlockingIOError:
            break
    _run_until(loop, fut)
    assert calls == [1]


def test_reader_and_writer_on_same_fd(loop, pair):
    a, b = pair
    events = []
    done = loop.create_future()

    def on_write():
        events.append("w")
        loop.remove_writer(a)
        b.send(b"ping")

    def on_read():
        events.append("r")
        a.recv(10)
        loop.remove_reader(a)
        done.set_result(None)

    loop.add_reader(a, on_read)
    loop.add_writer(a, on_write)
    _run_until(loop, done)
    assert events == ["w", "r"]
    # removing the writer must not have removed the reader before it fired;
    # both are gone now.
    assert loop.remove_reader(a) is False
    assert loop.remove_writer(a) is False


def test_remove_writer_keeps_reader(loop, pair):
    a, b = pair
    fut = loop.create_future()
    loop.add_reader(a, lambda: fut.done() or fut.set_result(a.recv(10)))
    loop.add_writer(a, lambda: None)
    assert loop.remove_writer(a) is True
    b.send(b"r")
    assert _run_until(loop, fut) == b"r"
    assert loop.remove_reader(a) is True


def test_reader_callback_exception_goes_to_handler(loop, pair):
    a, b = pair
    contexts = []
    loop.set_exception_handler(lambda l, ctx: contexts.append(ctx))

    def bad_reader():
        loop.remove_reader(a)
        raise ValueError("reader-failed")

    loop.add_reader(a, bad_reader)
    b.send(b"x")
    loop.run_until_complete(asyncio.sleep(0.05))
    assert len(contexts) == 1
    assert isinstance(contexts[0]["exception"], ValueError)
    assert contexts[0]["message"].startswith("Exception in callback")


def test_reader_callbacks_run_in_context(loop, pair):
    import contextvars
    var = contextvars.ContextVar("reader_var", default="d")
    a, b = pair
    fut = loop.create_future()
    tok = var.set("at-add")
    try:
        loop.add_reader(a, lambda: fut.done() or fut.set_result(var.get()))
    finally:
        var.reset(tok)
    b.send(b"x")
    assert _run_until(loop, fut) == "at-add"
    loop.remove_reader(a)


@pytest.mark.parametrize("bad", ["x", 1.5, None, object()])
def test_add_reader_bad_fd_type(loop, bad):
    # stock asyncio: ValueError("Invalid file object: ...")
    with pytest.raises(ValueError, match="Invalid file object"):
        loop.add_reader(bad, lambda: None)
    with pytest.raises(ValueError, match="Invalid file object"):
        loop.add_writer(bad, lambda: None)
    with pytest.raises(ValueError, match="Invalid file object"):
        loop.remove_reader(bad)
    with pytest.raises(ValueError, match="Invalid file object"):
        loop.remove_writer(bad)


def test_add_reader_negative_fd(loop):
    with pytest.raises(ValueError):
        loop.add_reader(-1, lambda: None)
    with pytest.raises(ValueError):
        loop.add_writer(-1, lambda: None)


def test_add_reader_closed_fd(loop):
    a, b = socket.socketpair()
    fd = a.fileno()
    a.close()
    b.close()
    with pytest.raises(OSError):
        loop.add_reader(fd, lambda: None)
    assert loop.remove_reader(fd) is False


def test_add_reader_on_closed_loop(loop, pair):
    a, b = pair
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.add_reader(a, lambda: None)
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.add_writer(a, lambda: None)
    assert loop.remove_reader(a) is False
    assert loop.remove_writer(a) is False


def test_close_loop_does_not_close_user_fds(loop, pair):
    a, b = pair
    loop.add_reader(a, lambda: None)
    loop.add_writer(b, lambda: None)
    r, w = os.pipe()
    try:
        loop.add_reader(r, lambda: None)
        loop.close()
        os.fstat(a.fileno())
        os.fstat(b.fileno())
        os.fstat(r)
        b.send(b"still-open")
        assert a.recv(100) == b"still-open"
        os.write(w, b"p")
        assert os.read(r, 1) == b"p"
    finally:
        os.close(r)
        os.close(w)


def test_reader_on_pipe(loop):
    r, w = os.pipe()
    os.set_blocking(r, False)
    try:
        fut = loop.create_future()
        loop.add_reader(r, lambda: fut.done() or fut.set_result(os.read(r, 10)))
        loop.call_later(0.01, os.write, w, b"pipe")
        assert _run_until(loop, fut) == b"pipe"
        assert loop.remove_reader(r) is True
    finally:
        os.close(r)
        os.close(w)


def test_reader_fires_on_peer_close(loop, pair):
    a, b = pair
    fut = loop.create_future()
    loop.add_reader(a, lambda: fut.done() or fut.set_result(a.recv(10)))
    b.close()
    assert _run_until(loop, fut) == b""
    loop.remove_reader(a)


def test_many_readers(loop):
    pairs = [socket.socketpair() for _ in range(50)]
    try:
        got = set()
        done = loop.create_future()

        def on_read(i, s):
            s.recv(10)
            loop.remove_reader(s)
            got.add(i)
            if len(got) == len(pairs) and not done.done():
                done.set_result(None)

        for i, (x, y) in enumerate(pairs):
            x.setblocking(False)
            loop.add_reader(x, on_read, i, x)
        for x, y in reversed(pairs):
            y.send(b"!")
        _run_until(loop, done)
        assert got == set(range(50))
    finally:
        for x, y in pairs:
            x.close()
            y.close()


@pytest.mark.parametrize("kind", ["reader", "writer"])
def test_remove_watch_of_closed_socket_object(loop, kind):
    # A socket closed while watched has fileno() == -1: removing by the
    # object still finds the watch (selectors look the key up by identity),
    # and the fd number is free for the next socket.
    import socket

    add, remove = getattr(loop, f"add_{kind}"), getattr(loop, f"remove_{kind}")
    a, b = socket.socketpair()
    a.setblocking(False)
    add(a, lambda: None)
    a.close()
    assert remove(a) is True
    with pytest.raises(ValueError):
        remove(a)  # no longer watched: just an invalid file object
    c, d = socket.socketpair()
    fired = []

    def on_readable():
        fired.append(c.recv(10))
        loop.stop()

    try:
        loop.add_reader(c, on_readable)
        d.send(b"x")
        loop.call_later(2, loop.stop)
        loop.run_forever()
        assert fired == [b"x"]
        assert loop.remove_reader(c) is True
    finally:
        for s in (b, c, d):
            s.close()
    with pytest.raises(ValueError):
        add(a, lambda: None)  # a closed, unwatched socket is still refused


def _assert_reader_fires(loop, c, d):
    """A reader added on `c`'s fd number fires for data from `d`, and is
    then removed: the number is watched from scratch."""
    fired = loop.create_future()
    loop.add_reader(c.fileno(), lambda: fired.done() or fired.set_result(c.recv(10)))
    d.send(b"x")
    assert _run_until(loop, fired, timeout=2) == b"x"
    assert loop.remove_reader(c.fileno()) is True


@pytest.mark.parametrize("first", ["reader", "writer"])
def test_fd_closed_while_watched_both_ways_is_forgotten(loop, first):
    # libpq does this when an async connect is refused (found by aiopg's
    # suite): it closes the socket while the loop watches it for reading and
    # writing, then the watches are removed by fd number. Removing one of two
    # watches asks the kernel to change the fd's interest set, which fails
    # for a closed fd; as selectors does, the loop raises that error once
    # and forgets the fd, so the other removal finds nothing and a new
    # socket that reuses the number is watched from scratch.
    second = "writer" if first == "reader" else "reader"
    a, b = socket.socketpair()
    fd = a.fileno()
    loop.add_reader(fd, lambda: None)
    loop.add_writer(fd, lambda: None)
    a.close()
    b.close()
    with pytest.raises(OSError) as err:
        getattr(loop, f"remove_{first}")(fd)
    assert err.value.errno == errno.EBADF
    assert getattr(loop, f"remove_{second}")(fd) is False
    assert getattr(loop, f"remove_{first}")(fd) is False

    c, d = socket.socketpair()
    try:
        assert c.fileno() == fd  # the lowest free number: the one just freed
        _assert_reader_fires(loop, c, d)
    finally:
        c.close()
        d.close()


def test_watching_a_reused_fd_number_the_kernel_forgot_raises_once(loop):
    # A reader is left on an fd that is then closed, and a new socket gets
    # the number. Adding a writer asks the kernel to change a watch it no
    # longer has: asyncio raises FileNotFoundError and forgets the fd (it
    # does not quietly watch the new socket with the old reader).
    a, b = socket.socketpair()
    fd = a.fileno()
    loop.add_reader(fd, lambda: None)
    a.close()
    b.close()
    c, d = socket.socketpair()
    try:
        assert c.fileno() == fd
        with pytest.raises(FileNotFoundError):
            loop.add_writer(fd, lambda: None)
        assert loop.remove_reader(fd) is False
        assert loop.remove_writer(fd) is False
        _assert_reader_fires(loop, c, d)
    finally:
        c.close()
        d.close()


HUGE_FD_WATCHES = """
import asyncio, resource, sys
# A regression would try to allocate up to the fd number (32 GiB near
# INT_MAX) and abort the process: cap the address space so it fails fast.
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
if sys.argv[1] == "ferroloop":
    import ferroloop
    loop = ferroloop.new_event_loop()
else:
    loop = asyncio.new_event_loop()

def rss_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 >> 20

before = rss_mib()
for fd in (50_000_000, 2**31 - 1):
    print(loop.remove_reader(fd), loop.remove_writer(fd))
    for add in (loop.add_reader, loop.add_writer):
        try:
            add(fd, print)
        except OSError as e:
            print(type(e).__name__, e)
print("grew", "little" if rss_mib() - before < 64 else f"{rss_mib() - before} MiB")
loop.close()
"""


def test_unwatched_huge_fd_numbers_cost_nothing(loop_kind, tmp_path):
    """Removing a watch that is not there returns False, and a watch on a
    number that is no open fd raises OSError(EBADF), for any fd number:
    neither may make the loop allocate by the size of the number (an
    fd-indexed table did, up to aborting the process)."""
    import subprocess
    import sys

    from conftest import subprocess_env

    script = tmp_path / "huge_fd.py"
    script.write_text(HUGE_FD_WATCHES)
    proc = subprocess.run([sys.executable, str(script), loop_kind],
                          capture_output=True, text=True, timeout=60,
                          env=subprocess_env())
    ebadf = "OSError [Errno 9] Bad file descriptor"
    assert (proc.returncode, proc.stderr) == (0, ""), proc
    assert proc.stdout.splitlines() == [
        "False False", ebadf, ebadf,
        "False False", ebadf, ebadf,
        "grew little"], proc.stdout
