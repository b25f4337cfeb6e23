//! `LoopCore`: the native base of `ferroloop.Loop`. It owns the ready queue,
//! the timer heap, the reactor, the self-pipe and the signal table, and runs
//! loop turns. Everything that happens once per run or per loop (asyncgen
//! hooks, executors, exception-handler policy) is in the Python subclass.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyList, PyTuple};

use crate::gil_cell::GilCell;
use crate::handles::{is_fatal, Handle, HandleContext, RunOutcome, TimerHandle};
use crate::reactor::{Reactor, Readiness};
use crate::self_pipe::SelfPipe;
use crate::signals::SignalHandlers;
use crate::timers::{monotonic, monotonic_resolution, TimerHeap};

/// (reader, writer) handles watching one fd.
type WatchPair = (Option<Py<Handle>>, Option<Py<Handle>>);

/// Which kind of watch `add_watch` installs.
#[derive(Clone, Copy)]
enum Watching {
    Reader,
    Writer,
    DrainingReader,
}

/// Longest single poll, as asyncio's `MAXIMUM_SELECT_TIMEOUT` (one day).
const MAX_POLL_TIMEOUT: f64 = 24.0 * 3600.0;

#[pyclass(module = "ferroloop._ferroloop", subclass, frozen)]
pub struct LoopCore {
    ready: crate::ready_queue::ReadyQueue,
    timers: GilCell<TimerHeap>,
    reactor: Reactor,
    self_pipe: SelfPipe,
    signals: SignalHandlers,
    /// Scratch buffers reused across turns (only the running thread uses them).
    batch: GilCell<VecDeque<Py<Handle>>>,
    io_events: GilCell<Vec<(RawFd, Readiness)>>,
    stopping: AtomicBool,
    closed: AtomicBool,
    debug: AtomicBool,
    slow_callback_duration: AtomicU64,
    clock_resolution: f64,
    /// Stream transports with writes to send when the running callback
    /// returns (one vectored write each).
    pub(crate) pending_writes: GilCell<Vec<Py<crate::stream_transport::StreamTransport>>>,
    pub(crate) pending_writes_spare: GilCell<Vec<Py<crate::stream_transport::StreamTransport>>>,
    /// Stream transports whose peer is another transport of this loop
    /// (`StreamTransport::_link_peer`), with writes that wait for the end of
    /// the turn, or for that peer's next read if it comes first: only the
    /// peer reads that socket (short of a dup of its fd), so the wait
    /// cannot be observed, and a turn's reads and writes each go out in a run.
    pub(crate) deferred_writes: GilCell<Vec<Py<crate::stream_transport::StreamTransport>>>,
    /// This loop's TCP transports by `(sockname, peername)`, as weak
    /// references: how a new transport finds its peer.
    pub(crate) stream_endpoints: Py<PyDict>,
    /// The thread running turns (`pthread_self`), 0 when none is: only
    /// writes made on that thread wait for their callback to return.
    pub(crate) turning: AtomicU64,
    /// Set when `loop.time` is not the native clock: a test's patch
    /// (`mock.patch.object(loop, "time")`) or a subclass's override. The
    /// loop then schedules and fires timers by `self.time()`, as
    /// BaseEventLoop does. Looked up on each use, not kept: a kept bound
    /// method would tie the loop into a reference cycle with itself.
    time_patched: AtomicBool,
    /// Debug mode: the handle running now (BaseEventLoop's `_current_handle`).
    current_handle: GilCell<Option<PyObject>>,
    /// Finished one-shot handles nobody else held, emptied and kept for
    /// the next `call_soon` (`Handle::recycle`): every task step and future
    /// callback goes through a handle, and reusing one skips an object
    /// allocation, its GC bookkeeping and its deallocation.
    spare_handles: GilCell<Vec<Py<Handle>>>,
    /// The spare list's current limit (see `SPARE_HANDLES_FLOOR`).
    spare_limit: AtomicUsize,
    /// `bytes` of finished reads and writes nobody kept, refilled by later
    /// reads of the same size (`SpareBytes`).
    pub(crate) spare_bytes: crate::read_buffer::SpareBytes,
    /// `asyncio.tasks` (its `Task` is looked up per call, as asyncio does,
    /// so a patched `tasks.Task` is honoured) and the `("loop",)` keyword
    /// names, for the native `create_task` (`fast_entry`).
    pub(crate) tasks_module: PyObject,
    /// `asyncio.futures`, for the native `create_future` (same reasoning).
    pub(crate) futures_module: PyObject,
    pub(crate) loop_kwnames: Py<PyTuple>,
}

/// How many emptied handles a loop may keep for reuse. The limit follows
/// demand: it rises to the size of the largest recent turn (so a burst of
/// callbacks, such as another thread feeding `call_soon_threadsafe`, reuses
/// its handles instead of making the allocator map and unmap memory each
/// turn) and decays by 1/16 per turn back to the floor when turns shrink.
/// The list never holds more handles than were queued at once.
const SPARE_HANDLES_FLOOR: usize = 1024;
const SPARE_HANDLES_CEILING: usize = 1 << 16;

/// The `OSError` a refused watch raises: errno and strerror only, as from
/// the selectors module (an `io::Error`'s text adds " (os error N)").
fn watch_error(e: std::io::Error) -> PyErr {
    crate::os_errors::os_error(e.raw_os_error().unwrap_or(libc::EIO))
}

/// `selectors._fileobj_to_fd`: an int, or anything with `fileno()`.
fn fileobj_to_fd(obj: &Bound<'_, PyAny>) -> PyResult<RawFd> {
    let py = obj.py();
    let fd: i64 = if obj.is_instance_of::<PyInt>() {
        obj.extract()?
    } else {
        let invalid = || {
            PyValueError::new_err(format!(
                "Invalid file object: {}",
                obj.repr().map(|r| r.to_string()).unwrap_or_default()
            ))
        };
        match obj
            .call_method0("fileno")
            .and_then(|f| f.call_method0("__index__"))
        {
            Ok(v) => v.extract()?,
            Err(e)
                if e.is_instance_of::<pyo3::exceptions::PyAttributeError>(py)
                    || e.is_instance_of::<PyTypeError>(py)
                    || e.is_instance_of::<PyValueError>(py) =>
            {
                return Err(invalid())
            }
            Err(e) => return Err(e),
        }
    };
    if fd < 0 {
        return Err(PyValueError::new_err(format!(
            "Invalid file descriptor: {fd}"
        )));
    }
    RawFd::try_from(fd).map_err(|_| PyValueError::new_err(format!("Invalid file descriptor: {fd}")))
}

impl LoopCore {
    /// The loop clock: the native monotonic clock unless `time` was replaced.
    #[inline]
    fn now(slf: &Bound<'_, Self>) -> PyResult<f64> {
        if !slf.get().time_patched.load(Ordering::Relaxed) {
            return crate::timers::loop_clock(slf.py());
        }
        slf.call_method0(intern!(slf.py(), "time"))?.extract()
    }

    #[inline]
    pub(crate) fn check_closed(&self) -> PyResult<()> {
        if self.closed.load(Ordering::Relaxed) {
            Err(PyRuntimeError::new_err("Event loop is closed"))
        } else {
            Ok(())
        }
    }

    #[inline]
    pub(crate) fn is_debug(&self) -> bool {
        self.debug.load(Ordering::Relaxed)
    }

    /// The checks asyncio makes when a callback is scheduled in debug mode
    /// (thread, callable, not a coroutine).
    #[inline]
    fn check_callback(
        slf: &Bound<'_, Self>,
        callback: &Bound<'_, PyAny>,
        method: &str,
        thread_check: bool,
    ) -> PyResult<()> {
        // Outside debug mode a callback that is not callable fails when it
        // runs, through the exception handler, as in asyncio (servers' tests
        // schedule a Task by mistake and go on).
        if slf.get().is_debug() {
            if thread_check {
                slf.call_method0("_check_thread")?;
            }
            slf.call_method1("_check_callback", (callback, method))?;
        }
        Ok(())
    }

    #[inline]
    fn source_traceback(py: Python<'_>, debug: bool) -> PyResult<Option<PyObject>> {
        if debug {
            Self::capture_traceback(py).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Debug mode: where a handle was created, as asyncio records it.
    fn capture_traceback(py: Python<'_>) -> PyResult<PyObject> {
        // No Python frame exists for this native method, so frame 0 is the caller.
        // A thread with no Python frame at all (a native thread calling
        // `call_soon_threadsafe`, say) has nothing to record: an empty stack,
        // where `sys._getframe` would raise.
        let frame = match py.import("sys")?.call_method1("_getframe", (0,)) {
            Ok(frame) => frame,
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyValueError>(py) => {
                return Ok(py
                    .import("traceback")?
                    .getattr("StackSummary")?
                    .call0()?
                    .unbind());
            }
            Err(e) => return Err(e),
        };
        let tb = py
            .import("asyncio.format_helpers")?
            .call_method1("extract_stack", (frame,))?;
        Ok(tb.unbind())
    }

    fn new_handle(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<&Bound<'_, PyAny>>,
        repeats: bool,
    ) -> PyResult<Py<Handle>> {
        let ctx = HandleContext::capture(py, context)?;
        let tb = Self::source_traceback(py, self.is_debug())?;
        let (func, args) = (callback.clone().unbind(), args.clone().unbind());
        crate::handles::private_args(args.bind(py));
        if !repeats && tb.is_none() {
            if let Some(h) = self.spare_handles.with(py, Vec::pop) {
                Handle::reuse(h.bind(py), func, args, ctx);
                return Ok(h);
            }
        }
        let handle = if repeats {
            Handle::new_repeating(func, args, ctx, tb)
        } else {
            Handle::new(func, args, ctx, tb)
        };
        let handle = Bound::new(py, handle)?;
        Handle::untrack_new(&handle);
        Ok(handle.unbind())
    }

    fn schedule_timer(
        &self,
        py: Python<'_>,
        when: f64,
        when_obj: Option<&Bound<'_, PyAny>>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        let ctx = HandleContext::capture(py, context)?;
        let tb = Self::source_traceback(py, self.is_debug())?;
        let stats = self.timers.with(py, |t| t.stats.clone());
        let args = args.clone().unbind();
        crate::handles::private_args(args.bind(py));
        let init = TimerHandle::new(
            when,
            when_obj,
            callback.clone().unbind(),
            args,
            ctx,
            tb,
            stats,
        );
        let timer = Bound::new(py, init)?;
        Handle::untrack_new(timer.as_super());
        let queued = timer.clone().unbind();
        self.timers.with(py, |t| t.push(queued));
        Ok(timer.unbind())
    }

    /// Polls for I/O and queues what became ready, then the due timers.
    fn collect_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let mut dropped = Vec::new();
        let busy = !this.ready.is_empty(py) || this.stopping.load(Ordering::Relaxed);
        let next = this.timers.with(py, |timers| {
            timers.purge_cancelled(py, &mut dropped);
            if busy {
                None
            } else {
                timers.next_deadline()
            }
        });
        dropped.into_iter().for_each(|h| Handle::let_go(h, py));
        let timeout = match next {
            _ if busy => Some(0.0),
            Some(when) => Some((when - Self::now(slf)?).clamp(0.0, MAX_POLL_TIMEOUT)),
            None => None,
        };
        // A zero-timeout poll with no fd watched and no signal handler can only
        // find a call_soon_threadsafe wake-up byte, whose handle is already
        // queued: skip the syscall (the byte is drained on the next real poll).
        if !(busy && this.reactor.len(py) == 0 && this.signals.is_empty(py)) {
            let mut events = this.io_events.with(py, std::mem::take);
            let polled = this.reactor.poll(py, timeout, &mut events);
            let dispatched = polled
                .map_err(PyErr::from)
                .and_then(|()| Self::dispatch_io(slf, &events));
            events.clear();
            this.io_events.with(py, |slot| *slot = events);
            dispatched?;
        }
        // Run Python-level signal handlers now (Ctrl-C's KeyboardInterrupt
        // among them), as a selector's interrupted poll would.
        // SAFETY: GIL held; returns -1 with an exception set if a handler raised.
        if unsafe { ffi::PyErr_CheckSignals() } < 0 {
            return Err(PyErr::fetch(py));
        }
        if this.timers.with(py, |t| t.is_empty()) {
            return Ok(()); // no clock read when nothing is scheduled
        }
        let end = Self::now(slf)? + this.clock_resolution;
        let mut dropped = Vec::new();
        this.timers.with(py, |t| {
            t.pop_due(py, end, &mut dropped, |h| this.ready.push(py, h))
        });
        dropped.into_iter().for_each(|h| Handle::let_go(h, py));
        Ok(())
    }

    fn dispatch_io(slf: &Bound<'_, Self>, events: &[(RawFd, Readiness)]) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let pipe_fd = this.self_pipe.read_fd();
        for &(fd, readiness) in events {
            if fd == pipe_fd {
                let mut sigs = Vec::new();
                this.self_pipe.drain(&mut sigs);
                for sig in sigs {
                    Self::dispatch_signal(slf, sig as i32)?;
                }
                continue;
            }
            let (reader, writer) = this.reactor.get(py, fd);
            if readiness.readable {
                if let Some(h) = reader {
                    if h.get().is_cancelled() {
                        Self::remove_watch(this, py, fd, false)?;
                    } else {
                        this.ready.push(py, h);
                    }
                }
            }
            if readiness.writable {
                if let Some(h) = writer {
                    if h.get().is_cancelled() {
                        Self::remove_watch(this, py, fd, true)?;
                    } else {
                        this.ready.push(py, h);
                    }
                }
            }
        }
        Ok(())
    }

    fn dispatch_signal(slf: &Bound<'_, Self>, sig: i32) -> PyResult<()> {
        let this = slf.get();
        if let Some(h) = this.signals.get(slf.py(), sig) {
            if h.get().is_cancelled() {
                slf.call_method1("remove_signal_handler", (sig,))?;
            } else {
                this.ready.push(slf.py(), h);
            }
        }
        Ok(())
    }

    /// After a draining reader stopped before its fd was empty: report the
    /// fd readable on the next turn (the edge that brought the data is spent).
    pub(crate) fn rearm_reader(&self, py: Python<'_>, fd: RawFd) {
        self.reactor.rearm(py, fd)
    }

    fn remove_watch(&self, py: Python<'_>, fd: RawFd, write: bool) -> PyResult<bool> {
        let old = self.reactor.set(py, fd, write, None).map_err(watch_error)?;
        Ok(match old {
            Some(h) => {
                Handle::cancel_dropped(h, py);
                true
            }
            None => false,
        })
    }

    /// Runs one turn's snapshot of the ready queue.
    fn run_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let mut batch = this.batch.with(py, std::mem::take);
        this.ready.take_all(py, &mut batch);
        this.resize_spares(py, batch.len());
        let debug = this.is_debug();
        let mut result = Ok(());
        while let Some(handle) = batch.pop_front() {
            // A Bound's drop is a plain decref, without a GIL-state lookup.
            let handle = handle.into_bound(py);
            let h = handle.get();
            let outcome = if debug {
                Self::run_debug(slf, &handle)
            } else {
                Ok(h.run(py, false))
            };
            let err = match outcome {
                Ok(RunOutcome::Failed(err)) => {
                    if is_fatal(py, &err) {
                        Some(err)
                    } else {
                        slf.call_method1("_report_callback_error", (&handle, err.value(py)))
                            .err()
                    }
                }
                Ok(_) => None,
                Err(err) => Some(err),
            };
            // Finished while user code holds it: the collector must see it.
            // SAFETY: reading the refcount of a live object.
            if !h.repeats() && unsafe { ffi::Py_REFCNT(handle.as_ptr()) } > 1 {
                Handle::escape(&handle);
            } else if err.is_none() {
                this.keep_spare(py, handle);
            }
            // The stream writes this callback made go out before the next
            // callback runs (one `writev` per transport), so whatever runs
            // next, a reader of the peer included, sees them as on asyncio.
            let err = if this.pending_writes.with(py, |v| v.is_empty()) {
                err
            } else {
                let flushed = crate::stream_transport::flush_pending_writes(slf);
                err.or_else(|| flushed.err())
            };
            if let Some(err) = err {
                // Leave what this turn did not reach for the next run, in order.
                this.ready.restore_front(py, &mut batch);
                result = Err(err);
                break;
            }
        }
        this.batch.with(py, |slot| *slot = batch);
        // Before the next poll: the writes that waited for the turn's end.
        result.and(crate::stream_transport::flush_deferred_writes(slf))
    }

    /// Adapts the spare list's limit to a turn of `turn_len` handles and
    /// frees spares beyond it.
    fn resize_spares(&self, py: Python<'_>, turn_len: usize) {
        let old = self.spare_limit.load(Ordering::Relaxed);
        let limit = turn_len
            .max(old - old / 16)
            .clamp(SPARE_HANDLES_FLOOR, SPARE_HANDLES_CEILING);
        self.spare_limit.store(limit, Ordering::Relaxed);
        let excess = self.spare_handles.with(py, |spare| {
            (spare.len() > limit).then(|| spare.split_off(limit))
        });
        drop(excess);
    }

    /// Keeps a finished handle for reuse if it can be (else drops it).
    #[inline]
    fn keep_spare(&self, py: Python<'_>, handle: Bound<'_, Handle>) {
        if let Some(ctx) = Handle::recycle(&handle) {
            let handle = handle.unbind();
            let limit = self.spare_limit.load(Ordering::Relaxed);
            let rejected = self.spare_handles.with(py, |spare| {
                if spare.len() < limit {
                    spare.push(handle);
                    None
                } else {
                    Some(handle)
                }
            });
            // Dropped after the cell is released: both may run finalizers.
            drop((ctx, rejected));
        }
    }

    /// Debug mode: remember the current handle and log slow callbacks.
    fn run_debug(slf: &Bound<'_, Self>, handle: &Bound<'_, Handle>) -> PyResult<RunOutcome> {
        let py = slf.py();
        let this = slf.get();
        let old = this
            .current_handle
            .with(py, |c| c.replace(handle.clone().into_any().unbind()));
        drop(old);
        let t0 = monotonic();
        // Debug mode keeps the callback: the slow-callback log shows it.
        let outcome = handle.get().run(py, true);
        let dt = monotonic() - t0;
        let old = this.current_handle.with(py, Option::take);
        drop(old);
        if dt >= f64::from_bits(this.slow_callback_duration.load(Ordering::Relaxed)) {
            slf.call_method1("_log_slow_callback", (handle, dt))?;
        }
        Ok(outcome)
    }
}

#[pymethods]
impl LoopCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn py_new(
        py: Python<'_>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let reactor = Reactor::new()?;
        let self_pipe = SelfPipe::new()?;
        reactor.watch_internal(self_pipe.read_fd())?;
        Ok(LoopCore {
            ready: Default::default(),
            timers: GilCell::new(TimerHeap::default()),
            reactor,
            self_pipe,
            signals: SignalHandlers::default(),
            batch: GilCell::new(VecDeque::new()),
            io_events: GilCell::new(Vec::new()),
            stopping: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            debug: AtomicBool::new(false),
            slow_callback_duration: AtomicU64::new(0.1f64.to_bits()),
            clock_resolution: monotonic_resolution(),
            pending_writes: GilCell::new(Vec::new()),
            pending_writes_spare: GilCell::new(Vec::new()),
            deferred_writes: GilCell::new(Vec::new()),
            stream_endpoints: PyDict::new(py).unbind(),
            turning: AtomicU64::new(0),
            time_patched: AtomicBool::new(false),
            current_handle: GilCell::new(None),
            spare_handles: GilCell::new(Vec::new()),
            spare_bytes: crate::read_buffer::SpareBytes::new(),
            spare_limit: AtomicUsize::new(SPARE_HANDLES_FLOOR),
            tasks_module: py.import("asyncio.tasks")?.into_any().unbind(),
            futures_module: py.import("asyncio.futures")?.into_any().unbind(),
            loop_kwnames: PyTuple::new(py, [intern!(py, "loop")])?.unbind(),
        })
    }

    /// The loop clock (monotonic seconds: `time.monotonic()`, read natively
    /// unless a test replaced it).
    pub(crate) fn time(&self, py: Python<'_>) -> PyResult<f64> {
        crate::timers::loop_clock(py)
    }

    /// Re-reads what `self.time` is and, unless it is the native clock,
    /// makes the loop schedule by it. Run at start-up and by `Loop`'s
    /// `__setattr__`/`__delattr__` when `time` is assigned or deleted.
    fn _sync_time_source(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let current = slf.getattr(intern!(py, "time"))?;
        // SAFETY: type check and field reads on a live object.
        let native = unsafe {
            ffi::PyCFunction_Check(current.as_ptr()) != 0
                && ffi::PyCFunction_GetSelf(current.as_ptr()) == slf.as_ptr()
        };
        slf.get().time_patched.store(!native, Ordering::Relaxed);
        Ok(())
    }

    #[getter]
    fn _current_handle(&self, py: Python<'_>) -> Option<PyObject> {
        self.current_handle
            .with(py, |c| c.as_ref().map(|h| h.clone_ref(py)))
    }

    #[setter(_current_handle)]
    fn set_current_handle(&self, py: Python<'_>, value: Option<PyObject>) {
        let value = value.filter(|v| !v.is_none(py));
        let old = self
            .current_handle
            .with(py, |c| std::mem::replace(c, value));
        drop(old);
    }

    #[getter]
    fn _clock_resolution(&self) -> f64 {
        self.clock_resolution
    }

    #[pyo3(signature = (callback, *args, context=None))]
    pub(crate) fn call_soon(
        slf: &Bound<'_, Self>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        let this = slf.get();
        this.check_closed()?;
        Self::check_callback(slf, callback, "call_soon", true)?;
        let handle = this.new_handle(slf.py(), callback, args, context, false)?;
        this.ready.push(slf.py(), handle.clone_ref(slf.py()));
        Ok(handle)
    }

    #[pyo3(signature = (callback, *args, context=None))]
    pub(crate) fn call_soon_threadsafe(
        slf: &Bound<'_, Self>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        let this = slf.get();
        this.check_closed()?;
        Self::check_callback(slf, callback, "call_soon_threadsafe", false)?;
        let handle = this.new_handle(slf.py(), callback, args, context, false)?;
        this.ready.push(slf.py(), handle.clone_ref(slf.py()));
        this.self_pipe.wake();
        Ok(handle)
    }

    #[pyo3(signature = (delay, callback, *args, context=None))]
    fn call_later(
        slf: &Bound<'_, Self>,
        delay: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        if delay.is_none() {
            return Err(PyTypeError::new_err("delay must not be None"));
        }
        let delay: f64 = delay.extract()?;
        let now = Self::now(slf)?;
        Self::call_at_impl(slf, now + delay, None, callback, args, context)
    }

    #[pyo3(signature = (when, callback, *args, context=None))]
    fn call_at(
        slf: &Bound<'_, Self>,
        when: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        if when.is_none() {
            return Err(PyTypeError::new_err("when cannot be None"));
        }
        let when_f: f64 = when.extract()?;
        Self::call_at_impl(slf, when_f, Some(when), callback, args, context)
    }

    fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    fn _reset_stopping(&self) {
        self.stopping.store(false, Ordering::Relaxed);
    }

    #[getter]
    fn _stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// A plain attribute on BaseEventLoop, and some servers assign it (sanic
    /// resets it after `run_forever` returns): the assignment steers the loop.
    #[setter(_stopping)]
    fn set_stopping_attr(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.stopping.store(value.is_truthy()?, Ordering::Relaxed);
        Ok(())
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    pub(crate) fn get_debug(&self) -> bool {
        self.is_debug()
    }

    /// Native half of `set_debug`; the Python side also adjusts coroutine
    /// origin tracking.
    fn _set_debug_flag(&self, enabled: bool) {
        self.debug.store(enabled, Ordering::Relaxed);
    }

    #[getter]
    fn get_slow_callback_duration(&self) -> f64 {
        f64::from_bits(self.slow_callback_duration.load(Ordering::Relaxed))
    }

    #[getter(slow_callback_duration)]
    fn slow_callback_duration_get(&self) -> f64 {
        self.get_slow_callback_duration()
    }

    #[setter(slow_callback_duration)]
    fn slow_callback_duration_set(&self, value: f64) {
        self.slow_callback_duration
            .store(value.to_bits(), Ordering::Relaxed);
    }

    /// The endpoint table (`stream_endpoints`), for tests.
    #[getter]
    fn _stream_endpoints(&self, py: Python<'_>) -> Py<PyDict> {
        self.stream_endpoints.clone_ref(py)
    }

    /// One loop turn: poll, queue ready I/O and due timers, run the snapshot.
    fn _run_once(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::collect_ready(slf)?;
        Self::run_ready(slf)
    }

    /// Turns until `stop()`; the Python `run_forever` wraps this with the
    /// per-run set-up and tear-down.
    fn _run_until_stopped(slf: &Bound<'_, Self>) -> PyResult<()> {
        let this = slf.get();
        // SAFETY: pthread_self has no preconditions.
        this.turning
            .store(unsafe { libc::pthread_self() } as u64, Ordering::Relaxed);
        let result = loop {
            if let Err(e) = Self::_run_once(slf) {
                break Err(e);
            }
            if this.stopping.load(Ordering::Relaxed) {
                break Ok(());
            }
        };
        this.stopping.store(false, Ordering::Relaxed);
        this.turning.store(0, Ordering::Relaxed);
        // Each callback's writes are already flushed; anything queued since
        // (none normally) goes out now.
        result
            .and(crate::stream_transport::flush_pending_writes(slf))
            .and(crate::stream_transport::flush_deferred_writes(slf))
    }

    // ---- file descriptors -------------------------------------------------

    #[pyo3(signature = (fd, callback, *args))]
    fn _add_reader(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        Self::add_watch(slf, fd, callback, args, Watching::Reader, "add_reader")
    }

    /// `_add_reader` for a callback that reads until a read comes up short
    /// or fails with EAGAIN, or else calls `rearm_reader(fd)`: a TCP
    /// transport's. The fd is edge-triggered (see `reactor`).
    fn _add_draining_reader(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
    ) -> PyResult<Py<Handle>> {
        let args = PyTuple::empty(slf.py());
        Self::add_watch(
            slf,
            fd,
            callback,
            &args,
            Watching::DrainingReader,
            "add_reader",
        )
    }

    #[pyo3(signature = (fd, callback, *args))]
    fn _add_writer(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        Self::add_watch(slf, fd, callback, args, Watching::Writer, "add_writer")
    }

    fn _remove_reader(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        let this = slf.get();
        if this.closed.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let fd = fileobj_to_fd(fd)?;
        this.remove_watch(slf.py(), fd, false)
    }

    fn _remove_writer(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        let this = slf.get();
        if this.closed.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let fd = fileobj_to_fd(fd)?;
        this.remove_watch(slf.py(), fd, true)
    }

    /// (reader handle, writer handle) watching `fd`.
    fn _get_watch(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<WatchPair> {
        let fd = fileobj_to_fd(fd)?;
        Ok(slf.get().reactor.get(slf.py(), fd))
    }

    // ---- signals -----------------------------------------------------------

    /// Fd for `signal.set_wakeup_fd`, so signals wake a sleeping loop.
    fn _signal_wakeup_fd(&self) -> RawFd {
        self.self_pipe.write_fd()
    }

    #[pyo3(signature = (sig, callback, *args))]
    fn _set_signal_handle(
        slf: &Bound<'_, Self>,
        sig: i32,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let handle = this.new_handle(py, callback, args, None, true)?;
        if let Some(old) = this.signals.set(py, sig, handle) {
            Handle::cancel_dropped(old, py);
        }
        Ok(())
    }

    fn _pop_signal_handle(&self, py: Python<'_>, sig: i32) -> bool {
        self.signals.remove(py, sig).is_some()
    }

    fn _signal_numbers(&self, py: Python<'_>) -> Vec<i32> {
        self.signals.signals(py)
    }

    fn _has_signal_handles(&self, py: Python<'_>) -> bool {
        !self.signals.is_empty(py)
    }

    // ---- introspection used by asyncio's own tests and tools ----------------

    /// Snapshot of the handles waiting to run (asyncio's `loop._ready`).
    #[getter]
    fn _ready<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyList>> {
        let py = slf.py();
        let this = slf.get();
        let mut tmp = VecDeque::new();
        this.ready.take_all(py, &mut tmp);
        let list = PyList::new(py, tmp.iter().map(|h| h.clone_ref(py)));
        this.ready.restore_front(py, &mut tmp);
        list
    }

    /// The pending timers, earliest first: asyncio's `loop._scheduled`,
    /// which some test suites walk to fire timers by hand.
    fn _timer_snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let handles = self.timers.with(py, |t| t.snapshot(py));
        PyList::new(py, handles)
    }

    /// Number of pending timers (asyncio's `len(loop._scheduled)`).
    fn _timer_count(&self, py: Python<'_>) -> usize {
        self.timers.with(py, |t| t.len())
    }

    // ---- garbage collection --------------------------------------------------

    /// Lets the collector see the handles the loop holds: an unclosed loop
    /// whose callbacks refer back to it (`call_later(10, loop.stop)`) is a
    /// cycle that must still be collected, warned about and closed.
    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        let visit_handle = |h: &Py<Handle>| -> Result<(), pyo3::PyTraverseError> {
            // SAFETY: reading the GC state and refcount of a live object.
            let (tracked, refs) = unsafe {
                (
                    ffi::PyObject_GC_IsTracked(h.as_ptr()) != 0,
                    ffi::Py_REFCNT(h.as_ptr()),
                )
            };
            if tracked {
                // The collector traverses it itself; the loop owns one reference.
                visit.call(h)
            } else if refs == 1 {
                // Untracked and only the loop holds it: its referents are
                // the loop's own state (see Handle::traverse).
                h.get().traverse(&visit)
            } else {
                // Untracked and shared: conservatively skipped.
                Ok(())
            }
        };
        self.ready.traverse(visit_handle)?;
        self.timers
            .peek(|t| t.traverse(visit_handle))
            .unwrap_or(Ok(()))?;
        self.reactor.traverse(visit_handle)?;
        self.signals.traverse(visit_handle)?;
        // Transports waiting for their flush are held strongly.
        for list in [&self.pending_writes, &self.deferred_writes] {
            list.peek(|v| v.iter().try_for_each(|t| visit.call(t)))
                .unwrap_or(Ok(()))?;
        }
        visit.call(&self.stream_endpoints)?;
        visit.call(&self.tasks_module)?;
        visit.call(&self.futures_module)?;
        self.current_handle
            .peek(|t| t.as_ref().map_or(Ok(()), |t| visit.call(t)))
            .unwrap_or(Ok(()))?;
        Ok(())
    }

    fn __clear__(&self) {
        // SAFETY: tp_clear is only called by the collector, with the GIL held.
        let py = unsafe { Python::assume_gil_acquired() };
        let ready = self.ready.clear(py);
        let timers = self.timers.with(py, |t| t.clear(py));
        let watches = self.reactor.take_all(py);
        let signals = self.signals.clear(py);
        let current = self.current_handle.with(py, Option::take);
        let spare = self.spare_handles.with(py, std::mem::take);
        let flushes = self.pending_writes.with(py, std::mem::take);
        let deferred = self.deferred_writes.with(py, std::mem::take);
        self.stream_endpoints.bind(py).clear();
        release_all(py, ready, timers, watches, signals);
        drop((current, spare, flushes, deferred));
    }

    // ---- shutdown ----------------------------------------------------------

    /// Native half of `close()`: drops every queued handle and watch and
    /// releases the loop's own fds. User fds are never closed.
    fn _close_core(slf: &Bound<'_, Self>) {
        let py = slf.py();
        let this = slf.get();
        if this.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        // Gather everything first and drop it after the locks are released:
        // dropping a handle can run arbitrary Python finalizers.
        let ready = this.ready.clear(py);
        let timers = this.timers.with(py, |t| t.clear(py));
        let watches = this.reactor.take_all(py);
        let flushes = this.pending_writes.with(py, std::mem::take);
        let deferred = this.deferred_writes.with(py, std::mem::take);
        this.stream_endpoints.bind(py).clear();
        let signals = this.signals.clear(py);
        let spare = this.spare_handles.with(py, std::mem::take);
        drop(spare);
        this.spare_bytes.clear(py);
        this.reactor.close();
        this.self_pipe.close();
        drop((flushes, deferred));
        release_all(py, ready, timers, watches, signals);
    }
}

/// Releases the callbacks of every handle the loop dropped (so handles that
/// user code still holds cannot keep cycles alive), then the handles.
fn release_all(
    py: Python<'_>,
    ready: VecDeque<Py<Handle>>,
    timers: Vec<Py<Handle>>,
    watches: Vec<crate::reactor::Watch>,
    signals: std::collections::HashMap<i32, Py<Handle>>,
) {
    let handles = ready
        .into_iter()
        .chain(timers)
        .chain(
            watches
                .into_iter()
                .flat_map(|w| w.reader.into_iter().chain(w.writer)),
        )
        .chain(signals.into_values());
    for h in handles {
        let callback = h.get().release(py);
        drop(callback);
        Handle::let_go(h, py);
    }
}

impl LoopCore {
    fn call_at_impl(
        slf: &Bound<'_, Self>,
        when: f64,
        when_obj: Option<&Bound<'_, PyAny>>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        let this = slf.get();
        this.check_closed()?;
        Self::check_callback(slf, callback, "call_at", true)?;
        this.schedule_timer(slf.py(), when, when_obj, callback, args, context)
    }

    fn add_watch(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        watching: Watching,
        method: &str,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let this = slf.get();
        this.check_closed()?;
        let fd = fileobj_to_fd(fd)?;
        Self::check_callback(slf, callback, method, true)?;
        let handle = this.new_handle(py, callback, args, None, true)?;
        let h = handle.clone_ref(py);
        let old = match watching {
            Watching::Reader => this.reactor.set(py, fd, false, Some(h)),
            Watching::Writer => this.reactor.set(py, fd, true, Some(h)),
            Watching::DrainingReader => this.reactor.set_draining_reader(py, fd, h),
        }
        .map_err(watch_error)?;
        if let Some(old) = old {
            Handle::cancel_dropped(old, py);
        }
        Ok(handle)
    }
}
