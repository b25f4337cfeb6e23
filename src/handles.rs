//! `Handle` and `TimerHandle`: one scheduled callback with its arguments and
//! `contextvars` context, as asyncio hands them out from `call_soon`/`call_at`.
//!
//! The ready queue and the reactor store one type, `Py<Handle>`; a timer is
//! a `TimerHandle`, a subclass that adds the deadline and the heap's
//! bookkeeping, so a plain handle (the kind queued by the thousand) stays in
//! pymalloc's 96-byte size class.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::gil_cell::GilCell;

use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};

/// Shared with the loop's timer heap: how many scheduled timers were
/// cancelled, so the heap knows when a rebuild pays off. Shared by `Arc`
/// instead of a back-reference so a handle never keeps its loop alive.
#[derive(Default)]
pub struct TimerStats {
    pub cancelled: AtomicUsize,
}

pub(crate) struct Callback {
    pub func: PyObject,
    /// Untracked while only the handle can reach it (see `private_args`).
    pub args: Py<PyTuple>,
}

/// Takes the arguments tuple a scheduling call built for this handle alone
/// out of the collector's lists, like the context (`HandleContext`): a
/// queue of pending `call_soon(cb, arg)`s would otherwise be scanned by
/// every gen-0 collection. The handle's traverse visits the items instead,
/// and the tuple is tracked again the moment it is handed out
/// (`exposed_args`). A tuple someone else also holds is left alone.
pub(crate) fn private_args(args: &Bound<'_, PyTuple>) {
    let p = args.as_ptr();
    // SAFETY: GIL held. The caller's reference and the handle's are the only
    // two, so no one else can see the tuple's GC state change.
    unsafe {
        if ffi::PyTuple_GET_SIZE(p) > 0
            && ffi::Py_REFCNT(p) == 2
            && ffi::PyObject_GC_IsTracked(p) != 0
        {
            ffi::PyObject_GC_UnTrack(p.cast());
        }
    }
}

/// Visits a tuple's items (a private tuple is not traversed on its own).
fn visit_tuple_items(
    args: &Py<PyTuple>,
    visit: &pyo3::PyVisit<'_>,
) -> Result<(), pyo3::PyTraverseError> {
    let p = args.as_ptr();
    // SAFETY: a complete tuple's items are non-NULL owned pointers held for
    // the whole traversal; `Py<PyAny>` is a transparent non-null object
    // pointer, so a reference to an item slot is a valid `&Py<PyAny>`.
    unsafe {
        let items = (*p.cast::<ffi::PyTupleObject>()).ob_item.as_ptr();
        for i in 0..ffi::PyTuple_GET_SIZE(p) as usize {
            visit.call(&*items.add(i).cast::<Py<PyAny>>())?;
        }
    }
    Ok(())
}

/// Puts a GC object this crate took out of the collector's lists (a private
/// context or arguments tuple, a new handle) back in, if it is not there.
///
/// # Safety
/// The GIL is held and `p` is a live object of a GC type.
unsafe fn ensure_tracked(p: *mut ffi::PyObject) {
    // SAFETY: per the caller; tracking an untracked live object is allowed.
    unsafe {
        if ffi::PyObject_GC_IsTracked(p) == 0 {
            ffi::PyObject_GC_Track(p.cast());
        }
    }
}

/// The arguments tuple, tracked again first if it was private.
fn exposed_args(py: Python<'_>, args: &Py<PyTuple>) -> Py<PyTuple> {
    let p = args.as_ptr();
    // SAFETY: GIL held; a live tuple (never the empty singleton, which is
    // static and never made private).
    unsafe {
        if ffi::PyTuple_GET_SIZE(p) > 0 {
            ensure_tracked(p);
        }
    }
    args.clone_ref(py)
}

/// The `contextvars.Context` a handle runs in.
///
/// When the caller passes none, the handle captures a copy of the current
/// context, as asyncio does. Nobody else can reach that copy until it is
/// handed out (`get_context()`), so it is kept out of the collector's lists
/// meanwhile: a gen-0 collection every ~700 `call_soon`s would otherwise
/// scan every copy still queued, the largest cost of a bare `call_soon`.
/// The copy is tracked again the moment it could be shared or be part of a
/// cycle: handed out, its handle finished while user code holds the handle,
/// or dropped (CPython's context dealloc expects a tracked object).
pub(crate) struct HandleContext {
    obj: PyObject,
    private: bool,
}

impl HandleContext {
    /// `context` if given (and not None), else a private copy of the current one.
    pub(crate) fn capture(py: Python<'_>, context: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        match context {
            Some(c) if !c.is_none() => Ok(HandleContext {
                obj: c.clone().unbind(),
                private: false,
            }),
            _ => {
                // SAFETY: returns a new reference or NULL with an exception set.
                let obj =
                    unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent()) }?;
                // SAFETY: a fresh context only this handle refers to (see above).
                unsafe { ffi::PyObject_GC_UnTrack(obj.as_ptr().cast()) };
                Ok(HandleContext {
                    obj: obj.unbind(),
                    private: true,
                })
            }
        }
    }

    /// A context supplied by the caller, tracked as usual.
    #[cfg(test)]
    pub(crate) fn given(obj: PyObject) -> Self {
        HandleContext {
            obj,
            private: false,
        }
    }

    /// The context, tracked again first if it was private.
    fn expose(&self) -> &PyObject {
        if self.private {
            // SAFETY: the GIL is held by every caller (handle methods, the
            // loop, dealloc); a live context is a GC object.
            unsafe { ensure_tracked(self.obj.as_ptr()) };
        }
        &self.obj
    }
}

impl Drop for HandleContext {
    fn drop(&mut self) {
        // CPython's context dealloc unlinks the object from the collector's
        // list unconditionally, so it must be tracked when the last
        // reference goes.
        self.expose();
    }
}

/// A handle's context, replaceable only while the loop holds the sole
/// reference to the handle (see `Handle::recycle`): nothing else can read
/// it then, so reads through `&Handle` never overlap a write.
struct ContextSlot(UnsafeCell<Option<HandleContext>>);

// SAFETY: written only by `Handle::recycle`/`reuse`, with the GIL held and
// the handle unreachable from any other thread or object.
unsafe impl Sync for ContextSlot {}

impl ContextSlot {
    #[inline]
    fn get(&self) -> Option<&HandleContext> {
        // SAFETY: see the type's comment; no write is in progress.
        unsafe { (*self.0.get()).as_ref() }
    }
}

#[pyclass(module = "ferroloop", subclass, weakref, frozen)]
pub struct Handle {
    /// Dropped on `cancel()` so a cancelled handle releases what it captured.
    callback: GilCell<Option<Callback>>,
    /// None only while the handle waits in the loop's spare list.
    context: ContextSlot,
    /// What few handles have, boxed so the rest don't carry the space.
    extra: Option<Box<HandleExtra>>,
    cancelled: AtomicBool,
    /// Reader, writer and signal handles run many times; every other handle
    /// runs once and gives its callback up when it does, so a handle kept
    /// by user code never pins the callback (and what it refers to).
    repeats: bool,
    /// The base of a `TimerHandle`: never recycled as a plain handle, and
    /// cancelled through the timer (a flag, so neither needs a type check).
    timer: bool,
}

/// The rare parts of a handle.
struct HandleExtra {
    /// Debug mode: where the handle was created.
    source_traceback: Option<PyObject>,
    /// The deadline exactly as `call_at` was given it when that was not a
    /// float (an int stays an int in `when()`, as in asyncio).
    when_obj: Option<PyObject>,
}

/// What running a handle produced: nothing to do, or the callback's error.
pub(crate) enum RunOutcome {
    Skipped,
    Ran,
    Failed(PyErr),
}

impl Handle {
    pub(crate) fn new(
        func: PyObject,
        args: Py<PyTuple>,
        context: HandleContext,
        source_traceback: Option<PyObject>,
    ) -> Self {
        Handle {
            callback: GilCell::new(Some(Callback { func, args })),
            context: ContextSlot(UnsafeCell::new(Some(context))),
            extra: source_traceback.map(|tb| {
                Box::new(HandleExtra {
                    source_traceback: Some(tb),
                    when_obj: None,
                })
            }),
            cancelled: AtomicBool::new(false),
            repeats: false,
            timer: false,
        }
    }

    /// A handle that runs each time its fd or signal is ready.
    pub(crate) fn new_repeating(
        func: PyObject,
        args: Py<PyTuple>,
        context: HandleContext,
        source_traceback: Option<PyObject>,
    ) -> Self {
        let mut h = Handle::new(func, args, context, source_traceback);
        h.repeats = true;
        h
    }

    /// A timer's base part; `TimerHandle::new` adds the rest.
    fn new_timer_base(
        func: PyObject,
        args: Py<PyTuple>,
        context: HandleContext,
        source_traceback: Option<PyObject>,
        when_obj: Option<&Bound<'_, PyAny>>,
    ) -> Self {
        let mut h = Handle::new(func, args, context, source_traceback);
        h.timer = true;
        // Keep `call_at`'s deadline object when it is not a float.
        if let Some(w) = when_obj.filter(|w| !w.is_exact_instance_of::<pyo3::types::PyFloat>()) {
            h.extra
                .get_or_insert_with(|| {
                    Box::new(HandleExtra {
                        source_traceback: None,
                        when_obj: None,
                    })
                })
                .when_obj = Some(w.clone().unbind());
        }
        h
    }

    fn source_traceback(&self) -> Option<&PyObject> {
        self.extra.as_ref()?.source_traceback.as_ref()
    }

    fn when_obj(&self) -> Option<&PyObject> {
        self.extra.as_ref()?.when_obj.as_ref()
    }

    #[inline]
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    fn callback_parts(&self, py: Python<'_>) -> Option<(PyObject, Py<PyTuple>)> {
        self.callback.with(py, |cb| {
            cb.as_ref()
                .map(|cb| (cb.func.clone_ref(py), exposed_args(py, &cb.args)))
        })
    }

    /// Calls the callback inside its context, the way `Context.run` would.
    /// With `keep` false a one-shot handle hands its callback over instead
    /// of sharing it (it is put back if the call fails, for the report).
    pub(crate) fn run(&self, py: Python<'_>, keep: bool) -> RunOutcome {
        if self.is_cancelled() {
            return RunOutcome::Skipped;
        }
        let take = !keep && !self.repeats;
        let cb = self.callback.with(py, |cb| {
            if take {
                cb.take()
            } else {
                cb.as_ref().map(|cb| Callback {
                    func: cb.func.clone_ref(py),
                    args: cb.args.clone_ref(py),
                })
            }
        });
        let (Some(cb), Some(context)) = (cb, self.context.get()) else {
            return RunOutcome::Skipped;
        };
        // SAFETY: every pointer is a live, owned object for the whole block and
        // the GIL is held; enter/exit are paired as Context.run pairs them.
        let err = unsafe {
            let ctx = context.obj.as_ptr();
            if ffi::PyContext_Enter(ctx) < 0 {
                Some(PyErr::fetch(py))
            } else {
                let argp = cb.args.as_ptr();
                let func = cb.func.as_ptr();
                // The tuple's items are a contiguous array: pass them as the
                // vectorcall argument vector, with no copy.
                let res = crate::detach::call_callback(
                    func,
                    (*argp.cast::<ffi::PyTupleObject>()).ob_item.as_ptr(),
                    ffi::PyTuple_GET_SIZE(argp) as usize,
                );
                // Exit even when the call failed; keep the call's error.
                let err = if res.is_null() {
                    Some(PyErr::fetch(py))
                } else {
                    ffi::Py_DECREF(res);
                    None
                };
                if ffi::PyContext_Exit(ctx) < 0 {
                    let exit_err = PyErr::fetch(py);
                    Some(err.unwrap_or(exit_err))
                } else {
                    err
                }
            }
        };
        match err {
            Some(e) => {
                // Kept for the error report, which names the callback; not
                // if the callback cancelled its own handle, which drops the
                // callback as asyncio's does (the report then says "None()").
                if take && !self.is_cancelled() {
                    self.callback.with(py, |slot| *slot = Some(cb));
                }
                RunOutcome::Failed(e)
            }
            None => {
                // Bound drops are plain decrefs (no GIL-state lookup).
                let Callback { func, args } = cb;
                drop((func.into_bound(py), args.into_bound(py)));
                RunOutcome::Ran
            }
        }
    }

    /// Drops the callback without cancelling: used when the loop closes, so
    /// handles kept by user code stop pinning what their callbacks refer to.
    pub(crate) fn release(&self, py: Python<'_>) -> Option<(PyObject, Py<PyTuple>)> {
        self.callback
            .with(py, Option::take)
            .map(|cb| (cb.func, cb.args))
    }

    fn format_repr(&self, py: Python<'_>, class_name: &str, when: Option<f64>) -> PyResult<String> {
        let mut info: Vec<String> = vec![class_name.to_owned()];
        if self.is_cancelled() {
            info.push("cancelled".to_owned());
        }
        if let Some(when) = when {
            info.push(format!("when={}", float_repr(py, when)?));
        }
        if let Some((func, args)) = self.callback_parts(py) {
            let helpers = py.import("asyncio.format_helpers")?;
            let src = helpers.call_method1("_format_callback_source", (func, args))?;
            info.push(src.extract::<String>()?);
        }
        if let Some(tb) = self.source_traceback() {
            let tb = tb.bind(py);
            let n = tb.len()?;
            if n > 0 {
                let frame = tb.get_item(n - 1)?;
                let file: String = frame.get_item(0)?.extract()?;
                let line: i64 = frame.get_item(1)?.extract()?;
                info.push(format!("created at {file}:{line}"));
            }
        }
        Ok(format!("<{}>", info.join(" ")))
    }

    /// Visits what this handle keeps alive: as the handle's own
    /// `__traverse__` once it is tracked, or on behalf of the loop while the
    /// loop is its only holder.
    ///
    /// A new handle is untracked (see `HandleContext` for why): while it is
    /// queued the loop owns it, and visits through it when nobody else holds
    /// it. It is tracked (`escape`) once it finished or was cancelled while
    /// user code still holds it: from then on it can close a cycle (through
    /// its context, or the callback debug mode keeps) that only the
    /// collector can break.
    pub(crate) fn traverse(&self, visit: &pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        // The visitproc is the collector's C callback, never Python code, so
        // calling it while the cell is borrowed is fine.
        self.callback
            .peek(|cb| match cb {
                Some(cb) => {
                    visit.call(&cb.func)?;
                    // SAFETY: reading the GC state of a live tuple, GIL held.
                    if unsafe { ffi::PyObject_GC_IsTracked(cb.args.as_ptr()) } != 0 {
                        visit.call(&cb.args)
                    } else {
                        // Private (see `private_args`): visit what it holds.
                        visit_tuple_items(&cb.args, visit)
                    }
                }
                None => Ok(()),
            })
            .unwrap_or(Ok(()))?;
        if let Some(ctx) = self.context.get() {
            visit.call(&ctx.obj)?;
        }
        if let Some(w) = self.when_obj() {
            visit.call(w)?;
        }
        if let Some(tb) = self.source_traceback() {
            visit.call(tb)?;
        }
        Ok(())
    }

    /// Cancels a plain handle. (A timer goes through `TimerHandle::cancel_timer`,
    /// which also tells the heap.)
    pub(crate) fn cancel_internal(&self, py: Python<'_>) {
        if self.mark_cancelled() {
            self.drop_callback(py);
        }
    }

    /// Sets the cancelled flag; false if it already was.
    fn mark_cancelled(&self) -> bool {
        !self.cancelled.swap(true, Ordering::Relaxed)
    }

    fn drop_callback(&self, py: Python<'_>) {
        // Take the callback out under the lock but drop it after: its
        // finalizers may run Python code that touches this handle again.
        let taken = self.callback.with(py, Option::take);
        drop(taken);
    }

    /// Tracks a handle (and its context) that may outlive the loop's hold
    /// on it; see `traverse`.
    pub(crate) fn escape(h: &Bound<'_, Handle>) {
        if let Some(ctx) = h.get().context.get() {
            ctx.expose();
        }
        // SAFETY: the GIL is held; a handle is a live GC object.
        unsafe { ensure_tracked(h.as_ptr()) };
    }

    /// Untracks a handle the loop just created (see `traverse`).
    pub(crate) fn untrack_new(h: &Bound<'_, Handle>) {
        // SAFETY: a fresh object nothing else refers to yet; GIL held.
        unsafe { ffi::PyObject_GC_UnTrack(h.as_ptr().cast()) };
    }

    /// The loop lets go of a handle: if user code still holds it, the
    /// collector must see it from now on (see `traverse`).
    pub(crate) fn let_go(h: Py<Handle>, py: Python<'_>) {
        // SAFETY: reading the refcount of a live object.
        if unsafe { ffi::Py_REFCNT(h.as_ptr()) } > 1 {
            Handle::escape(h.bind(py));
        }
        drop(h.into_bound(py));
    }

    /// Cancels a handle the loop drops (a replaced or removed reader,
    /// writer or signal handler); user code may still hold it.
    pub(crate) fn cancel_dropped(h: Py<Handle>, py: Python<'_>) {
        h.get().cancel_internal(py);
        Handle::let_go(h, py);
    }

    fn context_obj(&self, py: Python<'_>) -> PyObject {
        match self.context.get() {
            Some(ctx) => ctx.expose().clone_ref(py),
            None => py.None(),
        }
    }

    /// Takes back a plain one-shot handle that has finished (or was
    /// cancelled) when the loop holds the only reference, so the next
    /// `call_soon` can reuse the object instead of allocating one. Returns
    /// the context it ran in, for the caller to drop; None if the handle
    /// cannot be recycled (it stays as it is then).
    ///
    /// A recycled handle holds nothing: no callback, no context, so it
    /// pins no user object while it waits.
    pub(crate) fn recycle(h: &Bound<'_, Handle>) -> Option<HandleContext> {
        let this = h.get();
        let p = h.as_ptr();
        // SAFETY: reading the refcount, GC state, type and weakref list of a
        // live object with the GIL held.
        let exclusive = unsafe {
            ffi::Py_REFCNT(p) == 1 && ffi::PyObject_GC_IsTracked(p) == 0 && weaklist_is_empty(p)
        };
        if !exclusive
            || cfg!(Py_GIL_DISABLED)
            || this.repeats
            || this.timer
            || this.extra.is_some()
            || this.callback.peek(Option::is_some) != Some(false)
        {
            return None;
        }
        // SAFETY: the loop holds the only reference (checked above), with
        // the GIL, so no reader of the slot exists (see ContextSlot).
        unsafe { (*this.context.0.get()).take() }
    }

    /// Re-arms a handle taken by `recycle` with a new callback, as
    /// `Handle::new` would have built it.
    pub(crate) fn reuse(
        h: &Bound<'_, Handle>,
        func: PyObject,
        args: Py<PyTuple>,
        context: HandleContext,
    ) {
        let this = h.get();
        let py = h.py();
        this.cancelled.store(false, Ordering::Relaxed);
        let old = this
            .callback
            .with(py, |cb| cb.replace(Callback { func, args }));
        debug_assert!(old.is_none());
        // SAFETY: the handle came from the loop's spare list, where the loop
        // holds its only reference; nobody can read the slot meanwhile.
        unsafe { *this.context.0.get() = Some(context) };
    }

    #[inline]
    pub(crate) fn repeats(&self) -> bool {
        self.repeats
    }
}

/// True if no weak reference to `p` can exist. A type whose weak list is
/// not at a plain offset (an interpreter-managed list, as newer CPythons
/// may use) answers false: such handles are simply never reused.
///
/// # Safety
/// `p` is a live object and the GIL is held.
unsafe fn weaklist_is_empty(p: *mut ffi::PyObject) -> bool {
    // SAFETY: per the caller; the offset comes from the object's own type.
    unsafe {
        match (*ffi::Py_TYPE(p)).tp_weaklistoffset {
            0 => true,
            offset if offset > 0 => {
                (*(p.cast::<u8>().offset(offset) as *const *mut ffi::PyObject)).is_null()
            }
            _ => false,
        }
    }
}

fn float_repr(py: Python<'_>, v: f64) -> PyResult<String> {
    Ok(pyo3::types::PyFloat::new(py, v).repr()?.to_string())
}

#[pymethods]
impl Handle {
    /// Handles are created by the loop; this exists so the class can be
    /// inspected and documented, not constructed by users.
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn py_new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        Err(PyRuntimeError::new_err(
            "ferroloop handles are created by the loop (call_soon, call_later, call_at)",
        ))
    }

    /// Cancel the callback; does nothing if it already ran or was cancelled.
    fn cancel(slf: &Bound<'_, Self>) {
        let this = slf.get();
        if this.timer {
            // SAFETY: only `TimerHandle::new` makes a handle with `timer` set,
            // so this object is a TimerHandle.
            TimerHandle::cancel_timer(unsafe { slf.downcast_unchecked::<TimerHandle>() });
        } else {
            this.cancel_internal(slf.py());
        }
    }

    fn cancelled(&self) -> bool {
        self.is_cancelled()
    }

    fn get_context(&self, py: Python<'_>) -> PyObject {
        self.context_obj(py)
    }

    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        self.traverse(&visit)
    }

    fn __clear__(&self) {
        // SAFETY: tp_clear is only called by the collector, with the GIL held.
        let py = unsafe { Python::assume_gil_acquired() };
        let taken = self.callback.with(py, Option::take);
        drop(taken);
    }

    /// Run the callback now, reporting errors as the loop would. Kept for
    /// code written against asyncio's private `Handle._run`.
    fn _run(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        if let RunOutcome::Failed(err) = slf.get().run(py, true) {
            if is_fatal(py, &err) {
                return Err(err);
            }
            let loop_ = py
                .import("asyncio.events")?
                .call_method0("get_event_loop")?;
            loop_.call_method1("_report_callback_error", (slf, err.value(py)))?;
        }
        Ok(())
    }

    #[getter]
    fn _cancelled(&self) -> bool {
        self.is_cancelled()
    }

    #[getter]
    fn _callback(&self, py: Python<'_>) -> Option<PyObject> {
        self.callback_parts(py).map(|(f, _)| f)
    }

    #[getter]
    fn _args(&self, py: Python<'_>) -> Option<Py<PyTuple>> {
        self.callback_parts(py).map(|(_, a)| a)
    }

    #[getter]
    fn _context(&self, py: Python<'_>) -> PyObject {
        self.context_obj(py)
    }

    #[getter]
    fn _source_traceback(&self, py: Python<'_>) -> Option<PyObject> {
        self.source_traceback().map(|t| t.clone_ref(py))
    }

    /// What `isinstance` falls back to when the real type does not match: a
    /// native class cannot inherit asyncio's slotted `Handle`, so this makes
    /// `isinstance(h, asyncio.Handle)` hold as it does on the stock loop.
    #[getter]
    fn __class__(slf: &Bound<'_, Self>) -> PyResult<PyObject> {
        let py = slf.py();
        let name = if slf.is_instance_of::<TimerHandle>() {
            "TimerHandle"
        } else {
            "Handle"
        };
        Ok(py.import("asyncio.events")?.getattr(name)?.unbind())
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let name = slf.get_type().name()?;
        let when = slf.downcast::<TimerHandle>().ok().map(|t| t.get().when);
        slf.get()
            .format_repr(slf.py(), name.downcast::<PyString>()?.to_str()?, when)
    }
}

/// KeyboardInterrupt and SystemExit leave the loop; everything else raised by
/// a callback goes to the exception handler.
pub(crate) fn is_fatal(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py)
        || err.is_instance_of::<pyo3::exceptions::PySystemExit>(py)
}

/// A handle with a deadline, returned by `call_later` and `call_at`.
#[pyclass(module = "ferroloop", extends = Handle, frozen)]
pub struct TimerHandle {
    /// Deadline on the loop clock.
    pub(crate) when: f64,
    /// True while the timer sits in the loop's heap.
    pub(crate) scheduled: AtomicBool,
    /// The heap's count of cancelled entries (see `TimerStats`).
    stats: Arc<TimerStats>,
}

impl TimerHandle {
    /// The initializer of a new timer (its `Handle` part, then its own).
    pub(crate) fn new(
        when: f64,
        when_obj: Option<&Bound<'_, PyAny>>,
        func: PyObject,
        args: Py<PyTuple>,
        context: HandleContext,
        source_traceback: Option<PyObject>,
        stats: Arc<TimerStats>,
    ) -> PyClassInitializer<Self> {
        let base = Handle::new_timer_base(func, args, context, source_traceback, when_obj);
        PyClassInitializer::from(base).add_subclass(TimerHandle {
            when,
            scheduled: AtomicBool::new(false),
            stats,
        })
    }

    fn base<'a>(slf: &'a Bound<'_, Self>) -> &'a Handle {
        slf.as_super().get()
    }

    /// The same object, typed as its base class (for code that needs no
    /// GIL token, such as the collector's traversal).
    pub(crate) fn as_handle(timer: &Py<TimerHandle>) -> &Py<Handle> {
        // SAFETY: `Py<T>` is a transparent object pointer for every T, and a
        // TimerHandle is a Handle (its subclass), so the reference is valid.
        unsafe { &*(timer as *const Py<TimerHandle>).cast::<Py<Handle>>() }
    }

    /// The base part of a timer (`TimerHandle` extends `Handle`).
    pub(crate) fn handle_of(timer: &Py<TimerHandle>) -> &Handle {
        Self::as_handle(timer).get()
    }

    fn when_value(slf: &Bound<'_, Self>) -> PyObject {
        let py = slf.py();
        match Self::base(slf).when_obj() {
            Some(w) => w.clone_ref(py),
            None => pyo3::types::PyFloat::new(py, slf.get().when)
                .into_any()
                .unbind(),
        }
    }

    /// Cancels the timer and counts it for the heap if it sits there.
    pub(crate) fn cancel_timer(slf: &Bound<'_, Self>) {
        let base = Self::base(slf);
        if base.mark_cancelled() {
            let this = slf.get();
            if this.scheduled.load(Ordering::Relaxed) {
                this.stats.cancelled.fetch_add(1, Ordering::Relaxed);
            }
            base.drop_callback(slf.py());
        }
    }
}

#[pymethods]
impl TimerHandle {
    /// The absolute deadline on the loop's clock (`loop.time()`).
    fn when(slf: &Bound<'_, Self>) -> PyObject {
        Self::when_value(slf)
    }

    #[getter]
    fn _when(slf: &Bound<'_, Self>) -> PyObject {
        Self::when_value(slf)
    }

    #[getter]
    fn _scheduled(&self) -> bool {
        self.scheduled.load(Ordering::Relaxed)
    }

    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        // asyncio hashes a timer by its deadline alone.
        pyo3::types::PyFloat::new(py, self.when).hash()
    }

    fn __richcmp__(
        slf: &Bound<'_, Self>,
        other: &Bound<'_, PyAny>,
        op: pyo3::basic::CompareOp,
    ) -> PyResult<PyObject> {
        use pyo3::basic::CompareOp::*;
        let py = slf.py();
        let Ok(other) = other.downcast::<TimerHandle>() else {
            return Ok(py.NotImplemented());
        };
        let (a, b) = (slf.get().when, other.get().when);
        let equal = || timers_equal(py, slf, other);
        let result = match op {
            Lt => a < b,
            Gt => a > b,
            Le => a < b || equal()?,
            Ge => a > b || equal()?,
            Eq => equal()?,
            Ne => !equal()?,
        };
        Ok(pyo3::types::PyBool::new(py, result)
            .to_owned()
            .into_any()
            .unbind())
    }
}

/// asyncio's TimerHandle equality: same deadline, callback, args and state.
fn timers_equal(
    py: Python<'_>,
    a: &Bound<'_, TimerHandle>,
    b: &Bound<'_, TimerHandle>,
) -> PyResult<bool> {
    if a.is(b) {
        return Ok(true);
    }
    let (ha, hb) = (TimerHandle::base(a), TimerHandle::base(b));
    if a.get().when != b.get().when || ha.is_cancelled() != hb.is_cancelled() {
        return Ok(false);
    }
    match (ha.callback_parts(py), hb.callback_parts(py)) {
        (None, None) => Ok(true),
        (Some((fa, aa)), Some((fb, ab))) => {
            Ok(fa.bind(py).eq(fb.bind(py))? && aa.bind(py).eq(ab.bind(py))?)
        }
        _ => Ok(false),
    }
}
