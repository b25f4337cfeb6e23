//! Loop threads at interpreter exit: releasing and retaking the GIL, and
//! calling Python callbacks, so that a daemon thread still running a loop
//! when the main thread exits does not crash the process.
//!
//! Before Python 3.14, a thread that retakes the GIL once `Py_Finalize` has
//! begun is ended by `pthread_exit` from inside the C API: when its blocking
//! wait returns, or inside Python code it runs, when the eval loop hands the
//! GIL over and takes it back. That is a forced unwind, and it cannot be let
//! through our Rust frames: PyO3's `catch_unwind` would stop it and glibc
//! aborts the process ("FATAL: exception not rethrown"). Stock asyncio is C,
//! so there the thread simply ends.
//!
//! So the places where a loop thread hands control to code that may end it
//! this way — retaking the GIL after its wait, calling a handle's callback,
//! and a transport calling its protocol — declare those C functions as able
//! to unwind and hold a guard that parks the thread for good if they do. The thread then waits, holding
//! nothing, until the process exits, which is what Python 3.14 itself does
//! with such threads.

use pyo3::prelude::*;
use pyo3::types::PyString;
use pyo3::{ffi, Python};

extern "C-unwind" {
    // The same C functions PyO3 declares, seen as able to unwind, so a
    // forced unwind out of them runs this module's guards.
    #[link_name = "PyEval_RestoreThread"]
    fn restore_thread(tstate: *mut ffi::PyThreadState);
    #[link_name = "PyObject_Vectorcall"]
    fn vectorcall(
        callable: *mut ffi::PyObject,
        args: *const *mut ffi::PyObject,
        nargsf: usize,
        kwnames: *mut ffi::PyObject,
    ) -> *mut ffi::PyObject;
    #[link_name = "PyObject_CallNoArgs"]
    fn call_no_args(callable: *mut ffi::PyObject) -> *mut ffi::PyObject;
}

/// Parks the thread for good if dropped, i.e. if what it guards unwound.
struct ParkIfUnwound;

impl Drop for ParkIfUnwound {
    fn drop(&mut self) {
        loop {
            std::thread::park();
        }
    }
}

/// Runs `wait` with the GIL released; `wait` must not touch Python objects.
#[inline]
pub fn without_gil<T>(_py: Python<'_>, wait: impl FnOnce() -> T) -> T {
    struct Retake(*mut ffi::PyThreadState);
    impl Drop for Retake {
        fn drop(&mut self) {
            let guard = ParkIfUnwound;
            // SAFETY: the thread state saved below, retaken once.
            unsafe { restore_thread(self.0) };
            std::mem::forget(guard);
        }
    }
    // SAFETY: the GIL is held (the token says so); `Retake` takes it back
    // when this returns, also if `wait` panics.
    let _retake = Retake(unsafe { ffi::PyEval_SaveThread() });
    wait()
}

/// `callable(*args)` for a handle's callback: `args` points at `n` items.
///
/// # Safety
/// The GIL is held and every pointer is a live object for the whole call.
#[inline]
pub unsafe fn call_callback(
    callable: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    n: usize,
) -> *mut ffi::PyObject {
    let guard = ParkIfUnwound;
    // SAFETY: the caller's contract.
    let res = unsafe {
        if n == 0 {
            call_no_args(callable)
        } else {
            vectorcall(callable, args, n, std::ptr::null_mut())
        }
    };
    std::mem::forget(guard);
    res
}

extern "C-unwind" {
    #[link_name = "PyObject_VectorcallMethod"]
    fn vectorcall_method(
        name: *mut ffi::PyObject,
        args: *const *mut ffi::PyObject,
        nargsf: usize,
        kwnames: *mut ffi::PyObject,
    ) -> *mut ffi::PyObject;
}

/// `obj.name(*args)` (at most two arguments) for the calls a transport makes
/// into its protocol on the loop thread (`data_received`, `connection_lost`,
/// ...), guarded like `call_callback`.
pub fn call_method<'py>(
    obj: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
    args: &[&Bound<'py, PyAny>],
) -> PyResult<Bound<'py, PyAny>> {
    assert!(args.len() <= 2, "call_method takes at most two arguments");
    let mut argv = [std::ptr::null_mut(); 3];
    argv[0] = obj.as_ptr();
    for (slot, a) in argv[1..].iter_mut().zip(args) {
        *slot = a.as_ptr();
    }
    let guard = ParkIfUnwound;
    // SAFETY: the GIL is held (the Bound says so) and `argv` holds borrowed,
    // live objects for the whole call; returns a new reference or NULL.
    let res = unsafe {
        vectorcall_method(
            name.as_ptr(),
            argv.as_ptr(),
            1 + args.len(),
            std::ptr::null_mut(),
        )
    };
    std::mem::forget(guard);
    // SAFETY: `res` is a new reference, or NULL with an exception set.
    unsafe { Bound::from_owned_ptr_or_err(obj.py(), res) }
}
