//! `ReadyQueue`: the FIFO of handles to run on the next loop turn.
//!
//! A turn takes the whole queue at once, so callbacks scheduled while it runs
//! wait for the next turn, as asyncio's `ntodo` snapshot does. The lock is
//! uncontended except against `call_soon_threadsafe` from other threads.

use std::collections::VecDeque;
use std::sync::Mutex;

use pyo3::prelude::*;

use crate::handles::Handle;

#[derive(Default)]
pub struct ReadyQueue {
    inner: Mutex<VecDeque<Py<Handle>>>,
}

impl ReadyQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Py<Handle>>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[inline]
    pub fn push(&self, handle: Py<Handle>) {
        self.lock().push_back(handle);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Moves every queued handle into `into` (which must be empty), leaving
    /// the queue empty; `into`'s old allocation is reused by the queue.
    pub fn take_all(&self, into: &mut VecDeque<Py<Handle>>) {
        debug_assert!(into.is_empty());
        std::mem::swap(&mut *self.lock(), into);
    }

    /// Puts handles that a turn did not get to back in front, in order.
    pub fn restore_front(&self, rest: &mut VecDeque<Py<Handle>>) {
        let mut q = self.lock();
        while let Some(h) = rest.pop_back() {
            q.push_front(h);
        }
    }

    pub fn clear(&self) -> VecDeque<Py<Handle>> {
        std::mem::take(&mut *self.lock())
    }
}
