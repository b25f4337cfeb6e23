"""Subprocesses: subprocess_exec, subprocess_shell and their transport.

`subprocess.Popen` runs on the loop's spawner thread, so neither the fork
nor the wait for the child's exec result (nor a slow ``preexec_fn``) blocks
the loop; its exceptions (FileNotFoundError, PermissionError...) reach the
caller. The child's stdin/stdout/stderr become pipe transports. Children are
reaped without a thread per child: a pidfd (Linux) watched by the reactor
says when the child has exited, then ``waitpid(WNOHANG)`` collects the
status. Where pidfds are unavailable, a loop in the main thread polls its
children on SIGCHLD, any other loop on a timer.

The transport follows asyncio's base_subprocess semantics: pipe events and
process_exited are queued until connection_made has been delivered;
connection_lost comes once the process has exited and every pipe is closed,
in either order, and wakes the ``_wait()`` waiters."""

from __future__ import annotations

import collections
import queue
import signal
import subprocess
import threading
import time
import warnings
import weakref
from asyncio import protocols, transports

from . import _compat
from ._ferroloop import ChildWatch

# False: reap by polling waitpid on a timer instead of watching a pidfd.
_USE_PIDFD = True


def _close_popen_pipes(proc) -> None:
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f is not None:
            try:
                f.close()
            except OSError:
                pass


def _kill_and_reap(proc) -> None:
    """Dispose of a child nobody will wait for (runs in its own thread)."""
    _close_popen_pipes(proc)
    try:
        proc.kill()
    except OSError:
        pass
    try:
        proc.wait()
    except OSError:
        pass


class _LoopSpawner:
    """The threads that run one loop's Popen calls: started on demand (up
    to `MAX_THREADS`, so a burst of spawns or a slow ``preexec_fn`` does not
    hold the others up) and kept until the loop closes.

    Long-lived threads rather than a thread per spawn: Linux ties
    PR_SET_PDEATHSIG to the *thread* that forked the child, so a child
    asking to die with its parent must not see its parent thread exit right
    after the spawn (with stock asyncio that thread is the loop's own)."""

    MAX_THREADS = 8

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0

    def submit(self, job) -> None:
        with self._lock:
            start = self._idle == 0 and len(self._threads) < self.MAX_THREADS
            if start:
                thread = threading.Thread(
                    target=self._run, name="ferroloop-spawn", daemon=True
                )
                self._threads.append(thread)
            else:
                self._idle -= 1  # that worker is taken
        self._jobs.put(job)
        if start:
            thread.start()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job()
            except BaseException:  # jobs report their own errors; this is a bug
                _compat.logger().exception("ferroloop spawner job failed")
            job = None
            with self._lock:
                self._idle += 1

    def alive(self) -> bool:
        # False in a forked child: the threads did not survive the fork.
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def stop(self) -> None:
        """Let the threads finish what is queued, then exit. Waits briefly
        for idle threads, never for a slow spawn."""
        with self._lock:
            threads = list(self._threads)
        for _ in threads:
            self._jobs.put(None)
        me = threading.current_thread()
        deadline = time.monotonic() + 0.5
        for t in threads:
            if t is not me:
                t.join(max(0.0, deadline - time.monotonic()))


class _SigchldReaper:
    """Reaping without pidfds, for a loop in the main thread: on SIGCHLD
    (through the loop's own signal handling) every child of this loop is
    polled with waitpid(pid, WNOHANG), one syscall each, no thread.

    Used only when pidfd_open is unavailable, and only if the application
    has no SIGCHLD handler of its own on the loop; otherwise the transport
    polls on a timer."""

    _by_loop: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    @classmethod
    def for_loop(cls, loop):
        reaper = cls._by_loop.get(loop)
        if reaper is not None:
            return reaper
        if threading.current_thread() is not threading.main_thread():
            return None
        if signal.SIGCHLD in loop._signal_handlers:
            return None  # the application's; don't take it over
        reaper = cls._by_loop[loop] = cls(loop)
        return reaper

    def __init__(self, loop) -> None:
        self._loop = weakref.ref(loop)
        self._children: dict = {}
        self._installed = False

    def add(self, transport) -> bool:
        """Watch this child; False if SIGCHLD can't be handled here."""
        loop = self._loop()
        if not self._installed:
            try:
                loop.add_signal_handler(signal.SIGCHLD, self._scan)
            except (RuntimeError, ValueError, OSError):
                self._by_loop.pop(loop, None)
                return False
            self._installed = True
        self._children[transport._pid] = transport
        # The child may have exited before the handler was in place.
        loop.call_soon(self._scan)
        return True

    def discard(self, pid) -> None:
        self._children.pop(pid, None)
        if not self._children and self._installed:
            loop = self._loop()
            self._installed = False
            if loop is not None:
                if not loop.is_closed():
                    loop.remove_signal_handler(signal.SIGCHLD)
                self._by_loop.pop(loop, None)

    def _scan(self) -> None:
        for transport in list(self._children.values()):
            transport._sigchld_scan()


def _dispose_orphan(proc) -> None:
    threading.Thread(
        target=_kill_and_reap, args=(proc,), name="ferroloop-reap", daemon=True
    ).start()


class _SpawnJob:
    """One Popen call in flight: its result, and whether the caller gave up
    waiting (then whoever sees the child last disposes of it)."""

    __slots__ = ("lock", "abandoned", "proc")

    def __init__(self):
        self.lock = threading.Lock()
        self.abandoned = False
        self.proc = None


def _spawn_done(fut, proc, exc) -> None:
    """On the loop: hand the spawn result to the waiting caller."""
    if fut.cancelled():
        return  # the caller's CancelledError handler disposes of the child
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(proc)


def _format_pipe(fd) -> str:
    if fd == subprocess.PIPE:
        return "<pipe>"
    if fd == subprocess.STDOUT:
        return "<stdout>"
    return repr(fd)


class _PipeProto(protocols.Protocol):
    """Protocol of one child pipe: forwards to the subprocess transport."""

    def __init__(self, proc, fd):
        self.proc = proc
        self.fd = fd
        self.pipe = None
        self.disconnected = False

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__} fd={self.fd} pipe={self.pipe!r}>"

    def connection_made(self, transport) -> None:
        self.pipe = transport

    def connection_lost(self, exc) -> None:
        self.disconnected = True
        self.proc._pipe_connection_lost(self.fd, exc)
        self.proc = None

    def pause_writing(self) -> None:
        self.proc._protocol.pause_writing()

    def resume_writing(self) -> None:
        self.proc._protocol.resume_writing()

    def data_received(self, data) -> None:
        self.proc._pipe_data_received(self.fd, data)


class SubprocessTransport(transports.SubprocessTransport):
    """A child process and its pipes."""

    def __init__(self, loop, protocol, stdin, stdout, stderr, extra=None):
        super().__init__(extra)
        self._closed = False
        self._protocol = protocol
        self._loop = loop
        self._proc = None
        self._pid = None
        self._returncode = None
        self._exit_waiters = []
        self._pending_calls = collections.deque()
        self._pipes = {}
        self._finished = False
        self._watch = None
        self._sigchld = None
        self._pidfd = None
        self._poll_handle = None
        if stdin == subprocess.PIPE:
            self._pipes[0] = None
        if stdout == subprocess.PIPE:
            self._pipes[1] = None
        if stderr == subprocess.PIPE:
            self._pipes[2] = None

    def __repr__(self) -> str:
        info = [self.__class__.__name__]
        if self._closed:
            info.append("closed")
        if self._pid is not None:
            info.append(f"pid={self._pid}")
        if self._returncode is not None:
            info.append(f"returncode={self._returncode}")
        elif self._pid is not None:
            info.append("running")
        else:
            info.append("not started")
        stdin = self._pipes.get(0)
        if stdin is not None:
            info.append(f"stdin={stdin.pipe}")
        stdout = self._pipes.get(1)
        stderr = self._pipes.get(2)
        if stdout is not None and stderr is stdout:
            info.append(f"stdout=stderr={stdout.pipe}")
        else:
            if stdout is not None:
                info.append(f"stdout={stdout.pipe}")
            if stderr is not None:
                info.append(f"stderr={stderr.pipe}")
        return "<{}>".format(" ".join(info))

    # ---- start-up --------------------------------------------------------

    def _attach(self, proc, waiter) -> None:
        """Take over a freshly spawned Popen: watch for its exit and connect
        its pipes (on the loop thread)."""
        self._proc = proc
        self._pid = proc.pid
        self._extra["subprocess"] = proc
        self._watch_exit()
        self._loop.create_task(self._connect_pipes(waiter))

    async def _connect_pipes(self, waiter) -> None:
        try:
            proc = self._proc
            loop = self._loop
            if proc.stdin is not None:
                _, pipe = await loop.connect_write_pipe(
                    lambda: _PipeProto(self, 0), proc.stdin
                )
                self._pipes[0] = pipe
            if proc.stdout is not None:
                _, pipe = await loop.connect_read_pipe(
                    lambda: _PipeProto(self, 1), proc.stdout
                )
                self._pipes[1] = pipe
            if proc.stderr is not None:
                _, pipe = await loop.connect_read_pipe(
                    lambda: _PipeProto(self, 2), proc.stderr
                )
                self._pipes[2] = pipe
            assert self._pending_calls is not None
            loop.call_soon(self._protocol.connection_made, self)
            for callback, data in self._pending_calls:
                loop.call_soon(callback, *data)
            self._pending_calls = None
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            if waiter is not None and not waiter.cancelled():
                waiter.set_exception(exc)
        else:
            if waiter is not None and not waiter.cancelled():
                waiter.set_result(None)

    # ---- reaping -----------------------------------------------------------

    def _watch_exit(self) -> None:
        self._watch = watch = ChildWatch(self._pid, _USE_PIDFD)
        fd = watch.fileno()
        if fd is not None:
            self._pidfd = fd
            self._loop._add_reader(fd, self._pidfd_ready)
            return
        reaper = _SigchldReaper.for_loop(self._loop)
        if reaper is not None and reaper.add(self):
            self._sigchld = reaper
        else:
            self._poll_delay = 0.001
            self._poll_handle = self._loop.call_later(self._poll_delay, self._poll_exit)

    def _stop_watching(self) -> None:
        pidfd = self._pidfd
        if pidfd is not None:
            self._pidfd = None
            loop = self._loop
            if loop is not None:
                loop._remove_reader(pidfd)
        if self._watch is not None:
            self._watch.close()
        if self._poll_handle is not None:
            self._poll_handle.cancel()
            self._poll_handle = None
        if self._sigchld is not None:
            self._sigchld.discard(self._pid)
            self._sigchld = None

    def _try_reap(self):
        """waitpid(WNOHANG): the exit code, or None while the child runs."""
        try:
            return self._watch.try_reap()
        except ChildProcessError:
            # Someone else reaped it (Popen.poll() in close()/send_signal(),
            # or a foreign SIGCHLD reaper).
            rc = self._proc.returncode if self._proc is not None else None
            if rc is None:
                _compat.logger().warning(
                    "Unknown child process pid %d, will report returncode 255",
                    self._pid,
                )
                rc = 255
            return rc

    def _pidfd_ready(self) -> None:
        rc = self._try_reap()
        if rc is None:
            return
        self._stop_watching()
        self._reaped(rc)

    def _sigchld_scan(self) -> None:
        rc = self._try_reap()
        if rc is not None:
            self._stop_watching()
            self._reaped(rc)

    def _poll_exit(self) -> None:
        self._poll_handle = None
        rc = self._try_reap()
        if rc is None:
            self._poll_delay = min(self._poll_delay * 2, 0.05)
            self._poll_handle = self._loop.call_later(self._poll_delay, self._poll_exit)
            return
        self._reaped(rc)

    def _reaped(self, returncode) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.returncode = returncode
        if self._loop.get_debug():
            _compat.logger().debug("process %s exited with returncode %s", self._pid, returncode)
        # Three hops to _process_exited, as with asyncio's child watchers
        # (watcher -> call_soon_threadsafe -> call_soon_threadsafe(call_soon)
        # -> _process_exited): a child whose pipes close as it exits reports
        # pipe_connection_lost before process_exited, in asyncio's order.
        loop = self._loop
        loop.call_soon(loop.call_soon, loop.call_soon, self._process_exited, returncode)

    # ---- BaseTransport ------------------------------------------------------

    def set_protocol(self, protocol) -> None:
        self._protocol = protocol

    def get_protocol(self):
        return self._protocol

    def is_closing(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for proto in self._pipes.values():
            if proto is None:
                continue
            proto.pipe.close()
        if (
            self._proc is not None
            and self._returncode is None
            and self._proc.poll() is None
        ):
            if self._loop.get_debug():
                _compat.logger().warning("Close running child process: kill %r", self)
            try:
                self._proc.kill()
            except ProcessLookupError:
                pass

    def __del__(self, _warn=warnings.warn) -> None:
        if not self._closed:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self.close()
        # The native ChildWatch closes its pidfd when it goes away.

    # ---- SubprocessTransport -------------------------------------------------

    def get_pid(self):
        return self._pid

    def get_returncode(self):
        return self._returncode

    def get_pipe_transport(self, fd):
        if fd in self._pipes:
            return self._pipes[fd].pipe
        return None

    def _check_proc(self) -> None:
        if self._proc is None:
            raise ProcessLookupError()

    def send_signal(self, signal) -> None:
        self._check_proc()
        self._proc.send_signal(signal)

    def terminate(self) -> None:
        self._check_proc()
        self._proc.terminate()

    def kill(self) -> None:
        self._check_proc()
        self._proc.kill()

    # ---- events, in asyncio's order -------------------------------------------

    def _call(self, cb, *data) -> None:
        if self._pending_calls is not None:
            self._pending_calls.append((cb, data))
        else:
            self._loop.call_soon(cb, *data)

    def _pipe_connection_lost(self, fd, exc) -> None:
        self._call(self._protocol.pipe_connection_lost, fd, exc)
        self._try_finish()

    def _pipe_data_received(self, fd, data) -> None:
        self._call(self._protocol.pipe_data_received, fd, data)

    def _process_exited(self, returncode) -> None:
        assert returncode is not None, returncode
        assert self._returncode is None, self._returncode
        if self._loop.get_debug():
            _compat.logger().info("%r exited with return code %r", self, returncode)
        self._returncode = returncode
        if self._proc.returncode is None:
            self._proc.returncode = returncode
        self._call(self._protocol.process_exited)
        self._try_finish()

    async def _wait(self):
        """Wait for the process to exit; return its return code."""
        if self._returncode is not None:
            return self._returncode
        waiter = self._loop.create_future()
        self._exit_waiters.append(waiter)
        return await waiter

    def _try_finish(self) -> None:
        assert not self._finished
        if self._returncode is None:
            return
        if all(p is not None and p.disconnected for p in self._pipes.values()):
            self._finished = True
            self._call(self._call_connection_lost, None)

    def _call_connection_lost(self, exc) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            for waiter in self._exit_waiters:
                if not waiter.cancelled():
                    waiter.set_result(self._returncode)
            self._exit_waiters = None
            self._loop = None
            self._proc = None
            self._protocol = None


def _check_popen_args(universal_newlines, shell, want_shell, bufsize, text, encoding, errors):
    """asyncio's refusals, in its order and words: the pipes are bytes
    streams, unbuffered, and exec/shell is decided by the method called."""
    if universal_newlines:
        raise ValueError("universal_newlines must be False")
    if bool(shell) != want_shell:
        raise ValueError("shell must be True" if want_shell else "shell must be False")
    if bufsize != 0:
        raise ValueError("bufsize must be 0")
    if text:
        raise ValueError("text must be False")
    if encoding is not None:
        raise ValueError("encoding must be None")
    if errors is not None:
        raise ValueError("errors must be None")


class SubprocessMethods:
    """Mixin for `Loop`: subprocess_exec, subprocess_shell."""

    def _stop_spawners(self) -> None:
        """Called by Loop.close(): stop this loop's spawner threads."""
        spawner = self.__dict__.pop("_spawner", None)
        if spawner is not None:
            spawner.stop()

    def _log_subprocess(self, msg, stdin, stdout, stderr) -> None:
        info = [msg]
        if stdin is not None:
            info.append(f"stdin={_format_pipe(stdin)}")
        if stdout is not None and stderr == subprocess.STDOUT:
            info.append(f"stdout=stderr={_format_pipe(stdout)}")
        else:
            if stdout is not None:
                info.append(f"stdout={_format_pipe(stdout)}")
            if stderr is not None:
                info.append(f"stderr={_format_pipe(stderr)}")
        _compat.logger().debug(" ".join(info))

    async def _spawn(self, args, shell, stdin, stdout, stderr, bufsize, kwargs):
        """Popen on a spawner thread; a cancelled caller's child is killed
        and reaped there."""
        fut = self.create_future()
        job = _SpawnJob()

        def popen():
            proc = exc = None
            try:
                # Looked up at call time: tests patch subprocess.Popen.
                proc = subprocess.Popen(
                    args,
                    shell=shell,
                    stdin=stdin,
                    stdout=stdout,
                    stderr=stderr,
                    universal_newlines=False,
                    bufsize=bufsize,
                    **kwargs,
                )
            except BaseException as e:
                exc = e
            with job.lock:
                job.proc = proc
                abandoned = job.abandoned
            if abandoned:
                if proc is not None:
                    _kill_and_reap(proc)
                return
            try:
                self.call_soon_threadsafe(_spawn_done, fut, proc, exc)
            except RuntimeError:
                # The loop closed meanwhile: nobody will collect this child.
                if proc is not None:
                    _kill_and_reap(proc)
            finally:
                exc = None

        spawner = self.__dict__.get("_spawner")
        if spawner is None or (spawner._threads and not spawner.alive()):
            spawner = self._spawner = _LoopSpawner()
        spawner.submit(popen)
        try:
            return await fut
        except BaseException:
            with job.lock:
                job.abandoned = True
                proc = job.proc
            if proc is not None:
                _dispose_orphan(proc)
            raise

    async def _make_subprocess_transport(
        self, protocol, args, shell, stdin, stdout, stderr, bufsize, extra=None, **kwargs
    ):
        transp = SubprocessTransport(self, protocol, stdin, stdout, stderr, extra)
        try:
            proc = await self._spawn(args, shell, stdin, stdout, stderr, bufsize, kwargs)
        except BaseException:
            transp.close()
            raise
        waiter = self.create_future()
        transp._attach(proc, waiter)
        if self.get_debug():
            program = args if isinstance(args, (bytes, str)) else args[0]
            _compat.logger().debug("process %r created: pid %s", program, transp._pid)
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transp.close()
            await transp._wait()
            raise
        return transp

    async def subprocess_shell(
        self,
        protocol_factory,
        cmd,
        *,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=False,
        shell=True,
        bufsize=0,
        encoding=None,
        errors=None,
        text=None,
        **kwargs,
    ):
        """Run cmd through the shell; return (transport, protocol)."""
        if not isinstance(cmd, (bytes, str)):
            raise ValueError("cmd must be a string")
        _check_popen_args(universal_newlines, shell, True, bufsize, text, encoding, errors)
        return await self._start_subprocess(
            protocol_factory, cmd, True, f"run shell command {cmd!r}",
            stdin, stdout, stderr, bufsize, kwargs,
        )

    async def subprocess_exec(
        self,
        protocol_factory,
        program,
        *args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=False,
        shell=False,
        bufsize=0,
        encoding=None,
        errors=None,
        text=None,
        **kwargs,
    ):
        """Run program with args; return (transport, protocol)."""
        _check_popen_args(universal_newlines, shell, False, bufsize, text, encoding, errors)
        return await self._start_subprocess(
            protocol_factory, (program,) + args, False, f"execute program {program!r}",
            stdin, stdout, stderr, bufsize, kwargs,
        )

    async def _start_subprocess(self, protocol_factory, popen_args, shell, what,
                     stdin, stdout, stderr, bufsize, kwargs):
        """What subprocess_exec and subprocess_shell share once their
        arguments are checked: make the protocol, log in debug mode, start
        the transport."""
        protocol = protocol_factory()
        debug = self.get_debug()
        if debug:
            self._log_subprocess(what, stdin, stdout, stderr)
        transport = await self._make_subprocess_transport(
            protocol, popen_args, shell, stdin, stdout, stderr, bufsize, **kwargs
        )
        if debug:
            _compat.logger().info("%s: %r", what, transport)
        return transport, protocol
