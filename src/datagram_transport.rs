//! `DatagramCore`: the native data path of ferroloop's datagram transport.
//!
//! It owns the two hot operations of a UDP (or other datagram) endpoint:
//! `read_ready` (the reactor's reader callback: one `recvfrom` into the
//! thread's scratch buffer, an exact-size `bytes`, then `protocol.datagram_received(data,
//! addr)` or `protocol.error_received(exc)`) and `sendto` while nothing is
//! queued (sent at once; `error_received` for an OSError). Everything rarer
//! -- queueing on EAGAIN, flow control, closing, fatal errors, argument
//! errors -- is delegated to the Python transport (`ferroloop.datagram.
//! DatagramTransport`), which holds this object and keeps its flags current.
//!
//! The core refers to its transport through a weak reference, so the pair
//! forms no reference cycle.

use std::os::fd::RawFd;

use pyo3::exceptions::PyOSError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use crate::gil_cell::GilCell;
use crate::os_errors::{last_errno, os_error, raised_would_block, would_block};
use crate::read_buffer::with_scratch;

struct State {
    protocol: PyObject,
    /// The transport called connection_lost (or scheduled it): ignore reads.
    conn_lost: bool,
    /// Something is queued or the transport is closing: `sendto` must take
    /// the Python path to keep datagrams in order.
    slow: bool,
    /// The last peer address received and its Python form: a datagram from
    /// the same peer reuses the (immutable) tuple, and a reply to that very
    /// tuple is sent natively with the cached sockaddr.
    last_addr: Option<CachedAddr>,
}

struct CachedAddr {
    ss: libc::sockaddr_storage,
    len: libc::socklen_t,
    obj: PyObject,
}

fn same_sockaddr(
    a: &libc::sockaddr_storage,
    alen: libc::socklen_t,
    b: &libc::sockaddr_storage,
    blen: libc::socklen_t,
) -> bool {
    if alen != blen {
        return false;
    }
    let n = alen as usize;
    // SAFETY: both are sockaddr_storage, n <= its size.
    let (pa, pb) = unsafe {
        (
            std::slice::from_raw_parts(a as *const _ as *const u8, n),
            std::slice::from_raw_parts(b as *const _ as *const u8, n),
        )
    };
    pa == pb
}

/// The Python address of an IPv4/IPv6 `sockaddr`, as the socket module
/// builds it (numeric host via getnameinfo, so scoped IPv6 addresses get
/// their `%iface` suffix just the same).
fn sockaddr_to_py(
    py: Python<'_>,
    ss: &libc::sockaddr_storage,
    len: libc::socklen_t,
) -> PyResult<PyObject> {
    if len == 0 {
        return Ok(py.None());
    }
    let mut host = [0 as libc::c_char; 1025];
    // SAFETY: ss holds `len` valid bytes written by recvfrom; host is a
    // writable buffer of the length passed.
    let rc = unsafe {
        libc::getnameinfo(
            ss as *const _ as *const libc::sockaddr,
            len,
            host.as_mut_ptr(),
            host.len() as libc::socklen_t,
            std::ptr::null_mut(),
            0,
            libc::NI_NUMERICHOST,
        )
    };
    if rc != 0 {
        // SAFETY: gai_strerror returns a static string.
        let msg = unsafe { std::ffi::CStr::from_ptr(libc::gai_strerror(rc)) }
            .to_string_lossy()
            .into_owned();
        let gaierror = py.import("socket")?.getattr("gaierror")?;
        return Err(PyErr::from_value(gaierror.call1((rc, msg))?));
    }
    // SAFETY: getnameinfo NUL-terminated it.
    let host = unsafe { std::ffi::CStr::from_ptr(host.as_ptr()) }.to_string_lossy();
    let host = PyString::new(py, &host);
    match ss.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: family says this is a sockaddr_in.
            let sin = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            let port = u16::from_be(sin.sin_port);
            Ok(
                PyTuple::new(py, [host.into_any(), port.into_pyobject(py)?.into_any()])?
                    .into_any()
                    .unbind(),
            )
        }
        _ => {
            // SAFETY: the core only reads natively on AF_INET/AF_INET6.
            let sin6 = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            let port = u16::from_be(sin6.sin6_port);
            let flow = u32::from_be(sin6.sin6_flowinfo);
            Ok(PyTuple::new(
                py,
                [
                    host.into_any(),
                    port.into_pyobject(py)?.into_any(),
                    flow.into_pyobject(py)?.into_any(),
                    sin6.sin6_scope_id.into_pyobject(py)?.into_any(),
                ],
            )?
            .into_any()
            .unbind())
        }
    }
}

#[pyclass(module = "ferroloop._ferroloop", frozen)]
pub struct DatagramCore {
    /// weakref.ref to the Python transport.
    owner: PyObject,
    sock: PyObject,
    fd: RawFd,
    /// recvfrom natively (AF_INET/AF_INET6, when the socket's class keeps
    /// socket's own I/O methods); otherwise through sock.recvfrom.
    native_recv: bool,
    /// The socket's class overrides recvfrom/sendto/send: every send goes
    /// through the Python transport's `_sendto`, which calls them.
    py_io: bool,
    /// The socket is connected (peername set): send() instead of sendto().
    connected: bool,
    /// The remote address the endpoint was created with, if any.
    address: Option<PyObject>,
    max_size: usize,
    state: GilCell<State>,
}

enum Sent {
    Done,
    WouldBlock,
    Failed(PyErr),
}

impl Sent {
    /// What a `send`/`sendto` return value (and errno) means.
    fn from_syscall(n: isize) -> Sent {
        if n >= 0 {
            return Sent::Done;
        }
        match last_errno() {
            e if would_block(e) => Sent::WouldBlock,
            e => Sent::Failed(os_error(e)),
        }
    }
}

impl DatagramCore {
    fn owner<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let o = self.owner.bind(py).call0()?;
        if o.is_none() {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(
                "datagram transport is gone",
            ));
        }
        Ok(o)
    }

    fn protocol(&self, py: Python<'_>) -> PyObject {
        self.state.with(py, |s| s.protocol.clone_ref(py))
    }

    fn fatal(
        &self,
        py: Python<'_>,
        err: PyErr,
        message: &str,
        owner: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let owner = match owner {
            Some(o) => o.clone(),
            None => self.owner(py)?,
        };
        owner.call_method1(intern!(py, "_fatal_error"), (err.value(py), message))?;
        Ok(())
    }

    /// Receive one datagram natively: Ok(None) when nothing is there.
    fn recv_native(&self, py: Python<'_>) -> Result<Option<(PyObject, PyObject)>, i32> {
        let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let max = self.max_size;
        let fd = self.fd;
        let data = with_scratch(max, |buf| {
            // SAFETY: buf has `max` writable bytes; ss/len are valid.
            let n = unsafe {
                libc::recvfrom(
                    fd,
                    buf.as_mut_ptr() as *mut libc::c_void,
                    max,
                    0,
                    &mut ss as *mut _ as *mut libc::sockaddr,
                    &mut len,
                )
            };
            if n < 0 {
                return Err(last_errno());
            }
            // A bytes object is not GC-tracked: creating it runs no Python code.
            Ok(PyBytes::new(py, &buf[..n as usize]).into_any().unbind())
        })?;
        let cached = self.state.with(py, |s| match &s.last_addr {
            Some(c) if same_sockaddr(&c.ss, c.len, &ss, len) => Some(c.obj.clone_ref(py)),
            _ => None,
        });
        if let Some(addr) = cached {
            return Ok(Some((data, addr)));
        }
        match sockaddr_to_py(py, &ss, len) {
            Ok(addr) => {
                let entry = CachedAddr {
                    ss,
                    len,
                    obj: addr.clone_ref(py),
                };
                let old = self.state.with(py, |s| s.last_addr.replace(entry));
                drop(old);
                Ok(Some((data, addr)))
            }
            Err(_) => Err(libc::EINVAL),
        }
    }

    fn send_bytes(&self, py: Python<'_>, data: &Bound<'_, PyAny>, addr: &Bound<'_, PyAny>) -> Sent {
        if self.connected {
            if let Ok(b) = data.downcast::<PyBytes>() {
                let bytes = b.as_bytes();
                // SAFETY: a valid buffer of bytes.len() bytes.
                let n = unsafe {
                    libc::send(
                        self.fd,
                        bytes.as_ptr() as *const libc::c_void,
                        bytes.len(),
                        0,
                    )
                };
                return Sent::from_syscall(n);
            }
            match self
                .sock
                .bind(py)
                .call_method1(intern!(py, "send"), (data,))
            {
                Ok(_) => Sent::Done,
                Err(e) => Self::classify(py, e),
            }
        } else {
            if let Ok(b) = data.downcast::<PyBytes>() {
                let target = self.state.with(py, |s| match &s.last_addr {
                    Some(c) if addr.is(c.obj.bind(py)) => Some((c.ss, c.len)),
                    _ => None,
                });
                if let Some((ss, len)) = target {
                    let bytes = b.as_bytes();
                    // SAFETY: valid buffer and sockaddr of the given lengths.
                    let n = unsafe {
                        libc::sendto(
                            self.fd,
                            bytes.as_ptr() as *const libc::c_void,
                            bytes.len(),
                            0,
                            &ss as *const _ as *const libc::sockaddr,
                            len,
                        )
                    };
                    return Sent::from_syscall(n);
                }
            }
            match self
                .sock
                .bind(py)
                .call_method1(intern!(py, "sendto"), (data, addr))
            {
                Ok(_) => Sent::Done,
                Err(e) => Self::classify(py, e),
            }
        }
    }

    fn classify(py: Python<'_>, e: PyErr) -> Sent {
        if raised_would_block(py, &e) {
            Sent::WouldBlock
        } else {
            Sent::Failed(e)
        }
    }
}

#[pymethods]
impl DatagramCore {
    #[new]
    #[pyo3(signature = (owner, sock, fd, family, connected, address, protocol, max_size, py_io=false))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        owner: PyObject,
        sock: PyObject,
        fd: RawFd,
        family: i32,
        connected: bool,
        address: Option<PyObject>,
        protocol: PyObject,
        max_size: usize,
        py_io: bool,
    ) -> Self {
        DatagramCore {
            owner,
            sock,
            fd,
            native_recv: !py_io && (family == libc::AF_INET || family == libc::AF_INET6),
            py_io,
            connected,
            address,
            max_size: max_size.max(1),
            state: GilCell::new(State {
                protocol,
                conn_lost: false,
                slow: false,
                last_addr: None,
            }),
        }
    }

    fn set_protocol(&self, py: Python<'_>, protocol: PyObject) {
        let old = self
            .state
            .with(py, |s| std::mem::replace(&mut s.protocol, protocol));
        drop(old);
    }

    // The protocol usually keeps its transport, which keeps this core: the
    // collector must see that cycle, or an endpoint left open when its loop
    // closes would keep its socket (and the loop) forever, where asyncio's
    // is collected, warned about and closed.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.owner)?;
        visit.call(&self.sock)?;
        if let Some(a) = &self.address {
            visit.call(a)?;
        }
        if let Some(res) = self.state.peek(|s| {
            visit.call(&s.protocol)?;
            if let Some(c) = &s.last_addr {
                visit.call(&c.obj)?;
            }
            Ok(())
        }) {
            res?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        Python::with_gil(|py| {
            let old = self.state.with(py, |s| {
                s.last_addr = None;
                std::mem::replace(&mut s.protocol, py.None())
            });
            drop(old);
        });
    }

    /// Flags the Python transport keeps current: `conn_lost` (reads are
    /// ignored) and `slow` (sendto goes through Python).
    fn set_flags(&self, py: Python<'_>, conn_lost: bool, slow: bool) {
        self.state.with(py, |s| {
            s.conn_lost = conn_lost;
            s.slow = slow;
        });
    }

    /// Reader callback: one datagram (or one error) per readiness event.
    /// The transport registers it with itself as `owner`, so the reactor's
    /// handle keeps the transport alive while it reads (as asyncio's bound
    /// method does).
    #[pyo3(signature = (owner=None))]
    fn read_ready(&self, py: Python<'_>, owner: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        if self.state.with(py, |s| s.conn_lost) {
            return Ok(());
        }
        if self.native_recv {
            match self.recv_native(py) {
                Ok(Some((data, addr))) => {
                    let proto = self.protocol(py);
                    crate::detach::call_method(
                        proto.bind(py),
                        intern!(py, "datagram_received"),
                        &[data.bind(py), addr.bind(py)],
                    )?;
                }
                Ok(None) => {}
                Err(e) if would_block(e) => {}
                Err(e) => {
                    let exc = os_error(e);
                    let proto = self.protocol(py);
                    crate::detach::call_method(
                        proto.bind(py),
                        intern!(py, "error_received"),
                        &[exc.value(py).as_any()],
                    )?;
                }
            }
            return Ok(());
        }
        match self
            .sock
            .bind(py)
            .call_method1(intern!(py, "recvfrom"), (self.max_size,))
        {
            Ok(res) => {
                let (data, addr): (PyObject, PyObject) = res.extract()?;
                let proto = self.protocol(py);
                crate::detach::call_method(
                    proto.bind(py),
                    intern!(py, "datagram_received"),
                    &[data.bind(py), addr.bind(py)],
                )?;
            }
            Err(e) => {
                if raised_would_block(py, &e) {
                } else if e.is_instance_of::<PyOSError>(py) {
                    let proto = self.protocol(py);
                    crate::detach::call_method(
                        proto.bind(py),
                        intern!(py, "error_received"),
                        &[e.value(py).as_any()],
                    )?;
                } else if crate::handles::is_fatal(py, &e) {
                    return Err(e);
                } else {
                    self.fatal(py, e, "Fatal read error on datagram transport", owner)?;
                }
            }
        }
        Ok(())
    }

    /// `transport.sendto(data, addr=None)`: sent at once when nothing is
    /// queued; anything unusual goes to the transport's Python `_sendto`.
    #[pyo3(signature = (data, addr=None))]
    fn sendto(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        addr: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let none = py.None();
        let none = none.bind(py);
        let addr = addr.unwrap_or(none);
        let plain = !self.py_io && self.state.with(py, |s| !s.slow);
        let len = if let Ok(b) = data.downcast::<PyBytes>() {
            Some(b.as_bytes().len())
        } else {
            None
        };
        let addr_ok = match &self.address {
            None => true,
            Some(a) => addr.is_none() || addr.is(a) || addr.eq(a.bind(py))?,
        };
        // An empty datagram is sent or ignored depending on the Python
        // version: the Python method knows which.
        if !plain || matches!(len, None | Some(0)) || !addr_ok {
            self.owner(py)?
                .call_method1(intern!(py, "_sendto"), (data, addr))?;
            return Ok(());
        }
        let target = match &self.address {
            Some(a) => a.bind(py).clone(),
            None => addr.clone(),
        };
        match self.send_bytes(py, data, &target) {
            Sent::Done => Ok(()),
            Sent::WouldBlock => {
                self.owner(py)?
                    .call_method1(intern!(py, "_queue"), (data, target))?;
                Ok(())
            }
            Sent::Failed(e) => {
                if e.is_instance_of::<PyOSError>(py) {
                    let proto = self.protocol(py);
                    crate::detach::call_method(
                        proto.bind(py),
                        intern!(py, "error_received"),
                        &[e.value(py).as_any()],
                    )?;
                    Ok(())
                } else if crate::handles::is_fatal(py, &e) {
                    Err(e)
                } else {
                    self.fatal(py, e, "Fatal write error on datagram transport", None)
                }
            }
        }
    }
}
