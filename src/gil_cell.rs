//! `GilCell`: interior mutability for loop state that is only touched with
//! the GIL held.
//!
//! Every accessor takes a `Python<'_>` token, so on a GIL build at most one
//! thread is inside at a time, and a `RefCell` (a plain flag, no atomic
//! read-modify-write) is enough; re-entrant use panics instead of aliasing.
//! Closures passed to `with` must not run Python code (not even a `drop` of
//! the last reference to a Python object): move objects out and drop them
//! after. A free-threaded build has no GIL to lean on, so there the cell is
//! a real mutex.

use pyo3::Python;

#[cfg(not(Py_GIL_DISABLED))]
pub struct GilCell<T> {
    inner: std::cell::RefCell<T>,
}

// SAFETY: all access goes through `with`, which requires the GIL token; the
// GIL serialises threads, so the RefCell is never touched concurrently.
#[cfg(not(Py_GIL_DISABLED))]
unsafe impl<T: Send> Sync for GilCell<T> {}

#[cfg(not(Py_GIL_DISABLED))]
impl<T> GilCell<T> {
    pub fn new(value: T) -> Self {
        GilCell {
            inner: std::cell::RefCell::new(value),
        }
    }

    #[inline]
    pub fn with<R>(&self, _py: Python<'_>, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.inner.borrow_mut())
    }

    /// For the garbage collector's `__traverse__`, which runs with the GIL
    /// held but gets no token; None if the value is borrowed right now.
    pub fn peek<R>(&self, f: impl FnOnce(&T) -> R) -> Option<R> {
        self.inner.try_borrow().ok().map(|v| f(&v))
    }
}

#[cfg(Py_GIL_DISABLED)]
pub struct GilCell<T> {
    inner: std::sync::Mutex<T>,
}

#[cfg(Py_GIL_DISABLED)]
impl<T> GilCell<T> {
    pub fn new(value: T) -> Self {
        GilCell {
            inner: std::sync::Mutex::new(value),
        }
    }

    #[inline]
    pub fn with<R>(&self, _py: Python<'_>, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn peek<R>(&self, f: impl FnOnce(&T) -> R) -> Option<R> {
        self.inner.try_lock().ok().map(|v| f(&v))
    }
}

impl<T: Default> Default for GilCell<T> {
    fn default() -> Self {
        GilCell::new(T::default())
    }
}
