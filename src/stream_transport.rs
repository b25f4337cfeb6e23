//! `StreamTransport`: the byte path of a connected stream socket (TCP or
//! Unix): reads into exact-size `bytes` (or a `BufferedProtocol`'s buffer),
//! writes coalesced per callback (what one of the loop's callbacks wrote
//! goes out in one `writev` when it returns, or earlier when `is_closing()`
//! or `get_write_buffer_size()` asks; when the other end is a transport of
//! the same loop, at the end of the turn or before that end reads; outside a
//! turn, or from another thread, a write is tried at once) with the rest
//! queued and flushed on writability, flow control at the water marks, and
//! the close/EOF/connection_lost sequence of asyncio's selector socket
//! transport.
//!
//! The public object is the Python wrapper in `ferroloop/transports.py` (an
//! `asyncio.Transport`); it owns one of these and binds the hot methods onto
//! itself. Rare paths that log (`_fatal_error`, debug messages, flow-control
//! callback failures) call back into the wrapper.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::Mutex;

use pyo3::exceptions::{PyConnectionError, PyOSError, PyRuntimeError, PyTypeError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView, PyType, PyWeakrefReference};
use pyo3::{PyTraverseError, PyVisit};

use std::sync::atomic::Ordering;

use crate::event_loop::LoopCore;
use crate::gil_cell::GilCell;
use crate::handles::is_fatal;
use crate::os_errors::{last_errno, os_error, raised_would_block, would_block};
use crate::read_buffer::bytes_of;

/// asyncio's `_SelectorTransport.max_size`: most bytes taken per read.
const MAX_READ: usize = 256 * 1024;
/// asyncio's `constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES`.
const LOG_THRESHOLD_FOR_CONNLOST_WRITES: u32 = 5;
/// Reads at least this large switch a transport to reading in place.
const BIG_READ: usize = 64 * 1024;
/// Most reads in one readiness callback (each after a full buffer): up to
/// 4 MiB, about what a loopback socket's autotuned receive buffer holds, so
/// a busy socket is drained in one turn. Leaving data queued (4 reads did)
/// keeps the sender window-limited, and with BBR's pacing on loopback that
/// halved bulk throughput; libuv reads up to 32 times for the same reason.
const READS_PER_EVENT: usize = 16;
/// Chunks handed to one `writev`.
const MAX_IOV: usize = 64;

/// What one read learned about the socket. A TCP transport's fd is
/// edge-triggered (see `reactor`), so a callback that returns before a read
/// came up short must rearm the fd, or no event would report the rest.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Read {
    /// The read filled the buffer: read again now.
    Filled,
    /// A short read, end of file or EAGAIN: the socket is empty.
    Drained,
    /// Stop for now without knowing that the socket is empty.
    Stopped,
}

/// Chunks a writev sent in full, dropped outside the state cell.
type Spent = (Option<Py<PyBytes>>, Vec<Py<PyBytes>>);

static BUFFERED_PROTOCOL: GILOnceCell<Py<PyType>> = GILOnceCell::new();

/// Whether `fd` is a TCP socket (IPv4 or IPv6). Only TCP's reads are known
/// to come up short just when the socket is empty, or else with an epoll
/// bit that says why (a FIN: RDHUP; urgent data: PRI), which an
/// edge-triggered fd needs (see `reactor`). A Unix stream socket's read
/// also stops where the sender changes (another process, other
/// credentials) or where passed fds are attached, with nothing to tell.
fn is_tcp(fd: RawFd) -> bool {
    if fd < 0 {
        return false;
    }
    // SAFETY: the transport owns the open socket `fd` for this whole call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let sock = socket2::SockRef::from(&fd);
    matches!(
        sock.domain(),
        Ok(socket2::Domain::IPV4 | socket2::Domain::IPV6)
    ) && matches!(sock.protocol(), Ok(Some(socket2::Protocol::TCP)))
}

fn is_buffered(protocol: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = protocol.py();
    let cls = BUFFERED_PROTOCOL.get_or_try_init(py, || -> PyResult<Py<PyType>> {
        Ok(py
            .import("asyncio.protocols")?
            .getattr("BufferedProtocol")?
            .downcast_into::<PyType>()?
            .unbind())
    })?;
    protocol.is_instance(cls.bind(py))
}

/// Why a send from the write buffer failed: an errno from the system
/// call, or the exception the socket's own `send` raised (`py_io`).
enum SendError {
    Errno(i32),
    Raised(PyErr),
}

impl SendError {
    fn would_block(&self) -> bool {
        matches!(self, SendError::Errno(e) if would_block(*e))
    }

    fn into_err(self) -> PyErr {
        match self {
            SendError::Errno(e) => os_error(e),
            SendError::Raised(e) => e,
        }
    }

    /// An exception from the socket's `send`: a would-block one becomes
    /// EAGAIN, so both kinds of send take the same paths afterwards.
    fn from_raised(py: Python<'_>, e: PyErr) -> Self {
        if raised_would_block(py, &e) {
            SendError::Errno(libc::EAGAIN)
        } else {
            SendError::Raised(e)
        }
    }
}

struct State {
    lp: Option<PyObject>,
    sock: Option<PyObject>,
    server: Option<PyObject>,
    protocol_connected: bool,
    buffered: bool,
    buf: VecDeque<Py<PyBytes>>,
    head_off: usize,
    buf_size: usize,
    high: usize,
    low: usize,
    protocol_paused: bool,
    paused: bool,
    closing: bool,
    eof: bool,
    conn_lost: u32,
    empty_waiter: Option<PyObject>,
    big_reads: bool,
    /// Data waits in `buf` for the flush after the running callback.
    flush_pending: bool,
    /// The fd is watched for writability (`_write_ready`).
    writer_on: bool,
    /// The transport at the other end of this connection, when it belongs to
    /// the same loop (`_link_peer`): writes then wait in the loop's
    /// `deferred_writes`, and a read first sends what the peer holds.
    peer: Option<Py<StreamTransport>>,
    /// This transport's key in the loop's `stream_endpoints`.
    endpoint: Option<PyObject>,
}

impl State {
    /// Drops `n` sent bytes from the front of the write buffer; the chunks
    /// fully sent are returned, to be released outside the state cell.
    fn consume(&mut self, py: Python<'_>, mut n: usize) -> Spent {
        self.buf_size -= n.min(self.buf_size);
        let mut spent: Spent = (None, Vec::new());
        while n > 0 && !self.buf.is_empty() {
            let len = bytes_of(self.buf[0].bind(py)).len() - self.head_off;
            if n >= len {
                n -= len;
                self.head_off = 0;
                let chunk = self.buf.pop_front();
                if spent.0.is_none() {
                    spent.0 = chunk;
                } else {
                    spent.1.extend(chunk);
                }
            } else {
                self.head_off += n;
                n = 0;
            }
        }
        spent
    }
}

/// References that can form cycles (protocol <-> wrapper <-> this object):
/// kept where the garbage collector can see them.
struct Refs {
    wrapper: Option<PyObject>,
    protocol: Option<PyObject>,
}

#[pyclass(module = "ferroloop._ferroloop", frozen, weakref)]
pub struct StreamTransport {
    fd: RawFd,
    /// The loop is ferroloop's (so writes can wait for their callback to return).
    native_loop: bool,
    /// A TCP socket, whose fd may be edge-triggered (see `is_tcp`).
    tcp: bool,
    /// The socket's class overrides `recv`/`recv_into`/`send`: asyncio's
    /// transport does its I/O through those methods, so the overrides run;
    /// for such a socket every read and write goes through them here too,
    /// instead of the system calls on its fd.
    py_io: bool,
    /// With `py_io`, flush the buffer with one `sock.sendmsg(chunks)` as
    /// asyncio does from 3.12 (before, one `sock.send` of the head chunk).
    py_sendmsg: bool,
    st: GilCell<State>,
    refs: Mutex<Refs>,
}

impl StreamTransport {
    fn refs(&self) -> std::sync::MutexGuard<'_, Refs> {
        self.refs.lock().unwrap_or_else(|e| e.into_inner())
    }

    // Bound, not Py, results: a Bound's drop is a plain decref, without
    // the GIL-state lookup of a Py's (these run on every read and write).
    fn protocol<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        match &self.refs().protocol {
            Some(p) => p.bind(py).clone(),
            None => py.None().into_bound(py),
        }
    }

    fn wrapper(&self, py: Python<'_>) -> Option<PyObject> {
        self.refs().wrapper.as_ref().map(|w| w.clone_ref(py))
    }

    /// The socket object, for `py_io` calls (an OSError once it is gone).
    fn sock_obj(&self, py: Python<'_>) -> PyResult<PyObject> {
        self.st
            .with(py, |s| s.sock.as_ref().map(|o| o.clone_ref(py)))
            .ok_or_else(|| PyOSError::new_err((libc::EBADF, "Bad file descriptor")))
    }

    /// `sock.send(data)` through the socket object (`py_io`).
    fn py_send(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> Result<usize, SendError> {
        self.sock_obj(py)
            .and_then(|sock| {
                sock.bind(py)
                    .call_method1(intern!(py, "send"), (data,))?
                    .extract()
            })
            .map_err(|e| SendError::from_raised(py, e))
    }

    fn lp<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        self.st
            .with(py, |s| s.lp.as_ref().map(|l| l.bind(py).clone()))
    }

    /// The loop as ferroloop's `LoopCore`, when it is one (`native_loop`).
    fn core<'py>(&self, py: Python<'py>) -> Option<Bound<'py, LoopCore>> {
        let lp = self.lp(py).filter(|_| self.native_loop)?;
        // SAFETY: native_loop records that the loop is a LoopCore.
        Some(unsafe { lp.downcast_into_unchecked::<LoopCore>() })
    }

    fn debug(&self, py: Python<'_>) -> PyResult<bool> {
        match self.lp(py) {
            Some(lp) => lp.call_method0(intern!(py, "get_debug"))?.is_truthy(),
            None => Ok(false),
        }
    }

    fn log_debug(&self, py: Python<'_>, msg: &str) -> PyResult<()> {
        if self.debug(py)? {
            if let Some(w) = self.wrapper(py) {
                w.bind(py).call_method1(intern!(py, "_log_debug"), (msg,))?;
            }
        }
        Ok(())
    }

    /// `_fatal_error`: the wrapper logs (or reports) and force-closes. A
    /// SystemExit/KeyboardInterrupt is never swallowed.
    fn fatal(slf: &Bound<'_, Self>, exc: PyErr, msg: &str) -> PyResult<()> {
        let py = slf.py();
        if is_fatal(py, &exc) {
            return Err(exc);
        }
        let exc = exc.into_value(py);
        match slf.get().wrapper(py) {
            Some(w) => {
                w.bind(py)
                    .call_method1(intern!(py, "_fatal_error"), (exc, msg))?;
            }
            None => Self::_force_close(slf, Some(exc.into_any().bind(py)))?,
        }
        Ok(())
    }

    fn loop_call(
        &self,
        py: Python<'_>,
        name: &Bound<'_, pyo3::types::PyString>,
        fd_cb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        if let Some(lp) = self.lp(py) {
            match fd_cb {
                Some(cb) => lp.call_method1(name, (self.fd, cb))?,
                None => lp.call_method1(name, (self.fd,))?,
            };
        }
        Ok(())
    }

    fn add_writer(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        if slf
            .get()
            .st
            .with(py, |s| std::mem::replace(&mut s.writer_on, true))
        {
            return Ok(());
        }
        let cb = slf.getattr(intern!(py, "_write_ready"))?;
        slf.get()
            .loop_call(py, intern!(py, "_add_writer"), Some(&cb))
    }

    fn remove_writer(&self, py: Python<'_>) -> PyResult<()> {
        self.st.with(py, |s| s.writer_on = false);
        self.loop_call(py, intern!(py, "_remove_writer"), None)
    }

    fn remove_reader(&self, py: Python<'_>) -> PyResult<()> {
        self.loop_call(py, intern!(py, "_remove_reader"), None)
    }

    fn flow_error(&self, py: Python<'_>, msg: &str, err: PyErr) -> PyResult<()> {
        if is_fatal(py, &err) {
            return Err(err);
        }
        if let Some(w) = self.wrapper(py) {
            w.bind(py).call_method1(
                intern!(py, "_flow_control_error"),
                (msg, err.into_value(py)),
            )?;
        }
        Ok(())
    }

    fn maybe_pause_protocol(&self, py: Python<'_>) -> PyResult<()> {
        let pause = self.st.with(py, |s| {
            if s.buf_size <= s.high || s.protocol_paused {
                false
            } else {
                s.protocol_paused = true;
                true
            }
        });
        if pause {
            let p = self.protocol(py);
            if let Err(e) = crate::detach::call_method(&p, intern!(py, "pause_writing"), &[]) {
                self.flow_error(py, "protocol.pause_writing() failed", e)?;
            }
        }
        Ok(())
    }

    fn maybe_resume_protocol(&self, py: Python<'_>) -> PyResult<()> {
        let resume = self.st.with(py, |s| {
            if s.protocol_paused && s.buf_size <= s.low {
                s.protocol_paused = false;
                true
            } else {
                false
            }
        });
        if resume {
            let p = self.protocol(py);
            if let Err(e) = crate::detach::call_method(&p, intern!(py, "resume_writing"), &[]) {
                self.flow_error(py, "protocol.resume_writing() failed", e)?;
            }
        }
        Ok(())
    }

    fn shutdown_wr(&self) -> PyResult<()> {
        // SAFETY: plain syscall on our fd.
        if unsafe { libc::shutdown(self.fd, libc::SHUT_WR) } < 0 {
            return Err(os_error(last_errno()));
        }
        Ok(())
    }

    fn on_eof(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        this.log_debug(py, "%r received EOF")?;
        let p = this.protocol(py);
        let keep_open = match crate::detach::call_method(&p, intern!(py, "eof_received"), &[])
            .and_then(|r| r.is_truthy())
        {
            Ok(k) => k,
            Err(e) => {
                return Self::fatal(slf, e, "Fatal error: protocol.eof_received() call failed.")
            }
        };
        if keep_open {
            this.remove_reader(py)
        } else {
            Self::close(slf)
        }
    }

    /// One read into the protocol's buffer: a BufferedProtocol gets one
    /// read per event, as on asyncio.
    fn read_buffered(slf: &Bound<'_, Self>) -> PyResult<Read> {
        let py = slf.py();
        let this = slf.get();
        let p = this.protocol(py);
        let p = &p;
        let buf = match crate::detach::call_method(
            p,
            intern!(py, "get_buffer"),
            &[&(-1i32).into_pyobject(py)?.into_any()],
        )
        .and_then(|b| {
            if b.len()? == 0 {
                Err(PyRuntimeError::new_err(
                    "get_buffer() returned an empty buffer",
                ))
            } else {
                Ok(b)
            }
        }) {
            Ok(b) => b,
            Err(e) => {
                Self::fatal(slf, e, "Fatal error: protocol.get_buffer() call failed.")?;
                return Ok(Read::Stopped);
            }
        };
        // (bytes read, whether that emptied the socket); a `py_io` fd is
        // level-triggered, so it never needs to know.
        let (n, drained) = if this.py_io {
            match this.sock_obj(py).and_then(|sock| {
                sock.bind(py)
                    .call_method1(intern!(py, "recv_into"), (&buf,))?
                    .extract()
            }) {
                Ok(n) => (n, false),
                Err(e) if raised_would_block(py, &e) => return Ok(Read::Drained),
                Err(e) => {
                    Self::fatal(slf, e, "Fatal read error on socket transport")?;
                    return Ok(Read::Stopped);
                }
            }
        } else {
            // SAFETY: the view is filled by PyObject_GetBuffer and released below;
            // recv writes at most view.len bytes into it.
            unsafe {
                let mut view: ffi::Py_buffer = std::mem::zeroed();
                if ffi::PyObject_GetBuffer(buf.as_ptr(), &mut view, ffi::PyBUF_WRITABLE) < 0 {
                    let e = PyErr::fetch(py);
                    Self::fatal(slf, e, "Fatal read error on socket transport")?;
                    return Ok(Read::Stopped);
                }
                let cap = view.len;
                let n = libc::recv(this.fd, view.buf, cap as usize, 0);
                let err = last_errno();
                ffi::PyBuffer_Release(&mut view);
                if n < 0 {
                    if would_block(err) {
                        return Ok(Read::Drained);
                    }
                    Self::fatal(slf, os_error(err), "Fatal read error on socket transport")?;
                    return Ok(Read::Stopped);
                }
                (n as usize, n < cap)
            }
        };
        drop(buf);
        if n == 0 {
            Self::on_eof(slf)?;
            return Ok(Read::Drained);
        }
        if let Err(e) = crate::detach::call_method(
            p,
            intern!(py, "buffer_updated"),
            &[&n.into_pyobject(py)?.into_any()],
        ) {
            Self::fatal(
                slf,
                e,
                "Fatal error: protocol.buffer_updated() call failed.",
            )?;
            return Ok(Read::Stopped);
        }
        Ok(if drained {
            Read::Drained
        } else {
            Read::Stopped
        })
    }

    /// recv straight into a new MAX_READ-byte bytes object, then shrink it
    /// to the size read (for transports that keep receiving large reads).
    fn recv_direct(py: Python<'_>, fd: RawFd) -> Result<Bound<'_, PyBytes>, i32> {
        // SAFETY: a fresh, uniquely owned bytes object is filled and resized
        // before anyone else sees it; on failure it is released.
        unsafe {
            let mut obj =
                ffi::PyBytes_FromStringAndSize(std::ptr::null(), MAX_READ as ffi::Py_ssize_t);
            if obj.is_null() {
                ffi::PyErr_Clear();
                return Err(libc::ENOMEM);
            }
            let n = libc::recv(
                fd,
                ffi::PyBytes_AsString(obj) as *mut libc::c_void,
                MAX_READ,
                0,
            );
            if n < 0 {
                let e = last_errno();
                ffi::Py_DECREF(obj);
                return Err(e);
            }
            if (n as usize) < MAX_READ && ffi::_PyBytes_Resize(&mut obj, n as ffi::Py_ssize_t) < 0 {
                ffi::PyErr_Clear();
                return Err(libc::ENOMEM);
            }
            Ok(Bound::from_owned_ptr(py, obj).downcast_into_unchecked())
        }
    }

    /// `_read_ready`'s reads; what the last one learned.
    fn read_until_drained(slf: &Bound<'_, Self>) -> PyResult<Read> {
        let py = slf.py();
        // What the peer on this loop wrote and still holds goes out first:
        // on asyncio it would be in the socket already (a flush with
        // nothing held returns at once).
        let peer = slf
            .get()
            .st
            .with(py, |s| s.peer.as_ref().map(|p| p.clone_ref(py)));
        if let (Some(peer), Some(lp)) = (peer, slf.get().core(py)) {
            flush_reporting(&lp, &peer.into_bound(py))?;
        }
        // A read that fills the whole buffer means more is waiting: take a
        // few more now instead of one per poll (as libuv does).
        let mut last = Read::Stopped;
        for _ in 0..READS_PER_EVENT {
            last = Self::read_once(slf)?;
            if last != Read::Filled {
                break;
            }
        }
        Ok(last)
    }

    /// One read, and what it learned.
    fn read_once(slf: &Bound<'_, Self>) -> PyResult<Read> {
        let py = slf.py();
        let this = slf.get();
        let (lost, buffered) = this.st.with(py, |s| (s.conn_lost, s.buffered));
        if lost != 0 {
            return Ok(Read::Stopped);
        }
        if buffered {
            return Self::read_buffered(slf);
        }
        if this.py_io {
            return Self::read_once_py(slf);
        }
        let big = this.st.with(py, |s| s.big_reads);
        // Small reads on a ferroloop loop reuse its spare bytes objects.
        let lp = this.core(py).filter(|_| !big);
        let core = lp.as_ref().map(|lp| lp.get());
        let data = if big {
            Self::recv_direct(py, this.fd)
        } else {
            crate::read_buffer::with_scratch(MAX_READ, |scratch| {
                // SAFETY: recv writes at most MAX_READ bytes into the scratch buffer.
                let n = unsafe { libc::recv(this.fd, scratch.as_mut_ptr().cast(), MAX_READ, 0) };
                if n < 0 {
                    return Err(last_errno());
                }
                // Copying into a bytes object runs no Python code.
                let got = &scratch[..n as usize];
                Ok(match core {
                    Some(core) => core.spare_bytes.bytes_from(py, got),
                    None => PyBytes::new(py, got),
                })
            })
        };
        let data = match data {
            Ok(d) => d,
            Err(e) if would_block(e) => return Ok(Read::Drained),
            Err(e) => {
                Self::fatal(slf, os_error(e), "Fatal read error on socket transport")?;
                return Ok(Read::Stopped);
            }
        };
        let n = bytes_of(&data).len();
        // Large reads go straight into a bytes object (no copy); small
        // ones into the shared scratch buffer, then an exact-size copy.
        if (!big && n >= BIG_READ) || (big && n < BIG_READ / 4) {
            this.st.with(py, |s| s.big_reads = !big);
        }
        let read = Self::deliver(slf, data.as_any(), n)?;
        if let Some(core) = core {
            core.spare_bytes.offer(py, &data);
        }
        Ok(read)
    }

    /// `read_once` for a `py_io` socket: `sock.recv(max_size)`, as asyncio.
    fn read_once_py(slf: &Bound<'_, Self>) -> PyResult<Read> {
        let py = slf.py();
        let this = slf.get();
        let read = this.sock_obj(py).and_then(|sock| {
            let data = sock
                .bind(py)
                .call_method1(intern!(py, "recv"), (MAX_READ,))?;
            let n = data.len()?;
            Ok((data, n))
        });
        match read {
            Ok((data, n)) => Self::deliver(slf, &data, n),
            Err(e) if raised_would_block(py, &e) => Ok(Read::Drained),
            Err(e) => {
                Self::fatal(slf, e, "Fatal read error on socket transport")?;
                Ok(Read::Stopped)
            }
        }
    }

    /// Hands `n` bytes just read to the protocol (or the end of file when
    /// `n` is 0).
    fn deliver(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>, n: usize) -> PyResult<Read> {
        let py = slf.py();
        let this = slf.get();
        if n == 0 {
            Self::on_eof(slf)?;
            return Ok(Read::Drained);
        }
        let p = this.protocol(py);
        if let Err(e) = crate::detach::call_method(&p, intern!(py, "data_received"), &[data]) {
            Self::fatal(slf, e, "Fatal error: protocol.data_received() call failed.")?;
            return Ok(Read::Stopped);
        }
        if n < MAX_READ {
            Ok(Read::Drained)
        } else if this.st.with(py, |s| {
            !s.closing && !s.paused && s.conn_lost == 0 && !s.buffered
        }) {
            Ok(Read::Filled)
        } else {
            Ok(Read::Stopped)
        }
    }

    /// One writev of the queued chunks: None if nothing to do, the errno,
    /// or the fully written chunks (to drop outside the state cell).
    fn writev_buffer(&self, py: Python<'_>) -> Option<Result<Spent, SendError>> {
        self.st.with(py, |s| {
            if s.buf.is_empty() || s.conn_lost != 0 {
                return None;
            }
            let mut iov: [std::mem::MaybeUninit<libc::iovec>; MAX_IOV] =
                [const { std::mem::MaybeUninit::uninit() }; MAX_IOV];
            let mut cnt = 0;
            for (i, b) in s.buf.iter().take(MAX_IOV).enumerate() {
                let bytes = bytes_of(b.bind(py));
                let off = if i == 0 { s.head_off } else { 0 };
                iov[i].write(libc::iovec {
                    iov_base: bytes[off..].as_ptr() as *mut libc::c_void,
                    iov_len: bytes.len() - off,
                });
                cnt = i + 1;
            }
            // SAFETY: the first cnt iovecs are initialised and point into
            // bytes objects the buffer keeps alive.
            let n = unsafe {
                if cnt == 1 {
                    let v = iov[0].assume_init();
                    libc::send(self.fd, v.iov_base, v.iov_len, libc::MSG_NOSIGNAL)
                } else {
                    libc::writev(
                        self.fd,
                        iov.as_ptr() as *const libc::iovec,
                        cnt as libc::c_int,
                    )
                }
            };
            if n < 0 {
                return Some(Err(SendError::Errno(last_errno())));
            }
            Some(Ok(s.consume(py, n as usize)))
        })
    }

    /// Sends from the write buffer: one vectored system call, or for a
    /// `py_io` socket one call of its `sendmsg` with the queued chunks
    /// (3.12+) or of its `send` with the head chunk, as asyncio does.
    fn send_buffer(&self, py: Python<'_>) -> Option<Result<Spent, SendError>> {
        if !self.py_io {
            return self.writev_buffer(py);
        }
        let limit = if self.py_sendmsg { MAX_IOV } else { 1 };
        let (chunks, off) = self.st.with(py, |s| {
            if s.buf.is_empty() || s.conn_lost != 0 {
                return None;
            }
            let chunks: Vec<Py<PyBytes>> =
                s.buf.iter().take(limit).map(|b| b.clone_ref(py)).collect();
            Some((chunks, s.head_off))
        })?;
        let sent = self.py_send_chunks(py, &chunks, off);
        Some(sent.map(|n| self.st.with(py, |s| s.consume(py, n))))
    }

    /// `sock.send(head[off:])`, or `sock.sendmsg([head[off:], ...])`, with
    /// the head's rest as a memoryview (no copy).
    fn py_send_chunks(
        &self,
        py: Python<'_>,
        chunks: &[Py<PyBytes>],
        off: usize,
    ) -> Result<usize, SendError> {
        let head = chunks[0].bind(py);
        let rest = if off == 0 {
            head.clone().into_any()
        } else {
            let len = bytes_of(head).len() as isize;
            PyMemoryView::from(head)
                .and_then(|view| view.get_item(pyo3::types::PySlice::new(py, off as isize, len, 1)))
                .map_err(SendError::Raised)?
        };
        if !self.py_sendmsg {
            return self.py_send(py, &rest);
        }
        self.sock_obj(py)
            .and_then(|sock| {
                let list = pyo3::types::PyList::new(py, &chunks[1..])?;
                list.insert(0, rest)?;
                sock.bind(py)
                    .call_method1(intern!(py, "sendmsg"), (list,))?
                    .extract()
            })
            .map_err(|e| SendError::from_raised(py, e))
    }

    /// Offers chunks sent in full to the loop's spare `bytes` (an echoed
    /// read is then reused by the next read), dropping the rest.
    fn recycle(&self, py: Python<'_>, (head, rest): Spent) {
        if let Some(lp) = self.core(py) {
            for chunk in head.into_iter().chain(rest) {
                lp.get().spare_bytes.offer(py, &chunk.into_bound(py));
            }
        }
    }

    /// The flush after a callback (or earlier: when its writes pass the high
    /// mark, or something asks for the buffer's state).
    pub(crate) fn flush(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let go = this
            .st
            .with(py, |s| std::mem::replace(&mut s.flush_pending, false));
        if !go {
            return Ok(());
        }
        match this.send_buffer(py) {
            None => Ok(()),
            Some(Err(e)) if e.would_block() => {
                Self::add_writer(slf)?;
                this.maybe_pause_protocol(py)
            }
            Some(Err(e)) => Self::write_failed(slf, e.into_err()),
            Some(Ok(sent)) => {
                this.recycle(py, sent);
                let (empty, closing, eof, waiter) = this.st.with(py, |s| {
                    let empty = s.buf.is_empty();
                    if empty && s.closing {
                        s.conn_lost += 1;
                    }
                    (
                        empty,
                        s.closing,
                        s.eof,
                        s.empty_waiter.as_ref().map(|w| w.clone_ref(py)),
                    )
                });
                if !empty {
                    Self::add_writer(slf)?;
                    return this.maybe_pause_protocol(py);
                }
                if this.st.with(py, |s| s.writer_on) {
                    this.remove_writer(py)?;
                }
                if let Some(w) = waiter {
                    w.bind(py)
                        .call_method1(intern!(py, "set_result"), (py.None(),))?;
                }
                if closing {
                    // As if the data had gone out at once and close() had
                    // then found the buffer empty.
                    Self::schedule_connection_lost(slf, py.None())
                } else if eof {
                    this.shutdown_wr()
                } else {
                    Ok(())
                }
            }
        }
    }

    fn write_failed(slf: &Bound<'_, Self>, exc: PyErr) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        this.remove_writer(py)?;
        drop(this.take_buffer(py));
        let exc_val = exc.clone_ref(py).into_value(py);
        Self::fatal(slf, exc, "Fatal write error on socket transport")?;
        let waiter = this
            .st
            .with(py, |s| s.empty_waiter.as_ref().map(|w| w.clone_ref(py)));
        if let Some(w) = waiter {
            w.bind(py)
                .call_method1(intern!(py, "set_exception"), (exc_val,))?;
        }
        Ok(())
    }

    fn take_buffer(&self, py: Python<'_>) -> VecDeque<Py<PyBytes>> {
        self.st.with(py, |s| {
            s.buf_size = 0;
            s.head_off = 0;
            std::mem::take(&mut s.buf)
        })
    }
}

#[pymethods]
impl StreamTransport {
    #[new]
    #[pyo3(signature = (lp, sock, protocol, wrapper, server, py_io=false))]
    fn new(
        lp: &Bound<'_, PyAny>,
        sock: &Bound<'_, PyAny>,
        protocol: &Bound<'_, PyAny>,
        wrapper: &Bound<'_, PyAny>,
        server: &Bound<'_, PyAny>,
        py_io: bool,
    ) -> PyResult<Self> {
        let fd: RawFd = sock.call_method0("fileno")?.extract()?;
        let buffered = is_buffered(protocol)?;
        Ok(StreamTransport {
            fd,
            native_loop: lp.downcast::<LoopCore>().is_ok(),
            tcp: is_tcp(fd),
            py_io,
            py_sendmsg: py_io && sock.py().version_info() >= (3, 12),
            st: GilCell::new(State {
                lp: Some(lp.clone().unbind()),
                sock: Some(sock.clone().unbind()),
                server: if server.is_none() {
                    None
                } else {
                    Some(server.clone().unbind())
                },
                protocol_connected: true,
                buffered,
                buf: VecDeque::new(),
                head_off: 0,
                buf_size: 0,
                high: 64 * 1024,
                low: 16 * 1024,
                protocol_paused: false,
                paused: false,
                closing: false,
                eof: false,
                conn_lost: 0,
                empty_waiter: None,
                big_reads: false,
                flush_pending: false,
                writer_on: false,
                peer: None,
                endpoint: None,
            }),
            refs: Mutex::new(Refs {
                wrapper: Some(wrapper.clone().unbind()),
                protocol: Some(protocol.clone().unbind()),
            }),
        })
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Ok(refs) = self.refs.try_lock() {
            if let Some(w) = &refs.wrapper {
                visit.call(w)?;
            }
            if let Some(p) = &refs.protocol {
                visit.call(p)?;
            }
        }
        // The loop, socket and server can lead back here (a server's
        // protocol factory that keeps its protocols, say), and two linked
        // transports hold each other.
        self.st
            .peek(|s| -> Result<(), PyTraverseError> {
                let objs = [&s.lp, &s.sock, &s.server, &s.empty_waiter, &s.endpoint];
                for o in objs.into_iter().flatten() {
                    visit.call(o)?;
                }
                s.peer.as_ref().map_or(Ok(()), |p| visit.call(p))
            })
            .unwrap_or(Ok(()))?;
        Ok(())
    }

    fn __clear__(&self) {
        let old = {
            let mut refs = self.refs();
            (refs.wrapper.take(), refs.protocol.take())
        };
        // SAFETY: tp_clear is only called by the collector, with the GIL held.
        let py = unsafe { Python::assume_gil_acquired() };
        self.forget_endpoint(py);
        let taken = self.st.with(py, |s| {
            (
                s.peer.take(),
                s.server.take(),
                s.empty_waiter.take(),
                s.lp.take(),
                s.sock.take(),
            )
        });
        drop((old, taken));
    }

    // ---- readiness callbacks ----------------------------------------------

    fn _read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let result = Self::read_until_drained(slf);
        if !matches!(result, Ok(Read::Drained)) {
            // The fd is edge-triggered: without this, what is left would
            // wait for the next packet (after an error too).
            if let Some(lp) = slf.get().core(py) {
                lp.get().rearm_reader(py, slf.get().fd);
            }
        }
        result.map(drop)
    }

    fn _write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let res = this.send_buffer(py);
        match res {
            None => {
                // Nothing to send: never leave a level-triggered watch spinning.
                if this.st.with(py, |s| s.buf.is_empty() && s.writer_on) {
                    this.remove_writer(py)?;
                }
                Ok(())
            }
            Some(Err(e)) if e.would_block() => Ok(()),
            Some(Err(e)) => Self::write_failed(slf, e.into_err()),
            Some(Ok(sent)) => {
                this.recycle(py, sent);
                this.maybe_resume_protocol(py)?;
                let (empty, closing, eof, waiter) = this.st.with(py, |s| {
                    (
                        s.buf.is_empty(),
                        s.closing,
                        s.eof,
                        s.empty_waiter.as_ref().map(|w| w.clone_ref(py)),
                    )
                });
                if empty {
                    this.remove_writer(py)?;
                    if let Some(w) = waiter {
                        w.bind(py)
                            .call_method1(intern!(py, "set_result"), (py.None(),))?;
                    }
                    if closing {
                        Self::_call_connection_lost(slf, None)?;
                    } else if eof {
                        this.shutdown_wr()?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Starts reading once `connection_made` has run (scheduled by the wrapper).
    fn _start_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        if !slf.get().is_reading(py) {
            return Ok(());
        }
        let cb = slf.getattr(intern!(py, "_read_ready"))?;
        let this = slf.get();
        // A `py_io` socket's reads go through Python code that may stop
        // short of draining it: keep its fd level-triggered.
        let add = if this.native_loop && this.tcp && !this.py_io {
            intern!(py, "_add_draining_reader")
        } else {
            intern!(py, "_add_reader")
        };
        this.loop_call(py, add, Some(&cb))
    }

    // ---- writing ------------------------------------------------------------

    fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let bytes: Bound<'_, PyBytes> = if let Ok(b) = data.downcast::<PyBytes>() {
            b.clone()
        } else if data.is_instance_of::<PyByteArray>() || data.is_instance_of::<PyMemoryView>() {
            // SAFETY: returns a new reference or NULL with an exception set.
            unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyBytes_FromObject(data.as_ptr()))? }
                .downcast_into::<PyBytes>()?
        } else {
            return Err(PyTypeError::new_err(format!(
                "data argument must be a bytes-like object, not {}",
                data.get_type().name()?.repr()?
            )));
        };
        let (eof, sendfile, lost, queued) = this.st.with(py, |s| {
            (
                s.eof,
                s.empty_waiter.is_some(),
                s.conn_lost,
                !s.buf.is_empty(),
            )
        });
        if eof {
            return Err(PyRuntimeError::new_err(
                "Cannot call write() after write_eof()",
            ));
        }
        if sendfile {
            return Err(PyRuntimeError::new_err(
                "unable to write; sendfile is in progress",
            ));
        }
        let raw = bytes_of(&bytes);
        if raw.is_empty() {
            return Ok(());
        }
        if lost != 0 {
            if lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES {
                py.import("asyncio.log")?
                    .getattr("logger")?
                    .call_method1("warning", ("socket.send() raised exception.",))?;
            }
            this.st.with(py, |s| s.conn_lost += 1);
            return Ok(());
        }
        let mut off = 0usize;
        if !queued {
            // Inside one of the loop's callbacks: queue, and send everything
            // it wrote in one vectored write when it returns (or, to a peer
            // on this loop, at the end of the turn or before the peer reads).
            if let Some(lp) = this.core(py).filter(|_| !this.py_io) {
                {
                    let core = lp.get();
                    // SAFETY: pthread_self has no preconditions.
                    let me = unsafe { libc::pthread_self() } as u64;
                    if core.turning.load(Ordering::Relaxed) == me {
                        let len = raw.len();
                        let (over, first, linked) = this.st.with(py, |s| {
                            s.head_off = 0;
                            s.buf_size += len;
                            s.buf.push_back(bytes.clone().unbind());
                            let first = !std::mem::replace(&mut s.flush_pending, true);
                            (s.buf_size > s.high, first, s.peer.is_some())
                        });
                        // Listed once: flush() clears flush_pending.
                        if first {
                            let list = if linked {
                                &core.deferred_writes
                            } else {
                                &core.pending_writes
                            };
                            list.with(py, |v| v.push(slf.clone().unbind()));
                        }
                        if over {
                            Self::flush(slf)?;
                        }
                        return Ok(());
                    }
                }
            }
            let sent = if this.py_io {
                this.py_send(py, bytes.as_any())
            } else {
                // SAFETY: send reads from a live bytes object.
                let n = unsafe {
                    libc::send(
                        this.fd,
                        raw.as_ptr() as *const libc::c_void,
                        raw.len(),
                        libc::MSG_NOSIGNAL,
                    )
                };
                if n < 0 {
                    Err(SendError::Errno(last_errno()))
                } else {
                    Ok(n as usize)
                }
            };
            match sent {
                Err(e) if e.would_block() => {}
                Err(e) => {
                    return Self::fatal(slf, e.into_err(), "Fatal write error on socket transport")
                }
                Ok(n) => {
                    off = n;
                    if off == raw.len() {
                        return Ok(());
                    }
                }
            }
            Self::add_writer(slf)?;
        }
        let len = raw.len();
        let flush_now = this.st.with(py, |s| {
            if s.buf.is_empty() {
                s.head_off = off;
            }
            s.buf_size += len - off;
            s.buf.push_back(bytes.unbind());
            s.flush_pending && s.buf_size > s.high
        });
        if flush_now {
            return Self::flush(slf);
        }
        this.maybe_pause_protocol(py)
    }

    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let data = PyBytes::new(py, b"").call_method1(intern!(py, "join"), (list_of_data,))?;
        Self::write(slf, &data)
    }

    fn write_eof(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        Self::flush(slf)?;
        let this = slf.get();
        let shut = this.st.with(py, |s| {
            if s.closing || s.eof {
                return false;
            }
            s.eof = true;
            s.buf.is_empty()
        });
        if shut {
            this.shutdown_wr()?;
        }
        Ok(())
    }

    fn can_write_eof(&self) -> bool {
        true
    }

    /// Sends the queued writes first: right after `write()` asyncio
    /// reports only what the socket did not take.
    fn get_write_buffer_size(slf: &Bound<'_, Self>) -> PyResult<usize> {
        Self::flush(slf)?;
        Ok(slf.get().st.with(slf.py(), |s| s.buf_size))
    }

    fn get_write_buffer_limits(&self, py: Python<'_>) -> (usize, usize) {
        self.st.with(py, |s| (s.low, s.high))
    }

    /// Stores already validated limits and re-checks the high mark against
    /// what the socket did not take (queued writes are sent first, as
    /// asyncio would have sent them already).
    fn _set_limits(slf: &Bound<'_, Self>, high: usize, low: usize) -> PyResult<()> {
        let py = slf.py();
        Self::flush(slf)?;
        let this = slf.get();
        this.st.with(py, |s| {
            s.high = high;
            s.low = low;
        });
        this.maybe_pause_protocol(py)
    }

    fn _maybe_pause_protocol(&self, py: Python<'_>) -> PyResult<()> {
        self.maybe_pause_protocol(py)
    }

    fn _maybe_resume_protocol(&self, py: Python<'_>) -> PyResult<()> {
        self.maybe_resume_protocol(py)
    }

    // ---- reading control ----------------------------------------------------

    fn is_reading(&self, py: Python<'_>) -> bool {
        self.st.with(py, |s| !s.closing && !s.paused)
    }

    /// Sends the queued writes first, for two reasons: a write that
    /// fails closes the transport at once on asyncio, and
    /// `StreamWriter.drain()` calls this, so after `await drain()` the data
    /// is with the kernel (code that then blocks on the peer, in the same
    /// callback, must not wait for the callback to return).
    fn is_closing(slf: &Bound<'_, Self>) -> PyResult<bool> {
        Self::flush(slf)?;
        Ok(slf.get().st.with(slf.py(), |s| s.closing))
    }

    fn pause_reading(&self, py: Python<'_>) -> PyResult<()> {
        let go = self.st.with(py, |s| {
            if s.closing || s.paused {
                false
            } else {
                s.paused = true;
                true
            }
        });
        if go {
            self.remove_reader(py)?;
            self.log_debug(py, "%r pauses reading")?;
        }
        Ok(())
    }

    fn resume_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let go = this.st.with(py, |s| {
            if s.closing || !s.paused {
                false
            } else {
                s.paused = false;
                true
            }
        });
        if go {
            Self::_start_reading(slf)?;
            this.log_debug(py, "%r resumes reading")?;
        }
        Ok(())
    }

    // ---- protocol -------------------------------------------------------------

    fn get_protocol(&self, py: Python<'_>) -> PyObject {
        self.protocol(py).unbind()
    }

    fn set_protocol(&self, py: Python<'_>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let buffered = is_buffered(protocol)?;
        let old = self.refs().protocol.replace(protocol.clone().unbind());
        self.st.with(py, |s| {
            s.buffered = buffered;
            s.protocol_connected = true;
        });
        drop(old);
        Ok(())
    }

    // ---- closing ----------------------------------------------------------------

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        // Queued writes go out first, as they would have already.
        Self::flush(slf)?;
        let (go, empty) = this.st.with(py, |s| {
            if s.closing {
                (false, false)
            } else {
                s.closing = true;
                let empty = s.buf.is_empty();
                if empty {
                    s.conn_lost += 1;
                }
                (true, empty)
            }
        });
        if !go {
            return Ok(());
        }
        this.remove_reader(py)?;
        if empty {
            this.remove_writer(py)?;
            Self::schedule_connection_lost(slf, py.None())?;
        }
        Ok(())
    }

    fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::_force_close(slf, None)
    }

    #[pyo3(signature = (exc=None))]
    fn _force_close(slf: &Bound<'_, Self>, exc: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        Self::flush(slf)?;
        let (lost, had_buf, was_closing) = this
            .st
            .with(py, |s| (s.conn_lost, !s.buf.is_empty(), s.closing));
        if lost != 0 {
            return Ok(());
        }
        if had_buf {
            drop(this.take_buffer(py));
            this.remove_writer(py)?;
        }
        if !was_closing {
            this.st.with(py, |s| s.closing = true);
            this.remove_reader(py)?;
        }
        this.st.with(py, |s| s.conn_lost += 1);
        let exc = match exc {
            Some(e) => e.clone().unbind(),
            None => py.None(),
        };
        Self::schedule_connection_lost(slf, exc)
    }

    #[pyo3(signature = (exc=None))]
    fn _call_connection_lost(
        slf: &Bound<'_, Self>,
        exc: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let connected = this.st.with(py, |s| s.protocol_connected);
        let p = this.protocol(py);
        let result = if connected && !p.is_none() {
            let exc = match exc {
                Some(e) => e.clone().unbind(),
                None => py.None(),
            };
            crate::detach::call_method(&p, intern!(py, "connection_lost"), &[exc.bind(py)])
                .map(drop)
        } else {
            Ok(())
        };
        // Its error (if any) waits until the socket is closed too.
        let unlinked = Self::unlink_peer(slf);
        let (sock, lp, server, waiter) = this.st.with(py, |s| {
            (
                s.sock.take(),
                s.lp.take(),
                s.server.take(),
                s.empty_waiter.as_ref().map(|w| w.clone_ref(py)),
            )
        });
        let old_refs = {
            let mut r = this.refs();
            (r.protocol.take(), r.wrapper.take())
        };
        let mut cleanup = Ok(());
        if let Some(sock) = &sock {
            cleanup = sock.bind(py).call_method0(intern!(py, "close")).map(drop);
        }
        if let Some(server) = &server {
            // From 3.13 asyncio.Server tracks its transports (close_clients):
            // `_detach` then takes the transport (`_compat.SERVER_TRACKS_TRANSPORTS`).
            // The extension is built per interpreter version, so this is a cfg.
            let server = server.bind(py);
            #[cfg(Py_3_13)]
            let r = match &old_refs.1 {
                Some(w) => server.call_method1(intern!(py, "_detach"), (w,)),
                None => server.call_method0(intern!(py, "_detach")),
            };
            #[cfg(not(Py_3_13))]
            let r = server.call_method0(intern!(py, "_detach"));
            let r = r.map(drop);
            if cleanup.is_ok() {
                cleanup = r;
            }
        }
        drop((sock, lp, server, old_refs));
        result?;
        cleanup?;
        unlinked?;
        if let Some(w) = waiter {
            let e = PyConnectionError::new_err("Connection is closed by peer").into_value(py);
            w.bind(py)
                .call_method1(intern!(py, "set_exception"), (e,))?;
        }
        Ok(())
    }

    // ---- sendfile support -----------------------------------------------------------

    fn _make_empty_waiter(slf: &Bound<'_, Self>) -> PyResult<PyObject> {
        let py = slf.py();
        let (has, lp, empty) = slf.get().st.with(py, |s| {
            (
                s.empty_waiter.is_some(),
                s.lp.as_ref().map(|l| l.clone_ref(py)),
                s.buf.is_empty(),
            )
        });
        if has {
            return Err(PyRuntimeError::new_err("Empty waiter is already set"));
        }
        let lp = lp.ok_or_else(|| PyRuntimeError::new_err("Transport is closed"))?;
        let fut = lp.bind(py).call_method0(intern!(py, "create_future"))?;
        slf.get()
            .st
            .with(py, |s| s.empty_waiter = Some(fut.clone().unbind()));
        if empty {
            fut.call_method1(intern!(py, "set_result"), (py.None(),))?;
        }
        Ok(fut.unbind())
    }

    /// Called once by the wrapper with this connection's `(sockname,
    /// peername)` and the reverse: if a transport of this loop has the
    /// reverse, the two are the ends of one connection and are linked.
    fn _link_peer(
        slf: &Bound<'_, Self>,
        mine: &Bound<'_, PyAny>,
        theirs: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let Some(lp) = this.core(py).filter(|_| !this.py_io) else {
            return Ok(());
        };
        let endpoints = lp.get().stream_endpoints.bind(py);
        let found = match endpoints.get_item(theirs)? {
            Some(r) => r
                .downcast_into::<PyWeakrefReference>()?
                .upgrade_as::<StreamTransport>()?,
            None => None,
        };
        if let Some(peer) = found.filter(|p| {
            !p.is(slf)
                && p.get()
                    .st
                    .with(py, |s| s.peer.is_none() && s.sock.is_some())
        }) {
            peer.get()
                .st
                .with(py, |s| s.peer = Some(slf.clone().unbind()));
            this.st.with(py, |s| s.peer = Some(peer.unbind()));
        }
        endpoints.set_item(mine, PyWeakrefReference::new(slf)?)?;
        this.st
            .with(py, |s| s.endpoint = Some(mine.clone().unbind()));
        Ok(())
    }

    fn _reset_empty_waiter(&self, py: Python<'_>) {
        let old = self.st.with(py, |s| s.empty_waiter.take());
        drop(old);
    }

    // ---- state read by the wrapper and by asyncio helpers ------------------------------

    #[getter]
    fn _sock_fd(&self) -> RawFd {
        self.fd
    }
    #[getter]
    fn _sock(&self, py: Python<'_>) -> PyObject {
        self.st
            .with(py, |s| s.sock.as_ref().map(|o| o.clone_ref(py)))
            .unwrap_or_else(|| py.None())
    }
    #[getter]
    fn _loop(&self, py: Python<'_>) -> PyObject {
        self.lp(py).map_or_else(|| py.None(), Bound::unbind)
    }
    #[getter]
    fn _server(&self, py: Python<'_>) -> PyObject {
        self.st
            .with(py, |s| s.server.as_ref().map(|o| o.clone_ref(py)))
            .unwrap_or_else(|| py.None())
    }
    #[getter]
    fn _protocol(&self, py: Python<'_>) -> PyObject {
        self.protocol(py).unbind()
    }
    #[getter]
    fn _closing(&self, py: Python<'_>) -> bool {
        self.st.with(py, |s| s.closing)
    }
    #[getter]
    fn _eof(&self, py: Python<'_>) -> bool {
        self.st.with(py, |s| s.eof)
    }
    #[getter]
    fn _paused(&self, py: Python<'_>) -> bool {
        self.st.with(py, |s| s.paused)
    }
    #[getter]
    fn _conn_lost(&self, py: Python<'_>) -> u32 {
        self.st.with(py, |s| s.conn_lost)
    }
    #[getter]
    fn _protocol_paused(&self, py: Python<'_>) -> bool {
        self.st.with(py, |s| s.protocol_paused)
    }
    #[getter]
    fn _protocol_connected(&self, py: Python<'_>) -> bool {
        self.st.with(py, |s| s.protocol_connected)
    }
    #[getter]
    fn _empty_waiter(&self, py: Python<'_>) -> PyObject {
        self.st
            .with(py, |s| s.empty_waiter.as_ref().map(|o| o.clone_ref(py)))
            .unwrap_or_else(|| py.None())
    }
    #[getter]
    fn _high_water(&self, py: Python<'_>) -> usize {
        self.st.with(py, |s| s.high)
    }
    #[getter]
    fn _low_water(&self, py: Python<'_>) -> usize {
        self.st.with(py, |s| s.low)
    }
    /// Bytes queued, without the flush `get_write_buffer_size()` does first
    /// (for `repr`, which must not send).
    #[getter]
    fn _buffer_size(&self, py: Python<'_>) -> usize {
        self.st.with(py, |s| s.buf_size)
    }
}

impl Drop for StreamTransport {
    fn drop(&mut self) {
        if self.native_loop {
            Python::with_gil(|py| self.forget_endpoint(py));
        }
    }
}

impl StreamTransport {
    /// Takes this transport's entry out of the loop's endpoint table: on
    /// `connection_lost`, and when it is freed without one (left open; its
    /// weak reference is dead by then). An entry another transport has
    /// since taken over is left alone.
    fn forget_endpoint(&self, py: Python<'_>) {
        let Some(key) = self.st.with(py, |s| s.endpoint.take()) else {
            return;
        };
        let Some(lp) = self.core(py) else { return };
        let endpoints = lp.get().stream_endpoints.bind(py);
        let ours = endpoints.get_item(&key).ok().flatten().is_some_and(|r| {
            r.downcast_into::<PyWeakrefReference>().is_ok_and(|r| {
                r.upgrade().is_none_or(|t| {
                    t.downcast::<StreamTransport>()
                        .is_ok_and(|t| std::ptr::eq(t.get(), self))
                })
            })
        });
        if ours {
            // Also runs from finalizers, with no one to report to; a failed
            // delete only leaves a dead entry behind.
            let _ = endpoints.del_item(&key);
        }
    }

    /// Before the socket closes: leaves the loop's endpoint table and
    /// unlinks the peer, sending what it holds first (on asyncio it would
    /// already be in this socket, and a close with unread data resets).
    fn unlink_peer(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        this.forget_endpoint(py);
        let peer = this.st.with(py, |s| s.peer.take());
        if let Some(peer) = peer {
            let peer = peer.into_bound(py);
            peer.get().st.with(py, |s| s.peer = None);
            if let Some(lp) = this.core(py) {
                flush_reporting(&lp, &peer)?;
            }
        }
        Ok(())
    }

    fn schedule_connection_lost(slf: &Bound<'_, Self>, exc: PyObject) -> PyResult<()> {
        let py = slf.py();
        if let Some(lp) = slf.get().lp(py) {
            let cb = slf.getattr(intern!(py, "_call_connection_lost"))?;
            lp.call_method1(intern!(py, "call_soon"), (cb, exc))?;
        }
        Ok(())
    }
}

/// Runs the flushes a callback's writes queued. Errors are
/// reported through the loop's exception handler, except SystemExit and
/// KeyboardInterrupt, which propagate once every transport is flushed.
pub(crate) fn flush_pending_writes(lp: &Bound<'_, LoopCore>) -> PyResult<()> {
    flush_list(lp, &lp.get().pending_writes)
}

/// Runs the flushes that waited for the end of the turn (writes to a peer
/// on this loop), as `flush_pending_writes`.
pub(crate) fn flush_deferred_writes(lp: &Bound<'_, LoopCore>) -> PyResult<()> {
    flush_list(lp, &lp.get().deferred_writes)
}

fn flush_list(lp: &Bound<'_, LoopCore>, list: &GilCell<Vec<Py<StreamTransport>>>) -> PyResult<()> {
    let py = lp.py();
    let core = lp.get();
    let mut result = Ok(());
    // Flushing can run protocol callbacks that write again: a few rounds.
    for _ in 0..8 {
        if list.with(py, |v| v.is_empty()) {
            break;
        }
        // Swap in the spare vector (keeps both allocations across turns).
        let mut pending = core.pending_writes_spare.with(py, std::mem::take);
        list.with(py, |v| std::mem::swap(v, &mut pending));
        // Every transport is flushed even after an error: each is listed
        // only while its flush_pending is set.
        for t in pending.drain(..) {
            // As Bound: a plain decref, without a Py's GIL-state lookup.
            let t = t.into_bound(py);
            if let Err(e) = flush_reporting(lp, &t) {
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        core.pending_writes_spare.with(py, |v| {
            if v.capacity() == 0 {
                *v = pending;
            }
        });
    }
    result
}

/// One transport's flush; an error is reported through the loop's
/// exception handler, except SystemExit and KeyboardInterrupt (returned).
fn flush_reporting(lp: &Bound<'_, LoopCore>, t: &Bound<'_, StreamTransport>) -> PyResult<()> {
    let py = lp.py();
    match StreamTransport::flush(t) {
        Ok(()) => Ok(()),
        Err(e) if is_fatal(py, &e) => Err(e),
        Err(e) => {
            let ctx = pyo3::types::PyDict::new(py);
            ctx.set_item("message", "Exception in stream transport flush")?;
            ctx.set_item("exception", e.into_value(py))?;
            lp.call_method1(intern!(py, "call_exception_handler"), (ctx,))?;
            Ok(())
        }
    }
}
