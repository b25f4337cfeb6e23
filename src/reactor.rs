//! `Reactor`: the I/O readiness poller and the table of fds the loop watches.
//!
//! epoll in level-triggered mode, because asyncio's `add_reader` promises the
//! callback runs on every turn while the fd stays readable (an edge-triggered
//! poller, like mio's, would go silent after one partial read). The one
//! exception is a reader that drains its fd on every call, a TCP stream
//! transport: its fd is edge-triggered while no writer waits on it, which
//! spares the kernel a second readiness check of every fd that was ready on
//! the previous turn (about 1.5% of an echo round trip). The GIL is released
//! only for a blocking wait.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};

use pyo3::prelude::*;

use crate::gil_cell::GilCell;
use crate::handles::Handle;

/// Readiness the poller reported for one fd.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    pub readable: bool,
    pub writable: bool,
}

/// What the loop watches one fd for.
#[derive(Default)]
pub struct Watch {
    pub reader: Option<Py<Handle>>,
    pub writer: Option<Py<Handle>>,
    /// The reader reads until the fd is drained, or calls `rearm`: the fd
    /// may be edge-triggered.
    draining: bool,
}

impl Watch {
    fn mask(&self) -> u32 {
        Self::mask_of(self.reader.is_some(), self.writer.is_some(), self.draining)
    }

    /// Edge-triggered only without a writer: a writer's callback may stop
    /// before the socket is full (so no new edge would come), and it only
    /// exists while a write is stuck, so level-triggering it costs little.
    fn mask_of(reader: bool, writer: bool, draining: bool) -> u32 {
        let mut m = 0u32;
        if reader {
            m |= libc::EPOLLIN as u32;
            if draining && !writer {
                // RDHUP and PRI: see `Reactor::end_edge`.
                m |= (libc::EPOLLET | libc::EPOLLRDHUP | libc::EPOLLPRI) as u32;
            }
        }
        if writer {
            m |= libc::EPOLLOUT as u32;
        }
        m
    }
}

/// The watches, indexed by fd: fd numbers are small and dense (the kernel
/// hands out the lowest free one), so a vector is both smaller and faster
/// than a hash map for the lookup every I/O event needs.
#[derive(Default)]
struct WatchTable {
    slots: Vec<Watch>,
    /// Fds with a reader or a writer.
    len: usize,
}

impl WatchTable {
    fn get(&self, fd: RawFd) -> Option<&Watch> {
        self.slots.get(usize::try_from(fd).ok()?)
    }

    fn get_mut(&mut self, fd: RawFd) -> Option<&mut Watch> {
        self.slots.get_mut(usize::try_from(fd).ok()?)
    }

    /// The slot of `fd`, grown into if needed: only for an fd the kernel
    /// has just accepted (`fd` is checked non-negative by the loop before it
    /// gets here).
    fn slot(&mut self, fd: RawFd) -> &mut Watch {
        let i = usize::try_from(fd).expect("watched fds are non-negative");
        if i >= self.slots.len() {
            self.slots.resize_with(i + 1, Watch::default);
        }
        &mut self.slots[i]
    }

    fn drain(&mut self) -> Vec<Watch> {
        self.len = 0;
        std::mem::take(&mut self.slots)
            .into_iter()
            .filter(|w| w.mask() != 0)
            .collect()
    }

    fn handles(&self) -> impl Iterator<Item = &Py<Handle>> {
        self.slots
            .iter()
            .flat_map(|w| w.reader.iter().chain(w.writer.iter()))
    }
}

/// A change of the watch table the kernel refused: the error, and the
/// handles it let go of, dropped once the table is no longer borrowed (a
/// handle's last reference can run Python code).
struct Refused {
    error: io::Error,
    _handles: (Option<Watch>, Option<Py<Handle>>),
}

impl Refused {
    fn into_error(self) -> io::Error {
        self.error
    }
}

/// The watch table is only touched with the GIL held; the event buffer is
/// moved out of its cell for the wait, so nothing is borrowed while the GIL
/// is released.
pub struct Reactor {
    /// -1 once closed: `close()` releases the fd at `loop.close()`, not at
    /// garbage collection.
    epfd: AtomicI32,
    watches: GilCell<WatchTable>,
    events: GilCell<Vec<libc::epoll_event>>,
    /// Edge-triggered fds whose reader stopped before the fd was empty: the
    /// next poll reports them readable without asking the kernel.
    rearmed: GilCell<Vec<RawFd>>,
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

impl Reactor {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the returned fd is owned right away.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        Ok(Reactor {
            epfd: AtomicI32::new(fd),
            watches: GilCell::new(WatchTable::default()),
            events: GilCell::new(Vec::with_capacity(256)),
            rearmed: GilCell::new(Vec::new()),
        })
    }

    fn epfd(&self) -> RawFd {
        self.epfd.load(Ordering::Relaxed)
    }

    /// Closes the epoll fd; later calls fail with EBADF instead of touching
    /// a reused descriptor number.
    pub fn close(&self) {
        let fd = self.epfd.swap(-1, Ordering::AcqRel);
        if fd >= 0 {
            // SAFETY: we owned fd and nobody can load it any more.
            unsafe { libc::close(fd) };
        }
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, mask: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: mask,
            u64: fd as u64,
        };
        // SAFETY: ev lives across the call; epfd is open.
        cvt(unsafe { libc::epoll_ctl(self.epfd(), op, fd, &mut ev) }).map(|_| ())
    }

    /// Tells the kernel the new interest set for `fd`, as `selectors` does:
    /// a removal the kernel refuses is ignored (a closed fd is already gone
    /// from the epoll set), and an addition it already has (EEXIST) becomes a
    /// change.
    fn sync(&self, fd: RawFd, old: u32, new: u32) -> io::Result<()> {
        if new == 0 {
            if old != 0 {
                let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0);
            }
            return Ok(());
        }
        if old != 0 {
            return self.ctl(libc::EPOLL_CTL_MOD, fd, new);
        }
        match self.ctl(libc::EPOLL_CTL_ADD, fd, new) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                self.ctl(libc::EPOLL_CTL_MOD, fd, new)
            }
            r => r,
        }
    }

    /// Installs `handle` as the reader (or writer) of `fd`, returning the one
    /// it replaces. If the kernel refuses to add the fd, the table is left
    /// unchanged; if it refuses to change the interest set of a watched fd
    /// (the fd was closed while watched), the fd's watch is dropped before
    /// the error is returned, as `selectors` does, so that a new file that
    /// reuses the number starts from nothing.
    pub fn set(
        &self,
        py: Python<'_>,
        fd: RawFd,
        write: bool,
        handle: Option<Py<Handle>>,
    ) -> io::Result<Option<Py<Handle>>> {
        self.watches
            .with(py, |watches| self.set_in(watches, fd, write, handle, false))
            .map_err(Refused::into_error)
    }

    /// Installs `handle` as a reader of `fd` that, on every call, reads
    /// until a read comes up short (or fails with EAGAIN), or else calls
    /// `rearm`: the fd is then edge-triggered while it has no writer.
    pub fn set_draining_reader(
        &self,
        py: Python<'_>,
        fd: RawFd,
        handle: Py<Handle>,
    ) -> io::Result<Option<Py<Handle>>> {
        self.watches
            .with(py, |watches| {
                self.set_in(watches, fd, false, Some(handle), true)
            })
            .map_err(Refused::into_error)
    }

    /// Has the next poll report `fd` readable: for a draining reader that
    /// stopped before the fd was empty (no edge would come for what is
    /// left). Nothing to do for a level-triggered fd, which the kernel
    /// reports again by itself.
    pub fn rearm(&self, py: Python<'_>, fd: RawFd) {
        if self.is_edge_triggered(py, fd) {
            self.rearmed.with(py, |r| {
                if !r.contains(&fd) {
                    r.push(fd);
                }
            });
        }
    }

    fn is_edge_triggered(&self, py: Python<'_>, fd: RawFd) -> bool {
        let mask = self.watches.with(py, |w| w.get(fd).map_or(0, Watch::mask));
        mask & libc::EPOLLET as u32 != 0
    }

    fn set_in(
        &self,
        watches: &mut WatchTable,
        fd: RawFd,
        write: bool,
        handle: Option<Py<Handle>>,
        draining: bool,
    ) -> Result<Option<Py<Handle>>, Refused> {
        // Work out the new interest set and tell the kernel before touching
        // the table, so the table grows only for fds the kernel accepted (a
        // bogus fd number must not make it allocate up to that index).
        let (reader, writer, was_draining) = watches.get(fd).map_or((false, false, false), |w| {
            (w.reader.is_some(), w.writer.is_some(), w.draining)
        });
        let had = if write { writer } else { reader };
        if !had && handle.is_none() {
            return Ok(None); // removing what is not there
        }
        let old_mask = Watch::mask_of(reader, writer, was_draining);
        // A writer leaves the reader's kind alone; a new reader sets it.
        let draining = if write {
            was_draining
        } else {
            draining && handle.is_some()
        };
        let new_mask = if write {
            Watch::mask_of(reader, handle.is_some(), draining)
        } else {
            Watch::mask_of(handle.is_some(), writer, draining)
        };
        if old_mask != new_mask {
            if let Err(error) = self.sync(fd, old_mask, new_mask) {
                let stale = if old_mask != 0 {
                    watches.len -= 1;
                    watches.get_mut(fd).map(std::mem::take)
                } else {
                    None
                };
                return Err(Refused {
                    error,
                    _handles: (stale, handle),
                });
            }
        }
        let entry = watches.slot(fd);
        entry.draining = draining;
        let slot = if write {
            &mut entry.writer
        } else {
            &mut entry.reader
        };
        let previous = std::mem::replace(slot, handle);
        match (old_mask != 0, new_mask != 0) {
            (false, true) => watches.len += 1,
            (true, false) => watches.len -= 1,
            _ => {}
        }
        Ok(previous)
    }

    /// The reader and writer handles of `fd` (new references).
    pub fn get(&self, py: Python<'_>, fd: RawFd) -> (Option<Py<Handle>>, Option<Py<Handle>>) {
        self.watches.with(py, |w| match w.get(fd) {
            Some(w) => (
                w.reader.as_ref().map(|h| h.clone_ref(py)),
                w.writer.as_ref().map(|h| h.clone_ref(py)),
            ),
            None => (None, None),
        })
    }

    pub fn len(&self, py: Python<'_>) -> usize {
        self.watches.with(py, |w| w.len)
    }

    /// Waits up to `timeout` (None: forever) and returns what became ready.
    /// An interrupted wait (EINTR) returns no events, so the caller can run
    /// Python's signal handlers. `py` is used to release the GIL only when the
    /// wait may block.
    pub fn poll(
        &self,
        py: Python<'_>,
        timeout: Option<f64>,
        out: &mut Vec<(RawFd, Readiness)>,
    ) -> io::Result<()> {
        let rearmed = self.rearmed.with(py, std::mem::take);
        let timeout = if rearmed.is_empty() {
            timeout
        } else {
            Some(0.0)
        };
        let timeout_ms: libc::c_int = match timeout {
            None => -1,
            // Round up so a timer is never polled for "just before" its
            // deadline and then found not yet due.
            Some(t) => (t * 1000.0).ceil().min(i32::MAX as f64).max(0.0) as libc::c_int,
        };
        let cap = self.len(py).clamp(64, 4096);
        let mut events = self.events.with(py, std::mem::take);
        events.clear();
        if events.capacity() < cap {
            events.reserve(cap);
        }
        let epfd = self.epfd();
        let buf_addr = events.as_mut_ptr() as usize;
        let max = events.capacity() as libc::c_int;
        let wait = move || {
            // SAFETY: the buffer has room for `max` events and is owned by this
            // call (moved out of its cell) until the wait returns.
            unsafe { libc::epoll_wait(epfd, buf_addr as *mut libc::epoll_event, max, timeout_ms) }
        };
        // A zero timeout cannot block: keep the GIL rather than pay to
        // release and retake it.
        let n = if timeout_ms == 0 {
            wait()
        } else {
            crate::detach::without_gil(py, wait)
        };
        let result = if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                Ok(())
            } else {
                Err(e)
            }
        } else {
            // SAFETY: the kernel initialised the first n entries.
            unsafe { events.set_len(n as usize) };
            Ok(())
        };
        const SHORT_READS: u32 =
            (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLPRI) as u32;
        for ev in events.drain(..) {
            let bits = ev.events;
            let fd = ev.u64 as RawFd;
            if bits & SHORT_READS != 0 {
                self.end_edge(py, fd);
            }
            // Errors and hang-ups wake both directions, as selectors does.
            out.push((
                fd,
                Readiness {
                    readable: bits & !(libc::EPOLLOUT as u32) != 0,
                    writable: bits & !(libc::EPOLLIN as u32) != 0,
                },
            ));
        }
        self.events.with(py, |slot| *slot = events);
        for fd in rearmed {
            // Not if the kernel reported it too, or if the fd has since
            // lost its reader (or turned level-triggered).
            if self.is_edge_triggered(py, fd) && !out.iter().any(|(f, _)| *f == fd) {
                out.push((
                    fd,
                    Readiness {
                        readable: true,
                        writable: false,
                    },
                ));
            }
        }
        result
    }

    /// A draining reader's fd becomes level-triggered for good once the
    /// peer has shut down, the socket has an error or TCP urgent data is
    /// pending: a read stops short of the end of file or error behind the
    /// data, or of the urgent mark, and no new edge would report what is
    /// left. If that news comes after this turn's wait, it is itself an
    /// edge, reported with these bits on the next turn.
    fn end_edge(&self, py: Python<'_>, fd: RawFd) {
        self.watches.with(py, |watches| {
            if let Some(w) = watches.get_mut(fd).filter(|w| w.draining) {
                w.draining = false;
                // EPOLL_CTL_MOD of a watched fd fails only for lack of
                // kernel memory; nothing better to do then than go on.
                let _ = self.ctl(libc::EPOLL_CTL_MOD, fd, w.mask());
            }
        });
    }

    /// Forgets every watch without telling the kernel: used on close (the
    /// epoll fd goes with it) and in a forked child, whose epoll instance is
    /// still shared with the parent and must not be edited.
    pub fn take_all(&self, py: Python<'_>) -> Vec<Watch> {
        self.rearmed.with(py, Vec::clear);
        self.watches.with(py, WatchTable::drain)
    }

    pub fn traverse<E>(&self, visit: impl Fn(&Py<Handle>) -> Result<(), E>) -> Result<(), E> {
        self.watches
            .peek(|w| w.handles().try_for_each(&visit))
            .unwrap_or(Ok(()))
    }

    /// Registers an fd the loop itself owns (its self-pipe), outside the table.
    pub fn watch_internal(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, libc::EPOLLIN as u32)
    }
}

impl Drop for Reactor {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_table_grows_to_the_fd_and_finds_nothing_elsewhere() {
        let mut t = WatchTable::default();
        assert!(t.get(7).is_none() && t.get(-1).is_none());
        assert_eq!(t.slot(7).mask(), 0);
        assert_eq!(t.slots.len(), 8);
        assert!(t.get(7).is_some() && t.get(8).is_none());
        assert!(t.drain().is_empty(), "empty slots are not watches");
        assert_eq!((t.slots.len(), t.len), (0, 0));
    }

    #[test]
    fn watch_mask_follows_slots() {
        let w = Watch::default();
        assert_eq!(w.mask(), 0);
    }

    #[test]
    fn draining_reader_is_edge_triggered_only_without_a_writer() {
        let (inp, out) = (libc::EPOLLIN as u32, libc::EPOLLOUT as u32);
        let edge = (libc::EPOLLET | libc::EPOLLRDHUP | libc::EPOLLPRI) as u32;
        assert_eq!(Watch::mask_of(true, false, true), inp | edge);
        assert_eq!(Watch::mask_of(true, true, true), inp | out);
        assert_eq!(Watch::mask_of(true, false, false), inp);
        assert_eq!(Watch::mask_of(false, true, true), out);
    }

    #[test]
    fn pipe_becomes_readable() {
        pyo3::prepare_freethreaded_python();
        Python::with_gil(|py| {
            let r = Reactor::new().unwrap();
            let mut fds = [0; 2];
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            // A watch needs a handle; use the raw kernel call to test polling.
            r.ctl(libc::EPOLL_CTL_ADD, fds[0], libc::EPOLLIN as u32)
                .unwrap();
            let mut out = Vec::new();
            r.poll(py, Some(0.0), &mut out).unwrap();
            assert!(out.is_empty());
            assert_eq!(unsafe { libc::write(fds[1], b"x".as_ptr().cast(), 1) }, 1);
            r.poll(py, Some(1.0), &mut out).unwrap();
            assert_eq!(
                out,
                vec![(
                    fds[0],
                    Readiness {
                        readable: true,
                        writable: false
                    }
                )]
            );
            // Level-triggered: still readable on the next poll without a read.
            out.clear();
            r.poll(py, Some(0.0), &mut out).unwrap();
            assert_eq!(out.len(), 1);
            unsafe {
                libc::close(fds[0]);
                libc::close(fds[1]);
            }
        });
    }
}
