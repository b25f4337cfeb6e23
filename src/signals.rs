//! `SignalHandlers`: the callbacks registered with `add_signal_handler`.
//!
//! Installing the OS-level handler is done by the Python side through the
//! `signal` module (so Python's own handlers and `set_wakeup_fd` stay
//! coherent); this table maps the signal numbers that arrive through the
//! self-pipe to the handles to run.

use std::collections::HashMap;
use std::sync::Mutex;

use pyo3::prelude::*;

use crate::handles::Handle;

#[derive(Default)]
pub struct SignalHandlers {
    table: Mutex<HashMap<i32, Py<Handle>>>,
}

impl SignalHandlers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Py<Handle>>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set(&self, sig: i32, handle: Py<Handle>) -> Option<Py<Handle>> {
        self.lock().insert(sig, handle)
    }

    pub fn remove(&self, sig: i32) -> Option<Py<Handle>> {
        self.lock().remove(&sig)
    }

    pub fn get(&self, py: Python<'_>, sig: i32) -> Option<Py<Handle>> {
        self.lock().get(&sig).map(|h| h.clone_ref(py))
    }

    pub fn signals(&self) -> Vec<i32> {
        self.lock().keys().copied().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}
