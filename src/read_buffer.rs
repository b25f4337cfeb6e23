//! What native reads (`recvfrom`, `read`) are read into: a per-thread
//! scratch buffer, and a loop's `SpareBytes`.
//!
//! Transports read into the scratch buffer and copy out an exact-size
//! `bytes`, so no transport keeps a large buffer of its own (asyncio's
//! 256 KiB reads would otherwise cost 256 KiB per idle endpoint) and nothing
//! is allocated per read but the `bytes` handed to the protocol.

use std::cell::RefCell;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::gil_cell::GilCell;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Run `f` with a scratch slice of at least `len` bytes. `f` must not run
/// Python code (which could re-enter a read on this thread).
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0);
            }
            f(&mut buf[..len])
        }
        // Re-entered (should not happen): use a temporary buffer.
        Err(_) => f(&mut vec![0u8; len]),
    })
}

/// The contents of a `bytes` object, read inline (pyo3's `as_bytes` makes
/// two checked C calls; this is on the path of every read and write).
#[inline]
pub(crate) fn bytes_of<'a>(b: &'a Bound<'_, PyBytes>) -> &'a [u8] {
    let p = b.as_ptr();
    // SAFETY: p is a live bytes object (the type guarantees it) whose
    // immutable contents live as long as the borrow of `b`.
    unsafe {
        std::slice::from_raw_parts(
            ffi::PyBytes_AS_STRING(p).cast::<u8>(),
            ffi::Py_SIZE(p) as usize,
        )
    }
}

/// Smaller `bytes` come from pymalloc's pools, which are cheap already;
/// larger ones cost a libc `malloc` and `free` each, which recycling saves.
const MIN_RECYCLED: usize = 513;
/// Larger ones are rare enough that keeping them would only hold memory.
const MAX_RECYCLED: usize = 64 * 1024;
/// How many a loop keeps: enough for the reads of one turn over a few
/// connections, so at most 512 KiB.
const SPARES: usize = 8;

/// `bytes` objects of finished reads and writes that nobody kept, refilled
/// for the next read of the same size.
///
/// Most protocols consume what `data_received` hands them and drop it
/// (streams copy it into their buffer; an echo writes it back, and the
/// transport lets go of it once it is sent). When the transport holds the
/// only reference, the object is unreachable from Python, so writing new
/// contents into it is unobservable, the way CPython itself resizes a
/// `bytes` nobody else holds. Kept per loop, not per transport, so idle
/// connections keep nothing.
pub(crate) struct SpareBytes(GilCell<Vec<Py<PyBytes>>>);

impl SpareBytes {
    pub(crate) fn new() -> Self {
        SpareBytes(GilCell::new(Vec::new()))
    }

    /// A `bytes` holding `data`: a spare one of that size refilled, or a
    /// new one.
    pub(crate) fn bytes_from<'py>(&self, py: Python<'py>, data: &[u8]) -> Bound<'py, PyBytes> {
        if (MIN_RECYCLED..=MAX_RECYCLED).contains(&data.len()) {
            let spare = self.0.with(py, |spares| {
                let i = spares
                    .iter()
                    .rposition(|b| bytes_of(b.bind(py)).len() == data.len())?;
                Some(spares.swap_remove(i))
            });
            if let Some(b) = spare {
                let p = b.as_ptr();
                // SAFETY: a spare was only kept while we held its sole
                // reference (see `offer`) and has been in our list since, so
                // nothing else can see the bytes change; its size is
                // data.len(). The cached hash is reset as the contents change.
                #[allow(deprecated)] // ob_shash: still CPython's hash cache
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        data.as_ptr(),
                        ffi::PyBytes_AS_STRING(p) as *mut u8,
                        data.len(),
                    );
                    (*p.cast::<ffi::PyBytesObject>()).ob_shash = -1;
                }
                return b.into_bound(py);
            }
        }
        PyBytes::new(py, data)
    }

    /// Keeps `data` for reuse if nobody but the caller holds it any more.
    pub(crate) fn offer(&self, py: Python<'_>, data: &Bound<'_, PyBytes>) {
        // A free-threaded build shares reference counts between threads, so
        // a count of one proves nothing there: no recycling.
        #[cfg(Py_GIL_DISABLED)]
        let _ = (py, data);
        #[cfg(not(Py_GIL_DISABLED))]
        {
            let p = data.as_ptr();
            // SAFETY: reading the reference count and type of a live object.
            let sole = unsafe { ffi::Py_REFCNT(p) == 1 && ffi::PyBytes_CheckExact(p) != 0 };
            if sole && (MIN_RECYCLED..=MAX_RECYCLED).contains(&bytes_of(data).len()) {
                let oldest = self.0.with(py, |spares| {
                    let oldest = (spares.len() == SPARES).then(|| spares.remove(0));
                    spares.push(data.clone().unbind());
                    oldest
                });
                drop(oldest);
            }
        }
    }

    /// Drops the spares (at loop close).
    pub(crate) fn clear(&self, py: Python<'_>) {
        let spares = self.0.with(py, std::mem::take);
        drop(spares);
    }
}
