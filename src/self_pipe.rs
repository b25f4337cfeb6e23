//! `SelfPipe`: the socket pair that wakes a sleeping loop.
//!
//! Two writers share it: `call_soon_threadsafe` (writes a zero byte, at most
//! one per loop turn thanks to the `pending` flag) and CPython's C-level
//! signal handler, which writes the signal number once the Python side has
//! made the write end the wakeup fd (`signal.set_wakeup_fd`), as asyncio does.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

pub struct SelfPipe {
    /// (read end, write end); None once closed, so a late
    /// `call_soon_threadsafe` can never write into a reused fd number.
    ends: Mutex<Option<(OwnedFd, OwnedFd)>>,
    read_fd: RawFd,
    write_fd: RawFd,
    pending: AtomicBool,
}

impl SelfPipe {
    pub fn new() -> io::Result<Self> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: fds has room for the two descriptors socketpair returns.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both fds were just created and are owned by nobody else.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(SelfPipe {
            read_fd: r.as_raw_fd(),
            write_fd: w.as_raw_fd(),
            ends: Mutex::new(Some((r, w))),
            pending: AtomicBool::new(false),
        })
    }

    pub fn read_fd(&self) -> RawFd {
        self.read_fd
    }

    /// The fd to hand to `signal.set_wakeup_fd`, or -1 once closed.
    pub fn write_fd(&self) -> RawFd {
        if self
            .ends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            self.write_fd
        } else {
            -1
        }
    }

    /// Wakes the loop if no wake-up is already on its way.
    pub fn wake(&self) {
        // A plain load first: while a wake-up is pending (the common case
        // for a burst of calls) this keeps the flag's cache line shared.
        if self.pending.load(Ordering::Acquire) || self.pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let ends = self.ends.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, w)) = ends.as_ref() {
            // A full pipe already guarantees a wake-up: ignore EAGAIN.
            // SAFETY: w is open while we hold the lock; the buffer is static.
            unsafe { libc::write(w.as_raw_fd(), [0u8].as_ptr().cast(), 1) };
        }
    }

    /// Empties the pipe, returning the signal numbers found in it.
    pub fn drain(&self, signals: &mut Vec<u8>) {
        self.pending.store(false, Ordering::Release);
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: buf is ours; read_fd is open until close() (same thread).
            let n = unsafe { libc::read(self.read_fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                let e = io::Error::last_os_error();
                if n < 0 && e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                break;
            }
            signals.extend(buf[..n as usize].iter().copied().filter(|&b| b != 0));
            if (n as usize) < buf.len() {
                break;
            }
        }
    }

    pub fn close(&self) {
        self.ends.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}
