//! `ChildWatch`: how ferroloop learns that a child process has exited,
//! without a thread per child.
//!
//! On Linux a pidfd (`pidfd_open(2)`) turns "the child exited" into an fd
//! that polls readable; the subprocess transport registers it with the
//! loop's reactor as a reader and, when it fires, calls `try_reap()`
//! (`waitpid(pid, WNOHANG)`) for the exit code. Where pidfds are missing
//! (`fileno()` is None) the transport polls `try_reap()` on a timer. The
//! pidfd is owned here and closed on `close()` or when the object goes away,
//! so it never leaks.

use std::sync::atomic::{AtomicI32, Ordering};

use pyo3::prelude::*;

use crate::os_errors::os_error;

fn pidfd_open(pid: libc::pid_t) -> Result<i32, i32> {
    // SAFETY: a plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        let fd = fd as i32;
        // pidfds are close-on-exec already (the kernel sets O_CLOEXEC).
        Ok(fd)
    }
}

#[pyclass(module = "ferroloop._ferroloop", frozen)]
pub struct ChildWatch {
    pid: libc::pid_t,
    pidfd: AtomicI32,
}

impl ChildWatch {
    fn close_fd(&self) {
        let fd = self.pidfd.swap(-1, Ordering::AcqRel);
        if fd >= 0 {
            // SAFETY: we own this fd and closed-flag it first.
            unsafe { libc::close(fd) };
        }
    }
}

impl Drop for ChildWatch {
    fn drop(&mut self) {
        self.close_fd();
    }
}

#[pymethods]
impl ChildWatch {
    /// Watch child `pid`; `use_pidfd=False` skips the pidfd (timer polling).
    #[new]
    #[pyo3(signature = (pid, use_pidfd=true))]
    fn py_new(pid: libc::pid_t, use_pidfd: bool) -> Self {
        let fd = if use_pidfd {
            pidfd_open(pid).unwrap_or(-1)
        } else {
            -1
        };
        ChildWatch {
            pid,
            pidfd: AtomicI32::new(fd),
        }
    }

    #[getter]
    fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// The pidfd to watch for readability, or None (poll `try_reap`).
    fn fileno(&self) -> Option<i32> {
        let fd = self.pidfd.load(Ordering::Acquire);
        (fd >= 0).then_some(fd)
    }

    /// `waitpid(pid, WNOHANG)`: the exit code (negative signal number if a
    /// signal killed it, as Popen reports it), or None while it runs.
    /// Raises ChildProcessError if the child was reaped elsewhere.
    fn try_reap(&self, py: Python<'_>) -> PyResult<Option<i32>> {
        let pid = self.pid;
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: waitpid on our own child; WNOHANG, so it never blocks
            // and the GIL stays held.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == 0 {
                return Ok(None);
            }
            if r < 0 {
                let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                if e == libc::EINTR {
                    py.check_signals()?;
                    continue;
                }
                return Err(os_error(e));
            }
            if libc::WIFEXITED(status) {
                return Ok(Some(libc::WEXITSTATUS(status)));
            }
            if libc::WIFSIGNALED(status) {
                return Ok(Some(-libc::WTERMSIG(status)));
            }
            // Stopped/continued are not reported without WUNTRACED/WCONTINUED.
            return Ok(None);
        }
    }

    /// Close the pidfd (idempotent). Unregister it from the reactor first.
    fn close(&self) {
        self.close_fd();
    }
}
