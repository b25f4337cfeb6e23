//! `TimerHeap`: every pending `call_at`/`call_later`, ordered by deadline and
//! then by scheduling order, plus the loop clock.
//!
//! Cancelling is O(1): the handle is only flagged and counted. The heap drops
//! cancelled entries when they reach the top, or rebuilds itself once more than
//! half of a large heap is cancelled (asyncio's rule), so a storm of
//! `wait_for` timeouts that never fire cannot grow it without bound.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyDict;

use crate::handles::{Handle, TimerHandle, TimerStats};

/// Rebuild only heaps at least this large (asyncio's `_MIN_SCHEDULED_TIMER_HANDLES`).
const MIN_HEAP_FOR_REBUILD: usize = 100;

struct Entry {
    when: f64,
    seq: u64,
    handle: Py<TimerHandle>,
}

impl Entry {
    fn is_cancelled(&self) -> bool {
        TimerHandle::handle_of(&self.handle).is_cancelled()
    }

    /// Out of the heap: no longer scheduled, and seen as a plain handle.
    fn into_handle(self, py: Python<'_>) -> Py<Handle> {
        self.handle.get().scheduled.store(false, Ordering::Relaxed);
        self.handle.into_bound(py).into_super().unbind()
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    // Reversed so std's max-heap pops the earliest deadline first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other
            .when
            .total_cmp(&self.when)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

pub struct TimerHeap {
    heap: BinaryHeap<Entry>,
    next_seq: u64,
    pub stats: Arc<TimerStats>,
}

impl Default for TimerHeap {
    fn default() -> Self {
        TimerHeap {
            heap: BinaryHeap::new(),
            next_seq: 0,
            stats: Arc::new(TimerStats::default()),
        }
    }
}

impl TimerHeap {
    pub fn push(&mut self, handle: Py<TimerHandle>) {
        let h = handle.get();
        h.scheduled.store(true, Ordering::Relaxed);
        let when = h.when;
        self.next_seq += 1;
        self.heap.push(Entry {
            when,
            seq: self.next_seq,
            handle,
        });
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Drops cancelled timers: all of them when they dominate a large heap,
    /// otherwise only those at the top (which would decide the poll timeout).
    /// Returns the dropped handles so the caller releases them outside any
    /// cell borrow (their finalizers may run Python code).
    pub fn purge_cancelled(&mut self, py: Python<'_>, dropped: &mut Vec<Py<Handle>>) {
        let cancelled = self.stats.cancelled.load(Ordering::Relaxed);
        if self.heap.len() > MIN_HEAP_FOR_REBUILD && cancelled * 2 > self.heap.len() {
            let mut kept = Vec::with_capacity(self.heap.len() - cancelled.min(self.heap.len()));
            for e in std::mem::take(&mut self.heap).into_vec() {
                if e.is_cancelled() {
                    dropped.push(e.into_handle(py));
                } else {
                    kept.push(e);
                }
            }
            self.heap = BinaryHeap::from(kept);
            self.stats.cancelled.store(0, Ordering::Relaxed);
        } else {
            while let Some(top) = self.heap.peek() {
                if !top.is_cancelled() {
                    break;
                }
                dropped.push(self.heap.pop().expect("peeked").into_handle(py));
                let _ =
                    self.stats
                        .cancelled
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                            Some(c.saturating_sub(1))
                        });
            }
        }
    }

    /// Deadline of the earliest timer, if any.
    pub fn next_deadline(&self) -> Option<f64> {
        self.heap.peek().map(|e| e.when)
    }

    /// Pops timers due before `end` (cancelled ones too: the runner skips
    /// them) and hands each to `sink` in deadline order.
    pub fn pop_due(
        &mut self,
        py: Python<'_>,
        end: f64,
        dropped: &mut Vec<Py<Handle>>,
        mut sink: impl FnMut(Py<Handle>),
    ) {
        while let Some(top) = self.heap.peek() {
            if top.when >= end {
                break;
            }
            let e = self.heap.pop().expect("peeked");
            let cancelled = e.is_cancelled();
            let h = e.into_handle(py);
            if cancelled {
                let _ =
                    self.stats
                        .cancelled
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                            Some(c.saturating_sub(1))
                        });
                dropped.push(h);
                continue;
            }
            sink(h);
        }
    }

    /// The pending timers, earliest first (so the list is also a valid
    /// `heapq` heap, as asyncio's `loop._scheduled` is).
    pub fn snapshot(&self, py: Python<'_>) -> Vec<Py<TimerHandle>> {
        let mut entries: Vec<&Entry> = self.heap.iter().collect();
        // Entry's order is reversed for the max-heap: sort descending.
        entries.sort_unstable_by(|a, b| b.cmp(a));
        entries.iter().map(|e| e.handle.clone_ref(py)).collect()
    }

    pub fn traverse<E>(&self, visit: impl Fn(&Py<Handle>) -> Result<(), E>) -> Result<(), E> {
        self.heap
            .iter()
            .try_for_each(|e| visit(TimerHandle::as_handle(&e.handle)))
    }

    /// Empties the heap; the timers it held are no longer scheduled.
    pub fn clear(&mut self, py: Python<'_>) -> Vec<Py<Handle>> {
        self.stats.cancelled.store(0, Ordering::Relaxed);
        std::mem::take(&mut self.heap)
            .into_vec()
            .into_iter()
            .map(|e| e.into_handle(py))
            .collect()
    }
}

/// The `time` module's namespace and the `time.monotonic` found in it when
/// the extension loaded (set once, by `init_clock`).
static TIME_MODULE: GILOnceCell<(Py<PyDict>, PyObject)> = GILOnceCell::new();

/// Remembers the real `time.monotonic`; run when the extension loads, before
/// any test can replace it.
pub fn init_clock(py: Python<'_>) -> PyResult<()> {
    TIME_MODULE.get_or_try_init(py, || -> PyResult<_> {
        let time = py.import("time")?;
        let real = time.getattr("monotonic")?.unbind();
        Ok((time.dict().unbind(), real))
    })?;
    Ok(())
}

/// `loop.time()`: asyncio's is `time.monotonic()` looked up on each call, so
/// test suites that replace it (`mock.patch("time.monotonic")`, freezegun)
/// move the loop's clock. The native clock is read unless that happened.
pub fn loop_clock(py: Python<'_>) -> PyResult<f64> {
    if let Some((namespace, real)) = TIME_MODULE.get(py) {
        let key = intern!(py, "monotonic");
        // SAFETY: a lookup in a live dict; the result is borrowed and only
        // compared here (it is increfed below before anything is called).
        let found = unsafe { ffi::PyDict_GetItemWithError(namespace.as_ptr(), key.as_ptr()) };
        if found != real.as_ptr() {
            if found.is_null() {
                if let Some(err) = PyErr::take(py) {
                    return Err(err);
                }
                return Err(pyo3::exceptions::PyAttributeError::new_err(
                    "module 'time' has no attribute 'monotonic'",
                ));
            }
            // SAFETY: `found` is a live object borrowed from the dict.
            let replaced = unsafe { Bound::from_borrowed_ptr(py, found) };
            return replaced.call0()?.extract();
        }
    }
    Ok(monotonic())
}

/// The native clock: `CLOCK_MONOTONIC` in seconds, the clock behind
/// `time.monotonic()`, so values mix with code that reads that directly.
pub fn monotonic() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Resolution of `monotonic()`, as `time.get_clock_info('monotonic')` says.
pub fn monotonic_resolution() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_getres writes into the timespec we own.
    unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyo3::types::PyTuple;

    fn timer(py: Python<'_>, heap: &TimerHeap, when: f64) -> Py<TimerHandle> {
        let ctx = py
            .import("contextvars")
            .unwrap()
            .call_method0("copy_context")
            .unwrap();
        Py::new(
            py,
            TimerHandle::new(
                when,
                None,
                py.None(),
                PyTuple::empty(py).unbind(),
                crate::handles::HandleContext::given(ctx.unbind()),
                None,
                heap.stats.clone(),
            ),
        )
        .unwrap()
    }

    #[test]
    fn pops_by_deadline_then_scheduling_order() {
        pyo3::prepare_freethreaded_python();
        Python::with_gil(|py| {
            let mut heap = TimerHeap::default();
            let handles: Vec<_> = [3.0, 1.0, 2.0, 1.0, 1.0]
                .iter()
                .map(|&w| timer(py, &heap, w))
                .collect();
            for h in &handles {
                heap.push(h.clone_ref(py));
            }
            assert_eq!(heap.next_deadline(), Some(1.0));
            let mut out = Vec::new();
            let mut dropped = Vec::new();
            heap.pop_due(py, 2.5, &mut dropped, |h| out.push(h));
            let order: Vec<usize> = out
                .iter()
                .map(|h| handles.iter().position(|x| x.is(h)).unwrap())
                .collect();
            // The three 1.0 timers in the order they were pushed, then 2.0.
            assert_eq!(order, vec![1, 3, 4, 2]);
            assert_eq!(heap.len(), 1);
            assert!(!handles[1].get().scheduled.load(Ordering::Relaxed));
            assert!(handles[0].get().scheduled.load(Ordering::Relaxed));
        });
    }

    #[test]
    fn cancelled_timers_are_purged() {
        pyo3::prepare_freethreaded_python();
        Python::with_gil(|py| {
            let mut heap = TimerHeap::default();
            let handles: Vec<_> = (0..300).map(|i| timer(py, &heap, i as f64)).collect();
            for h in &handles {
                heap.push(h.clone_ref(py));
            }
            // Cancelling the earliest one: dropped from the top right away.
            TimerHandle::cancel_timer(handles[0].bind(py));
            let mut dropped = Vec::new();
            heap.purge_cancelled(py, &mut dropped);
            assert_eq!(heap.len(), 299);
            assert_eq!(heap.next_deadline(), Some(1.0));
            // Cancelling most of a large heap triggers a full rebuild.
            for h in &handles[100..] {
                TimerHandle::cancel_timer(h.bind(py));
            }
            heap.purge_cancelled(py, &mut dropped);
            assert_eq!(heap.len(), 99);
            assert_eq!(heap.stats.cancelled.load(Ordering::Relaxed), 0);
            assert_eq!(dropped.len(), 201);
        });
    }
}
