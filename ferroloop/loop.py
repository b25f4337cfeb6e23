"""`Loop`: ferroloop's event loop, the public class behind `new_event_loop()`.

The native base (`_ferroloop.LoopCore`) owns the hot paths: the ready queue,
timers, the epoll reactor, `call_soon`/`call_at` and the loop turn itself.
This class adds what runs once per loop or per run and is clearest in
Python, written to behave exactly as asyncio's `BaseEventLoop` and
`_UnixSelectorEventLoop` do.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import os
import signal
import sys
import threading
import traceback
import warnings
import weakref
from asyncio import base_events, coroutines, futures, tasks
from typing import Any, Callable

from . import _compat
from ._ferroloop import LoopCore, _fast_methods

_native_is_closed = LoopCore.is_closed
_object_setattr = object.__setattr__
_object_delattr = object.__delattr__
from .datagram import DatagramMethods
from .dns import ResolverMethods
from .network import NetworkMethods
from .pipes import PipeMethods
from .sockets import SocketMethods
from .subprocess import SubprocessMethods

# asyncio.constants.DEBUG_STACK_DEPTH
_DEBUG_STACK_DEPTH = 10


def _sighandler_noop(signum, frame):
    """Python-level no-op: the C handler's write to the wakeup fd wakes the
    loop, which runs the real callback as a loop callback."""


class Loop(
    # LoopCore first: the native methods check their receiver's type by
    # walking the MRO, so the shorter the walk the cheaper every call_soon.
    LoopCore,
    NetworkMethods,
    DatagramMethods,
    PipeMethods,
    SubprocessMethods,
    SocketMethods,
    ResolverMethods,
    asyncio.AbstractEventLoop,
):
    """An asyncio event loop implemented in Rust.

    Use it like any asyncio loop: ``asyncio.run(main(),
    loop_factory=...)`` (3.12+), ``asyncio.Runner(loop_factory=ferroloop.
    new_event_loop)``, or ``ferroloop.install()`` to make it the default.
    """

    def __init__(self) -> None:
        self._thread_id: int | None = None
        self._exception_handler: Callable[..., Any] | None = None
        self._task_factory: Callable[..., Any] | None = None
        self._default_executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._executor_shutdown_called = False
        self._asyncgens: weakref.WeakSet = weakref.WeakSet()
        self._asyncgens_shutdown_called = False
        self._current_handle = None
        self._coroutine_origin_tracking_enabled = False
        self._coroutine_origin_tracking_saved_depth: int | None = None
        self._pid = os.getpid()
        # fd -> the file object add_reader/add_writer was given, so removing
        # by that object still works after it was closed (fileno() == -1),
        # as a selector finds its key by object identity.
        self._watched_fileobjs: dict[int, Any] = {}
        self._sync_time_source()  # a subclass may define its own time()
        # fd -> transport, for asyncio's "fd is used by a transport" check.
        self._transports: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        # Listening Unix sockets to unlink when they stop serving (inode at
        # bind time); asyncio's create_unix_server fills it from 3.13 on.
        self._unix_server_sockets: dict[Any, int] = {}
        # Numeric getaddrinfo answers (see dns.ResolverMethods).
        self._numeric_answers: dict = {}
        # Until close(), the loop refers to itself, as a stock loop does
        # through its self-pipe's reader handle. So an unclosed loop is freed,
        # and warns "unclosed event loop", when the cyclic collector runs, not
        # at its last reference: test suites time that warning around
        # gc.collect(), and at interpreter exit it stays silent, as on stock.
        self._open_loop_cycle = self
        self.set_debug(coroutines._is_debug_mode())

    # Methods CPython's C Task and Future look up on the loop for every
    # wake-up and every new future (and that user code calls most).
    _HOT_NATIVE_METHODS = (
        "call_soon",
        "call_soon_threadsafe",
        "call_at",
        "call_later",
        "time",
        "get_debug",
    )

    def _bind_hot_methods(self) -> tuple[tuple[str, Any], ...]:
        """For the length of a run, keep bound native methods in the instance
        dict: an attribute found there is returned as is, where a class-level
        method is bound anew (an allocation) on every `loop.call_soon` lookup
        that C Tasks and Futures make. Only while running, because each one
        holds the loop: kept longer, they would tie every loop into a
        reference cycle with itself, and a closed loop would wait for the
        cyclic collector instead of being freed when dropped, as a stock loop
        is. A subclass's override and an attribute the user assigned (as test
        suites do with mock.patch.object) are left alone. Returns what was
        bound, for `_unbind_hot_methods`."""
        cls = type(self)
        d = self.__dict__
        # call_soon and call_soon_threadsafe (once per callback) get direct
        # vectorcall entries; same behaviour, less call overhead.
        fast = _fast_methods(self)
        bound = []
        for name in self._HOT_NATIVE_METHODS:
            native = getattr(LoopCore, name)
            if name not in d and getattr(cls, name) is native:
                bound.append((name, fast.get(name) or native.__get__(self, cls)))
        # create_task's native entry runs the common case (no factory, no
        # debug) and hands every other call to Loop.create_task below;
        # create_future's is Loop.create_future without the Python frame.
        for name in ("create_task", "create_future"):
            if name not in d and getattr(cls, name) is getattr(Loop, name):
                bound.append((name, fast[name]))
        d.update(bound)
        return tuple(bound)

    def _unbind_hot_methods(self, bound: tuple[tuple[str, Any], ...]) -> None:
        # Entries replaced during the run belong to whoever replaced them.
        d = self.__dict__
        for name, method in bound:
            if d.get(name) is method:
                del d[name]

    def __repr__(self) -> str:
        return (
            f"<{self.__class__.__name__} running={self.is_running()} "
            f"closed={self.is_closed()} debug={self.get_debug()}>"
        )

    def __del__(self, _warn=warnings.warn, _finalizing=sys.is_finalizing) -> None:
        if not self.is_closed():
            _warn(f"unclosed event loop {self!r}", ResourceWarning, source=self)
            if self.is_running():
                return
            if not _finalizing():
                self.close()
                return
            # Interpreter shutdown: module globals that close() reads (the
            # debug log's logger, sys, os) may already be None. An unclosed
            # loop is normally never finalized here, as a stock one (see
            # _open_loop_cycle); if one is (a subclass that skipped
            # __init__), it closes what needs no globals: its fds and its
            # pending callbacks.
            self._close_core()

    # ---- running and stopping ------------------------------------------------

    def _check_closed(self) -> None:
        # The native flag, not the public (patchable) is_closed(): as
        # BaseEventLoop reads its private _closed.
        if _native_is_closed(self):
            raise RuntimeError("Event loop is closed")

    # A replaced `time` (mock.patch.object(loop, "time"), as aiohttp's tests
    # do) must steer the native scheduler, as self.time() steers
    # BaseEventLoop's. Hooked here, in Python, so object.__setattr__ still
    # works on loops (a C-level hook would make CPython refuse it).
    def __setattr__(self, name: str, value: Any) -> None:
        _object_setattr(self, name, value)
        if name == "time":
            self._sync_time_source()

    def __delattr__(self, name: str) -> None:
        _object_delattr(self, name)
        if name == "time":
            self._sync_time_source()

    @property
    def _closed(self) -> bool:
        """BaseEventLoop's flag, which test suites and libraries read."""
        return _native_is_closed(self)

    def _check_running(self) -> None:
        if self.is_running():
            raise RuntimeError("This event loop is already running")
        if _compat.get_running_loop() is not None:
            raise RuntimeError(
                "Cannot run the event loop while another loop is running"
            )

    def is_running(self) -> bool:
        return self._thread_id is not None

    def run_forever(self) -> None:
        """Run until stop() is called."""
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self.get_debug())
        old_agen_hooks = sys.get_asyncgen_hooks()
        hot: tuple[tuple[str, Any], ...] = ()
        try:
            hot = self._bind_hot_methods()
            self._thread_id = threading.get_ident()
            sys.set_asyncgen_hooks(
                firstiter=self._asyncgen_firstiter_hook,
                finalizer=self._asyncgen_finalizer_hook,
            )
            _compat.set_running_loop(self)
            if "_run_once" in self.__dict__ or type(self)._run_once is not LoopCore._run_once:
                # A subclass or a test replaced _run_once: drive it from Python
                # so the replacement sees every turn.
                try:
                    while True:
                        self._run_once()
                        if self._stopping:
                            break
                finally:
                    self._reset_stopping()
            else:
                self._run_until_stopped()
        finally:
            self._thread_id = None
            _compat.set_running_loop(None)
            self._set_coroutine_origin_tracking(False)
            sys.set_asyncgen_hooks(*old_agen_hooks)
            self._unbind_hot_methods(hot)

    def run_until_complete(self, future):
        """Run until the future (or coroutine) is done; return its result."""
        self._check_closed()
        self._check_running()
        new_task = not futures.isfuture(future)
        future = tasks.ensure_future(future, loop=self)
        if new_task:
            # An exception raised by the loop itself is reported to the
            # caller; don't also log "Task exception was never retrieved".
            future._log_destroy_pending = False
        future.add_done_callback(_compat.run_until_complete_cb)
        try:
            self.run_forever()
        except BaseException:
            if new_task and future.done() and not future.cancelled():
                future.exception()
            raise
        finally:
            future.remove_done_callback(_compat.run_until_complete_cb)
        if not future.done():
            raise RuntimeError("Event loop stopped before Future completed.")
        return future.result()

    def close(self) -> None:
        """Close the loop: drop pending callbacks, release the loop's fds and
        shut the default executor down without waiting. User fds stay open."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self._closed:
            return
        if self.get_debug():
            _compat.logger().debug("Close %r", self)
        if self._has_signal_handles():
            if not sys.is_finalizing() and os.getpid() == self._pid:
                for sig in self._signal_numbers():
                    self.remove_signal_handler(sig)
            else:
                warnings.warn(
                    f"Closing the loop {self!r} on interpreter shutdown "
                    f"stage, skipping signal handlers removal",
                    ResourceWarning,
                    source=self,
                )
        self._stop_spawners()
        self._close_core()
        self.__dict__.pop("_open_loop_cycle", None)
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)

    # ---- futures and tasks ---------------------------------------------------

    def create_future(self) -> asyncio.Future:
        return futures.Future(loop=self)

    # asyncio's own method: its signature and its rules change between
    # versions (how name and context reach a task factory; from 3.14 any
    # keyword, eager_start among them, goes on to Task or the factory as
    # given). The native entry bound while running (`_bind_hot_methods`)
    # makes the common call, and hands every other one to this.
    create_task = base_events.BaseEventLoop.create_task

    def set_task_factory(self, factory) -> None:
        if factory is not None and not callable(factory):
            raise TypeError("task factory must be a callable or None")
        self._task_factory = factory

    def get_task_factory(self):
        return self._task_factory

    # ---- callbacks: checks the native side asks for --------------------------

    def _check_callback(self, callback, method: str) -> None:
        if coroutines.iscoroutine(callback) or _compat.iscoroutinefunction(
            callback
        ):
            raise TypeError(f"coroutines cannot be used with {method}()")
        if not callable(callback):
            raise TypeError(
                f"a callable object was expected by {method}(), got {callback!r}"
            )

    def _check_thread(self) -> None:
        """Debug mode: refuse non-thread-safe calls from a foreign thread."""
        if self._thread_id is None:
            return
        if threading.get_ident() != self._thread_id:
            raise RuntimeError(
                "Non-thread-safe operation invoked on an event loop other "
                "than the current one"
            )

    def _report_callback_error(self, handle, exc: BaseException) -> None:
        from asyncio import format_helpers

        cb = format_helpers._format_callback_source(handle._callback, handle._args)
        context = {
            "message": f"Exception in callback {cb}",
            "exception": exc,
            "handle": handle,
        }
        if handle._source_traceback:
            context["source_traceback"] = handle._source_traceback
        self.call_exception_handler(context)

    def _log_slow_callback(self, handle, dt: float) -> None:
        _compat.logger().warning(
            "Executing %s took %.3f seconds", _compat.format_handle(handle), dt
        )

    # ---- error handling ------------------------------------------------------

    def get_exception_handler(self):
        return self._exception_handler

    def set_exception_handler(self, handler) -> None:
        if handler is not None and not callable(handler):
            raise TypeError(
                f"A callable object or None is expected, got {handler!r}"
            )
        self._exception_handler = handler

    def default_exception_handler(self, context: dict) -> None:
        """Log the context on the 'asyncio' logger, as asyncio does."""
        message = context.get("message") or "Unhandled exception in event loop"
        exception = context.get("exception")
        if exception is not None:
            exc_info: Any = (type(exception), exception, exception.__traceback__)
        else:
            exc_info = False
        if (
            "source_traceback" not in context
            and self._current_handle is not None
            and self._current_handle._source_traceback
        ):
            context["handle_traceback"] = self._current_handle._source_traceback
        log_lines = [message]
        for key in sorted(context):
            if key in {"message", "exception"}:
                continue
            value = context[key]
            if key == "source_traceback":
                tb = "".join(traceback.format_list(value))
                value = "Object created at (most recent call last):\n" + tb.rstrip()
            elif key == "handle_traceback":
                tb = "".join(traceback.format_list(value))
                value = "Handle created at (most recent call last):\n" + tb.rstrip()
            else:
                value = repr(value)
            log_lines.append(f"{key}: {value}")
        _compat.logger().error("\n".join(log_lines), exc_info=exc_info)

    # asyncio's own: a failing handler is logged, never raised (except
    # SystemExit and KeyboardInterrupt), through asyncio.base_events.logger;
    # from 3.12 on a custom handler runs in the context of the task, future
    # or handle the report is about.
    call_exception_handler = base_events.BaseEventLoop.call_exception_handler

    # ---- debug ---------------------------------------------------------------

    @property
    def _debug(self) -> bool:
        # The flag itself, as BaseEventLoop's attribute is: not get_debug(),
        # which a subclass may override (and which a class mixing in
        # BaseEventLoop, as looptime's patch does, answers with _debug).
        return LoopCore.get_debug(self)

    @_debug.setter
    def _debug(self, enabled: bool) -> None:
        # BaseEventLoop's plain flag: assigning it switches debug checks
        # without set_debug()'s coroutine origin tracking.
        self._set_debug_flag(bool(enabled))

    def set_debug(self, enabled: bool) -> None:
        self._set_debug_flag(bool(enabled))
        if self.is_running():
            self.call_soon_threadsafe(self._set_coroutine_origin_tracking, enabled)

    def _set_coroutine_origin_tracking(self, enabled: bool) -> None:
        if bool(enabled) == bool(self._coroutine_origin_tracking_enabled):
            return
        if enabled:
            self._coroutine_origin_tracking_saved_depth = (
                sys.get_coroutine_origin_tracking_depth()
            )
            sys.set_coroutine_origin_tracking_depth(_DEBUG_STACK_DEPTH)
        else:
            sys.set_coroutine_origin_tracking_depth(
                self._coroutine_origin_tracking_saved_depth
            )
        self._coroutine_origin_tracking_enabled = enabled

    # ---- async generators and executors ---------------------------------------

    def _asyncgen_finalizer_hook(self, agen) -> None:
        self._asyncgens.discard(agen)
        if not self.is_closed():
            self.call_soon_threadsafe(self.create_task, agen.aclose())

    def _asyncgen_firstiter_hook(self, agen) -> None:
        if self._asyncgens_shutdown_called:
            warnings.warn(
                f"asynchronous generator {agen!r} was scheduled after "
                f"loop.shutdown_asyncgens() call",
                ResourceWarning,
                source=self,
            )
        self._asyncgens.add(agen)

    # asyncio's own code, so behaviour and names match the running Python's
    # exactly (warning filters match 'BaseEventLoop.shutdown_asyncgens'; 3.12
    # adds shutdown_default_executor's timeout). They need only what the loop
    # keeps where BaseEventLoop keeps it: _asyncgens, _default_executor and
    # the *_shutdown_called flags.
    shutdown_asyncgens = base_events.BaseEventLoop.shutdown_asyncgens
    shutdown_default_executor = base_events.BaseEventLoop.shutdown_default_executor
    _do_shutdown = base_events.BaseEventLoop._do_shutdown

    def _check_default_executor(self) -> None:
        if self._executor_shutdown_called:
            raise RuntimeError("Executor shutdown has been called")

    def run_in_executor(self, executor, func, *args) -> asyncio.Future:
        self._check_closed()
        if self.get_debug():
            self._check_callback(func, "run_in_executor")
        if executor is None:
            executor = self._default_executor
            self._check_default_executor()
            if executor is None:
                executor = concurrent.futures.ThreadPoolExecutor(
                    thread_name_prefix="asyncio"
                )
                self._default_executor = executor
        return futures.wrap_future(executor.submit(func, *args), loop=self)

    def set_default_executor(self, executor) -> None:
        if not isinstance(executor, concurrent.futures.ThreadPoolExecutor):
            raise TypeError("executor must be ThreadPoolExecutor instance")
        self._default_executor = executor

    # ---- file descriptors ------------------------------------------------------

    def _watched_fd(self, fileobj) -> int:
        """The fd of `fileobj`; for a closed file object that is watched,
        the fd it was watched under."""
        try:
            return _fileobj_to_fd(fileobj)
        except ValueError:
            for fd, obj in self._watched_fileobjs.items():
                if obj is fileobj:
                    return fd
            raise

    def _ensure_fd_no_transport(self, fd) -> None:
        """Refuse to watch an fd a ferroloop transport owns (as asyncio does)."""
        if not self._transports:
            return
        try:
            fileno = self._watched_fd(fd)
        except ValueError:
            return  # the add/remove call reports the bad fd itself
        transport = self._transports.get(fileno)
        if transport is not None and not transport.is_closing():
            raise RuntimeError(
                f"File descriptor {fd!r} is used by transport {transport!r}"
            )

    def _remember_fileobj(self, fileobj) -> None:
        if not isinstance(fileobj, int):
            self._watched_fileobjs[_fileobj_to_fd(fileobj)] = fileobj

    def _forget_fileobj(self, fd: int) -> None:
        if fd in self._watched_fileobjs and self._get_watch(fd) == (None, None):
            del self._watched_fileobjs[fd]

    def add_reader(self, fd, callback, *args) -> None:
        self._ensure_fd_no_transport(fd)
        self._add_reader(fd, callback, *args)
        self._remember_fileobj(fd)

    def remove_reader(self, fd) -> bool:
        return self._remove_watch(fd, self._remove_reader)

    def add_writer(self, fd, callback, *args) -> None:
        self._ensure_fd_no_transport(fd)
        self._add_writer(fd, callback, *args)
        self._remember_fileobj(fd)

    def remove_writer(self, fd) -> bool:
        return self._remove_watch(fd, self._remove_writer)

    def _remove_watch(self, fd, remove: Callable[[Any], bool]) -> bool:
        self._ensure_fd_no_transport(fd)
        if self._closed:
            return remove(fd)  # False, as asyncio answers on a closed loop
        fileno = self._watched_fd(fd)
        removed = remove(fileno)
        self._forget_fileobj(fileno)
        return removed

    # ---- signals -------------------------------------------------------------

    def _check_signal(self, sig) -> None:
        if not isinstance(sig, int):
            raise TypeError(f"sig must be an int, not {sig!r}")
        if sig not in signal.valid_signals():
            raise ValueError(f"invalid signal number {sig}")

    def add_signal_handler(self, sig: int, callback, *args) -> None:
        """Run callback(*args) on the loop when sig arrives. The OS handler is
        in place when this returns, so a signal sent right after is seen."""
        if coroutines.iscoroutine(callback) or _compat.iscoroutinefunction(
            callback
        ):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        self._check_signal(sig)
        self._check_closed()
        try:
            # Only the main thread may do this; Python raises ValueError
            # elsewhere, which asyncio reports as RuntimeError.
            signal.set_wakeup_fd(self._signal_wakeup_fd())
        except (ValueError, OSError) as exc:
            raise RuntimeError(str(exc))
        self._set_signal_handle(sig, callback, *args)
        try:
            signal.signal(sig, _sighandler_noop)
            # Restart interrupted system calls instead of failing with EINTR.
            signal.siginterrupt(sig, False)
        except OSError as exc:
            self._pop_signal_handle(sig)
            if not self._has_signal_handles():
                try:
                    signal.set_wakeup_fd(-1)
                except (ValueError, OSError) as nexc:
                    _compat.logger().info("set_wakeup_fd(-1) failed: %s", nexc)
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig} cannot be caught")
            raise

    def remove_signal_handler(self, sig: int) -> bool:
        """Remove the handler for sig; True if there was one."""
        self._check_signal(sig)
        if not self._pop_signal_handle(sig):
            return False
        handler = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        try:
            signal.signal(sig, handler)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig} cannot be caught")
            raise
        if not self._has_signal_handles():
            try:
                signal.set_wakeup_fd(-1)
            except (ValueError, OSError) as exc:
                _compat.logger().info("set_wakeup_fd(-1) failed: %s", exc)
        return True

    @property
    def _signal_handlers(self) -> dict:
        return {sig: True for sig in self._signal_numbers()}

    @property
    def _scheduled(self) -> list:
        # A snapshot of the pending TimerHandles, earliest first (a valid
        # heapq heap); changing the list does not change the loop.
        return self._timer_snapshot()


_compat.follow_base_patches(Loop)


def _fileobj_to_fd(fileobj) -> int:
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"Invalid file object: {fileobj!r}") from None
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return fd
