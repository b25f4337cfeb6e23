//! `ReadyQueue`: the FIFO of handles to run on the next loop turn.
//!
//! A turn takes the whole queue at once, so callbacks scheduled while it runs
//! wait for the next turn, as asyncio's `ntodo` snapshot does.

use std::collections::VecDeque;

use pyo3::prelude::*;

use crate::gil_cell::GilCell;
use crate::handles::Handle;

#[derive(Default)]
pub struct ReadyQueue {
    inner: GilCell<VecDeque<Py<Handle>>>,
}

impl ReadyQueue {
    #[inline]
    pub fn push(&self, py: Python<'_>, handle: Py<Handle>) {
        self.inner.with(py, |q| q.push_back(handle));
    }

    #[inline]
    pub fn is_empty(&self, py: Python<'_>) -> bool {
        self.inner.with(py, |q| q.is_empty())
    }

    /// Moves every queued handle into `into` (which must be empty), leaving
    /// the queue empty; `into`'s old allocation is reused by the queue.
    #[inline]
    pub fn take_all(&self, py: Python<'_>, into: &mut VecDeque<Py<Handle>>) {
        debug_assert!(into.is_empty());
        self.inner.with(py, |q| std::mem::swap(q, into));
    }

    /// Puts handles that a turn did not get to back in front, in order.
    pub fn restore_front(&self, py: Python<'_>, rest: &mut VecDeque<Py<Handle>>) {
        self.inner.with(py, |q| {
            while let Some(h) = rest.pop_back() {
                q.push_front(h);
            }
        });
    }

    pub fn traverse<E>(&self, visit: impl Fn(&Py<Handle>) -> Result<(), E>) -> Result<(), E> {
        self.inner
            .peek(|q| q.iter().try_for_each(&visit))
            .unwrap_or(Ok(()))
    }

    /// Empties the queue; the caller drops the handles (outside the cell).
    pub fn clear(&self, py: Python<'_>) -> VecDeque<Py<Handle>> {
        self.inner.with(py, std::mem::take)
    }
}
