//! `SignalHandlers`: the callbacks registered with `add_signal_handler`.
//!
//! Installing the OS-level handler is done by the Python side through the
//! `signal` module (so Python's own handlers and `set_wakeup_fd` stay
//! coherent); this table maps the signal numbers that arrive through the
//! self-pipe to the handles to run.

use std::collections::HashMap;

use pyo3::prelude::*;

use crate::gil_cell::GilCell;
use crate::handles::Handle;

#[derive(Default)]
pub struct SignalHandlers {
    table: GilCell<HashMap<i32, Py<Handle>>>,
}

impl SignalHandlers {
    pub fn set(&self, py: Python<'_>, sig: i32, handle: Py<Handle>) -> Option<Py<Handle>> {
        self.table.with(py, |t| t.insert(sig, handle))
    }

    pub fn remove(&self, py: Python<'_>, sig: i32) -> Option<Py<Handle>> {
        self.table.with(py, |t| t.remove(&sig))
    }

    pub fn get(&self, py: Python<'_>, sig: i32) -> Option<Py<Handle>> {
        self.table
            .with(py, |t| t.get(&sig).map(|h| h.clone_ref(py)))
    }

    pub fn signals(&self, py: Python<'_>) -> Vec<i32> {
        self.table.with(py, |t| t.keys().copied().collect())
    }

    pub fn traverse<E>(&self, visit: impl Fn(&Py<Handle>) -> Result<(), E>) -> Result<(), E> {
        self.table
            .peek(|t| t.values().try_for_each(&visit))
            .unwrap_or(Ok(()))
    }

    pub fn clear(&self, py: Python<'_>) -> HashMap<i32, Py<Handle>> {
        self.table.with(py, std::mem::take)
    }

    pub fn is_empty(&self, py: Python<'_>) -> bool {
        self.table.with(py, |t| t.is_empty())
    }
}
