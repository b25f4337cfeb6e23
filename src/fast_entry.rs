//! Direct C entry points for the loop methods called once per callback or
//! per future: `call_soon` (from user code and from every C `Task`/`Future`
//! wake-up), `call_soon_threadsafe`, and `get_debug` and `time` (which C
//! `Future`s and timeouts call).
//!
//! PyO3's generic method wrapper spends as much on argument parsing and its
//! own GIL bookkeeping as `call_soon` spends on its work. These entries take
//! the vectorcall arguments as they arrive and hand them to the same
//! `LoopCore` code the regular methods run, so behaviour (checks, errors,
//! the handle returned) is identical; only the calling convention differs.
//! `ferroloop.Loop` binds them onto each loop instance (`_fast_methods`).

use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

use crate::event_loop::LoopCore;
use crate::handles::Handle;

type Schedule = for<'py> fn(
    &Bound<'py, LoopCore>,
    &Bound<'py, PyAny>,
    &Bound<'py, PyTuple>,
    Option<&Bound<'py, PyAny>>,
) -> PyResult<Py<Handle>>;

/// A `PyMethodDef` in a static: CPython only reads it, from any thread.
struct MethodDef(ffi::PyMethodDef);

// SAFETY: the definition is immutable and its pointers are to static data.
unsafe impl Sync for MethodDef {}

macro_rules! fast_method {
    ($def:ident, $entry:ident, $name:literal, $doc:literal, $schedule:path) => {
        unsafe extern "C" fn $entry(
            slf: *mut ffi::PyObject,
            args: *const *mut ffi::PyObject,
            nargs: ffi::Py_ssize_t,
            kwnames: *mut ffi::PyObject,
        ) -> *mut ffi::PyObject {
            // SAFETY: CPython calls METH_FASTCALL functions with the GIL held
            // and with `nargs` positional arguments then one value per name
            // in `kwnames` at `args`.
            unsafe { enter($name, $schedule, slf, args, nargs, kwnames) }
        }

        static $def: MethodDef = MethodDef(ffi::PyMethodDef {
            ml_name: concat!($name, "\0").as_ptr() as *const c_char,
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunctionFastWithKeywords: $entry,
            },
            ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
            ml_doc: concat!($doc, "\0").as_ptr() as *const c_char,
        });
    };
}

fast_method!(
    CALL_SOON,
    call_soon_entry,
    "call_soon",
    "call_soon($self, callback, *args, context=None)\n--\n\n\
     Arrange for a callback to be called as soon as possible.",
    LoopCore::call_soon
);

fast_method!(
    CALL_SOON_THREADSAFE,
    call_soon_threadsafe_entry,
    "call_soon_threadsafe",
    "call_soon_threadsafe($self, callback, *args, context=None)\n--\n\n\
     Like call_soon(), but thread-safe.",
    LoopCore::call_soon_threadsafe
);

unsafe extern "C" fn create_task_entry(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls METH_FASTCALL functions with the GIL held and
    // the arguments laid out as in `enter`.
    unsafe {
        let py = Python::assume_gil_acquired();
        guarded(py, "create_task", slf, |lp| {
            create_task(py, lp, args, nargs as usize, kwnames)
        })
    }
}

static CREATE_TASK: MethodDef = MethodDef(ffi::PyMethodDef {
    ml_name: c"create_task".as_ptr(),
    ml_meth: ffi::PyMethodDefPointer {
        PyCFunctionFastWithKeywords: create_task_entry,
    },
    ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
    ml_doc: c"create_task($self, coro, *, name=None, context=None)\n--\n\n\
              Schedule a coroutine object; return a Task."
        .as_ptr(),
});

/// `create_task(coro)` as `BaseEventLoop.create_task` does it when no task
/// factory is set and debug mode is off: `tasks.Task(coro, loop=self,
/// name=name, context=context)`, minus the Python frame. Everything else
/// (a factory, debug mode's traceback trimming, unusual arguments) goes to
/// the Python method, `Loop.create_task`, so there is one implementation
/// of the rules.
///
/// # Safety
/// The GIL is held; `args` holds `nargs` positional values then one per
/// entry of `kwnames` (NULL or a tuple of str), all borrowed.
unsafe fn create_task(
    py: Python<'_>,
    lp: &Bound<'_, LoopCore>,
    args: *const *mut ffi::PyObject,
    nargs: usize,
    kwnames: *mut ffi::PyObject,
) -> PyResult<*mut ffi::PyObject> {
    let this = lp.get();
    // SAFETY: kwnames is NULL or a tuple of str.
    let names = (!kwnames.is_null()).then(|| unsafe {
        Bound::from_borrowed_ptr(py, kwnames).downcast_into_unchecked::<PyTuple>()
    });
    let nkw = names.as_ref().map_or(0, |n| n.len());
    let plain_keywords = names.as_ref().is_none_or(|n| {
        n.iter().all(|k| {
            keyword_is(&k, intern!(py, "name"), c"name")
                || keyword_is(&k, intern!(py, "context"), c"context")
        })
    });
    let fast = nargs == 1
        && plain_keywords
        && !this.is_debug()
        && lp.getattr(intern!(py, "_task_factory"))?.is_none();
    // SAFETY (both branches): `args` holds nargs + nkw borrowed pointers.
    let argv = unsafe { std::slice::from_raw_parts(args, nargs + nkw) };
    if !fast {
        // The Python method, with the loop prepended to the arguments.
        let method = lp.get_type().getattr(intern!(py, "create_task"))?;
        let mut full = Vec::with_capacity(argv.len() + 1);
        full.push(lp.as_ptr());
        full.extend_from_slice(argv);
        // SAFETY: `full` holds nargs + 1 positional values then the keywords'.
        return Ok(unsafe {
            ffi::PyObject_Vectorcall(method.as_ptr(), full.as_ptr(), nargs + 1, kwnames)
        });
    }
    this.check_closed()?;
    let task_type = this.tasks_module.bind(py).getattr(intern!(py, "Task"))?;
    // Task(coro, [name=..., context=...,] loop=self)
    let mut call_args = Vec::with_capacity(argv.len() + 1);
    call_args.extend_from_slice(argv);
    call_args.push(lp.as_ptr());
    let call_names = match &names {
        None => this.loop_kwnames.clone_ref(py).into_bound(py),
        Some(n) => {
            let mut all: Vec<Bound<'_, PyAny>> = n.iter().collect();
            all.push(intern!(py, "loop").clone().into_any());
            PyTuple::new(py, all)?
        }
    };
    // SAFETY: `call_args` holds 1 positional value then one per name.
    Ok(unsafe {
        ffi::PyObject_Vectorcall(
            task_type.as_ptr(),
            call_args.as_ptr(),
            1,
            call_names.as_ptr(),
        )
    })
}

macro_rules! noargs_method {
    ($def:ident, $entry:ident, $name:literal, $doc:literal, $body:expr) => {
        unsafe extern "C" fn $entry(
            slf: *mut ffi::PyObject,
            _unused: *mut ffi::PyObject,
        ) -> *mut ffi::PyObject {
            let body: fn(Python<'_>, &Bound<'_, LoopCore>) -> PyResult<*mut ffi::PyObject> = $body;
            // SAFETY: CPython calls METH_NOARGS functions with the GIL held
            // and `slf` alive; the function is only bound to loops.
            unsafe {
                let py = Python::assume_gil_acquired();
                guarded(py, $name, slf, |lp| body(py, lp))
            }
        }

        static $def: MethodDef = MethodDef(ffi::PyMethodDef {
            ml_name: concat!($name, "\0").as_ptr() as *const c_char,
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunction: $entry,
            },
            ml_flags: ffi::METH_NOARGS,
            ml_doc: concat!($doc, "\0").as_ptr() as *const c_char,
        });
    };
}

noargs_method!(
    GET_DEBUG,
    get_debug_entry,
    "get_debug",
    "get_debug($self, /)\n--\n\nTrue if the loop runs in debug mode.",
    |_py, lp| {
        // SAFETY: returns a new reference to a bool singleton.
        Ok(unsafe { ffi::PyBool_FromLong(lp.get().get_debug() as std::ffi::c_long) })
    }
);

noargs_method!(
    TIME,
    time_entry,
    "time",
    "time($self, /)\n--\n\nThe loop clock (monotonic seconds).",
    |py, lp| {
        let now = lp.get().time(py)?;
        // SAFETY: returns a new reference or NULL with an exception set.
        Ok(unsafe { ffi::PyFloat_FromDouble(now) })
    }
);

noargs_method!(
    CREATE_FUTURE,
    create_future_entry,
    "create_future",
    "create_future($self, /)\n--\n\nCreate a Future object attached to the loop.",
    |py, lp| {
        // `futures.Future(loop=self)`, as BaseEventLoop.create_future; the
        // class is looked up per call so a patched `futures.Future` counts.
        let this = lp.get();
        let future_type = this
            .futures_module
            .bind(py)
            .getattr(intern!(py, "Future"))?;
        let args = [lp.as_ptr()];
        // SAFETY: one keyword value (the loop) named by `loop_kwnames`;
        // returns a new reference or NULL with an exception set.
        Ok(unsafe {
            ffi::PyObject_Vectorcall(
                future_type.as_ptr(),
                args.as_ptr(),
                0,
                this.loop_kwnames.as_ptr(),
            )
        })
    }
);

/// Runs `f` on the loop `slf` with panics and errors turned into a Python
/// exception (a NULL return).
///
/// # Safety
/// The GIL is held and `slf` is alive.
unsafe fn guarded(
    py: Python<'_>,
    name: &'static str,
    slf: *mut ffi::PyObject,
    f: impl FnOnce(&Bound<'_, LoopCore>) -> PyResult<*mut ffi::PyObject>,
) -> *mut ffi::PyObject {
    let result = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `slf` is the object the function was bound to, alive for the call.
        let lp = unsafe { Bound::from_borrowed_ptr(py, slf) };
        // SAFETY: `_fast_methods` binds these functions to a `LoopCore` (a
        // builtin's `__self__` cannot be changed), so `slf` is one; checked
        // in debug builds.
        debug_assert!(
            lp.is_instance_of::<LoopCore>(),
            "{name}() bound to a non-loop"
        );
        let lp = unsafe { lp.downcast_unchecked::<LoopCore>() };
        f(lp)
    }));
    match result.unwrap_or_else(|payload| Err(PanicException::new_err(panic_message(&payload)))) {
        Ok(p) => p,
        Err(err) => {
            err.restore(py);
            std::ptr::null_mut()
        }
    }
}

/// True if the keyword name `key` (a str from `kwnames`) is `name`.
/// Python callers pass interned names, matched by pointer; C callers (C
/// Tasks and Futures) pass strings of their own, compared in place without
/// decoding them.
fn keyword_is(key: &Bound<'_, PyAny>, interned: &Bound<'_, PyString>, name: &CStr) -> bool {
    // SAFETY: keyword names are str objects; `name` is NUL-terminated ASCII.
    key.is(interned)
        || unsafe { ffi::PyUnicode_CompareWithASCIIString(key.as_ptr(), name.as_ptr()) } == 0
}

/// Parses `(callback, *args, context=None)` and schedules; never unwinds.
///
/// # Safety
/// The GIL is held; `args` holds `nargs` positional values followed by one
/// value per entry of `kwnames` (NULL or a tuple of str), all borrowed.
unsafe fn enter(
    name: &'static str,
    schedule: Schedule,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: the caller holds the GIL (see above).
    let py = unsafe { Python::assume_gil_acquired() };
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        guarded(py, name, slf, |lp| {
            parse_and_schedule(py, name, schedule, lp, args, nargs, kwnames).map(Py::into_ptr)
        })
    }
}

unsafe fn parse_and_schedule(
    py: Python<'_>,
    name: &'static str,
    schedule: Schedule,
    lp: &Bound<'_, LoopCore>,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<Py<Handle>> {
    let nargs = nargs as usize;
    // SAFETY: the caller passes nargs positional values then the keywords'.
    let argv = |i: usize| unsafe { Bound::from_borrowed_ptr(py, *args.add(i)) };
    let mut context = None;
    // As in asyncio, `callback` may also be passed by keyword (then no *args).
    let mut callback = (nargs > 0).then(|| argv(0));
    if !kwnames.is_null() {
        // SAFETY: kwnames is a tuple of str when not NULL.
        let names =
            unsafe { Bound::from_borrowed_ptr(py, kwnames).downcast_into_unchecked::<PyTuple>() };
        for (i, key) in names.iter().enumerate() {
            if keyword_is(&key, intern!(py, "context"), c"context") {
                context = Some(argv(nargs + i));
                continue;
            }
            let key = key.downcast_into::<PyString>()?;
            let slot = match &*key.to_cow()? {
                "context" => &mut context,
                "callback" if nargs == 0 => &mut callback,
                "callback" => {
                    return Err(PyTypeError::new_err(format!(
                        "{name}() got multiple values for argument 'callback'"
                    )))
                }
                _ => {
                    return Err(PyTypeError::new_err(format!(
                        "{name}() got an unexpected keyword argument '{key}'"
                    )))
                }
            };
            *slot = Some(argv(nargs + i));
        }
    }
    let Some(callback) = callback else {
        return Err(PyTypeError::new_err(format!(
            "{name}() missing 1 required positional argument: 'callback'"
        )));
    };
    let rest = if nargs == 1 {
        // SAFETY: PyTuple_New(0) returns a new reference to the empty tuple
        // (or NULL with an exception set).
        unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyTuple_New(0))?.downcast_into_unchecked() }
    } else {
        PyTuple::new(py, (1..nargs).map(argv))?
    };
    schedule(lp, &callback, &rest, context.as_ref())
}

fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic in ferroloop".to_owned()
    }
}

fn bind(py: Python<'_>, def: &'static MethodDef, lp: &Bound<'_, LoopCore>) -> PyResult<PyObject> {
    // SAFETY: the definition is static; CPython never writes through the
    // pointer. Returns a new reference or NULL with an exception set.
    unsafe {
        let ptr = std::ptr::addr_of!(def.0) as *mut ffi::PyMethodDef;
        Bound::from_owned_ptr_or_err(
            py,
            ffi::PyCFunction_NewEx(ptr, lp.as_ptr(), std::ptr::null_mut()),
        )
        .map(Bound::unbind)
    }
}

/// The fast entries bound to one loop, by method name.
#[pyfunction]
pub fn _fast_methods<'py>(lp: &Bound<'py, LoopCore>) -> PyResult<Bound<'py, PyDict>> {
    let py = lp.py();
    let d = PyDict::new(py);
    for def in [
        &CALL_SOON,
        &CALL_SOON_THREADSAFE,
        &GET_DEBUG,
        &TIME,
        &CREATE_TASK,
        &CREATE_FUTURE,
    ] {
        // SAFETY: ml_name points at a static NUL-terminated string.
        let name = unsafe { CStr::from_ptr(def.0.ml_name) }
            .to_str()
            .expect("ascii name");
        d.set_item(name, bind(py, def, lp)?)?;
    }
    Ok(d)
}
