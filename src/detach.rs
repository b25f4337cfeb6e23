//! Loop threads at interpreter exit: releasing and retaking the GIL, and
//! calling Python code, so that a daemon thread still running a loop when
//! the main thread exits does not crash the process.
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
//! this way (retaking the GIL after its wait, calling a handle's callback,
//! a transport calling its protocol) call those C functions as able to
//! unwind, under a guard that parks the thread for good if they do. The
//! thread then waits, holding nothing, until the process exits, which is
//! what Python 3.14 itself does with such threads.
//!
//! The functions are looked up at run time rather than declared: PyO3
//! declares the same symbols as unable to unwind, and link-time optimisation
//! would merge the two declarations and drop the guards' landing pads.

use std::ffi::CStr;
use std::sync::OnceLock;

use pyo3::prelude::*;
use pyo3::types::PyString;
use pyo3::{ffi, Python};

type RestoreThread = unsafe extern "C-unwind" fn(*mut ffi::PyThreadState);
type CallNoArgs = unsafe extern "C-unwind" fn(*mut ffi::PyObject) -> *mut ffi::PyObject;
type Vectorcall = unsafe extern "C-unwind" fn(
    *mut ffi::PyObject,
    *const *mut ffi::PyObject,
    usize,
    *mut ffi::PyObject,
) -> *mut ffi::PyObject;

/// The C API functions this module calls, as able to unwind.
struct UnwindingCApi {
    restore_thread: RestoreThread,
    call_no_args: CallNoArgs,
    vectorcall: Vectorcall,
    vectorcall_method: Vectorcall,
}

fn c_api() -> &'static UnwindingCApi {
    static API: OnceLock<UnwindingCApi> = OnceLock::new();
    API.get_or_init(|| {
        fn lookup(name: &CStr) -> *mut libc::c_void {
            // SAFETY: dlsym with a NUL-terminated name has no other contract.
            let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
            assert!(!p.is_null(), "the Python C API has no {name:?}");
            p
        }
        // SAFETY: each symbol is the C function of that name, whose C
        // signature the type spells out; only the unwind ABI is ours.
        unsafe {
            UnwindingCApi {
                restore_thread: std::mem::transmute::<*mut libc::c_void, RestoreThread>(lookup(
                    c"PyEval_RestoreThread",
                )),
                call_no_args: std::mem::transmute::<*mut libc::c_void, CallNoArgs>(lookup(
                    c"PyObject_CallNoArgs",
                )),
                vectorcall: std::mem::transmute::<*mut libc::c_void, Vectorcall>(lookup(
                    c"PyObject_Vectorcall",
                )),
                vectorcall_method: std::mem::transmute::<*mut libc::c_void, Vectorcall>(lookup(
                    c"PyObject_VectorcallMethod",
                )),
            }
        }
    })
}

/// Runs `call` (a call into C that may end the thread by unwinding) and,
/// if it unwinds, parks the thread for good instead of letting it go on.
#[inline(always)]
fn park_if_unwound<R>(call: impl FnOnce() -> R) -> R {
    struct Park;
    impl Drop for Park {
        fn drop(&mut self) {
            loop {
                std::thread::park();
            }
        }
    }
    let guard = Park;
    let out = call();
    std::mem::forget(guard);
    out
}

/// Runs `wait` with the GIL released; `wait` must not touch Python objects.
#[inline]
pub fn without_gil<T>(_py: Python<'_>, wait: impl FnOnce() -> T) -> T {
    struct Retake(*mut ffi::PyThreadState, RestoreThread);
    impl Drop for Retake {
        fn drop(&mut self) {
            // SAFETY: the thread state saved below, retaken once.
            park_if_unwound(|| unsafe { (self.1)(self.0) });
        }
    }
    let restore = c_api().restore_thread;
    // SAFETY: the GIL is held (the token says so); `Retake` takes it back
    // when this returns, also if `wait` panics.
    let _retake = Retake(unsafe { ffi::PyEval_SaveThread() }, restore);
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
    let api = c_api();
    // SAFETY: the caller's contract.
    park_if_unwound(|| unsafe {
        if n == 0 {
            (api.call_no_args)(callable)
        } else {
            (api.vectorcall)(callable, args, n, std::ptr::null_mut())
        }
    })
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
    let api = c_api();
    // SAFETY: the GIL is held (the Bound says so) and `argv` holds borrowed,
    // live objects for the whole call; returns a new reference or NULL.
    let res = park_if_unwound(|| unsafe {
        (api.vectorcall_method)(
            name.as_ptr(),
            argv.as_ptr(),
            1 + args.len(),
            std::ptr::null_mut(),
        )
    });
    // SAFETY: `res` is a new reference, or NULL with an exception set.
    unsafe { Bound::from_owned_ptr_or_err(obj.py(), res) }
}
