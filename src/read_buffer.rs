//! A per-thread scratch buffer for native reads (`recvfrom`, `read`).
//!
//! Transports read into it and copy out an exact-size `bytes`, so no
//! transport keeps a large buffer of its own (asyncio's 256 KiB reads would
//! otherwise cost 256 KiB per idle endpoint) and nothing is allocated per read.

use std::cell::RefCell;

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
