//! `ReadPipeCore` and `WritePipeCore`: the native data path of ferroloop's
//! pipe transports (pipes, FIFOs, sockets, character devices, PTYs).
//!
//! `ReadPipeCore.read_ready` is the reactor's reader callback: one `read(2)`
//! into the thread's scratch buffer, an exact-size `bytes` to `protocol.data_received`.
//! End of file and read errors go to the Python transport
//! (`ferroloop.pipes.ReadPipeTransport`), which owns closing and PTY EIO
//! handling. `WritePipeCore.write` writes at once while nothing is queued and
//! hands a partial write, EAGAIN or an error to the Python transport
//! (`WritePipeTransport`), which owns the buffer and flow control and keeps
//! the core's `slow` flag current. Both refer to their transport weakly.

use std::os::fd::RawFd;

use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use pyo3::{PyTraverseError, PyVisit};

use crate::gil_cell::GilCell;
use crate::os_errors::{last_errno, os_error, would_block};
use crate::read_buffer::with_scratch;

fn upgrade<'py>(py: Python<'py>, owner: &PyObject) -> PyResult<Bound<'py, PyAny>> {
    let o = owner.bind(py).call0()?;
    if o.is_none() {
        return Err(PyRuntimeError::new_err("pipe transport is gone"));
    }
    Ok(o)
}

struct ReadState {
    protocol: PyObject,
}

#[pyclass(module = "ferroloop._ferroloop", frozen)]
pub struct ReadPipeCore {
    owner: PyObject,
    fd: RawFd,
    max_size: usize,
    state: GilCell<ReadState>,
}

#[pymethods]
impl ReadPipeCore {
    #[new]
    fn py_new(owner: PyObject, fd: RawFd, protocol: PyObject, max_size: usize) -> Self {
        ReadPipeCore {
            owner,
            fd,
            max_size: max_size.max(1),
            state: GilCell::new(ReadState { protocol }),
        }
    }

    fn set_protocol(&self, py: Python<'_>, protocol: PyObject) {
        let old = self
            .state
            .with(py, |s| std::mem::replace(&mut s.protocol, protocol));
        drop(old);
    }

    // Protocol -> transport -> core -> protocol is a cycle the collector
    // must see (see `DatagramCore`'s traverse).
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.owner)?;
        if let Some(res) = self.state.peek(|s| visit.call(&s.protocol)) {
            res?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        Python::with_gil(|py| {
            let old = self
                .state
                .with(py, |s| std::mem::replace(&mut s.protocol, py.None()));
            drop(old);
        });
    }

    /// Reader callback: one read per readiness event. Registered with the
    /// transport as `owner`, so the reactor keeps the transport alive.
    #[pyo3(signature = (owner=None))]
    fn read_ready(&self, py: Python<'_>, owner: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let owner = |py| -> PyResult<Bound<'_, PyAny>> {
            match owner {
                Some(o) => Ok(o.clone()),
                None => upgrade(py, &self.owner),
            }
        };
        let (fd, max) = (self.fd, self.max_size);
        let res = with_scratch(max, |buf| {
            // SAFETY: buf has `max` writable bytes.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, max) };
            if n < 0 {
                return Err(last_errno());
            }
            if n == 0 {
                return Ok(None);
            }
            // bytes are not GC-tracked: creating one runs no Python code.
            Ok(Some(
                PyBytes::new(py, &buf[..n as usize]).into_any().unbind(),
            ))
        })
        .map(|r| r.map(|data| (data, self.state.with(py, |s| s.protocol.clone_ref(py)))));
        match res {
            Ok(Some((data, protocol))) => {
                crate::detach::call_method(
                    protocol.bind(py),
                    intern!(py, "data_received"),
                    &[data.bind(py)],
                )?;
            }
            Ok(None) => {
                owner(py)?.call_method0(intern!(py, "_eof"))?;
            }
            Err(e) if would_block(e) => {}
            Err(e) => {
                let exc = os_error(e);
                owner(py)?.call_method1(
                    intern!(py, "_fatal_error"),
                    (exc.value(py), "Fatal read error on pipe transport"),
                )?;
            }
        }
        Ok(())
    }
}

#[pyclass(module = "ferroloop._ferroloop", frozen)]
pub struct WritePipeCore {
    owner: PyObject,
    fd: RawFd,
    /// Data is queued, or the transport is closing/lost: `write` must take
    /// the Python path.
    slow: GilCell<bool>,
}

#[pymethods]
impl WritePipeCore {
    #[new]
    fn py_new(owner: PyObject, fd: RawFd) -> Self {
        WritePipeCore {
            owner,
            fd,
            slow: GilCell::new(false),
        }
    }

    fn set_slow(&self, py: Python<'_>, slow: bool) {
        self.slow.with(py, |s| *s = slow);
    }

    /// `transport.write(data)`: written at once when nothing is queued.
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let bytes = match data.downcast::<PyBytes>() {
            Ok(b) if !self.slow.with(py, |s| *s) => b,
            _ => {
                upgrade(py, &self.owner)?.call_method1(intern!(py, "_write"), (data,))?;
                return Ok(());
            }
        };
        let buf = bytes.as_bytes();
        if buf.is_empty() {
            return Ok(());
        }
        // SAFETY: a valid buffer of buf.len() bytes.
        let n = unsafe { libc::write(self.fd, buf.as_ptr() as *const libc::c_void, buf.len()) };
        if n >= 0 && n as usize == buf.len() {
            return Ok(());
        }
        let owner = upgrade(py, &self.owner)?;
        if n >= 0 {
            owner.call_method1(intern!(py, "_write_rest"), (data, n as usize))?;
            return Ok(());
        }
        let e = last_errno();
        if would_block(e) {
            owner.call_method1(intern!(py, "_write_rest"), (data, 0usize))?;
        } else {
            let exc = os_error(e);
            owner.call_method1(intern!(py, "_write_failed"), (exc.value(py),))?;
        }
        Ok(())
    }
}
