//! What a failed system call, or a socket method that raised, means to a
//! transport: the errno, whether it only says "try again later", and the
//! `OSError` Python code should see. Shared by the stream, datagram and
//! pipe transports so they agree on every case.

use pyo3::exceptions::{PyBlockingIOError, PyInterruptedError, PyOSError};
use pyo3::prelude::*;

/// The calling thread's errno after a failed system call.
pub(crate) fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// EAGAIN/EWOULDBLOCK/EINTR: nothing happened, retry when ready.
pub(crate) fn would_block(e: i32) -> bool {
    e == libc::EAGAIN || e == libc::EWOULDBLOCK || e == libc::EINTR
}

/// What asyncio's transports treat as "try again later" when a socket
/// method raises: BlockingIOError and InterruptedError.
pub(crate) fn raised_would_block(py: Python<'_>, e: &PyErr) -> bool {
    e.is_instance_of::<PyBlockingIOError>(py) || e.is_instance_of::<PyInterruptedError>(py)
}

/// `OSError(errno, strerror(errno))`: Python picks the subclass from the
/// errno (ConnectionResetError, BrokenPipeError, ...), exactly as the
/// socket module raises it.
pub(crate) fn os_error(errno: i32) -> PyErr {
    // SAFETY: strerror returns a valid NUL-terminated string.
    let msg = unsafe { std::ffi::CStr::from_ptr(libc::strerror(errno)) }
        .to_string_lossy()
        .into_owned();
    PyOSError::new_err((errno, msg))
}
