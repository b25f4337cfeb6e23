//! ferroloop's native engine: asyncio's event loop in Rust.
//!
//! One module per concept: `handles` (scheduled callbacks), `ready_queue`,
//! `timers` (heap and clock), `reactor` (epoll), `self_pipe` (wake-ups),
//! `signals`, `detach` (the GIL around waits and callbacks, safe at
//! interpreter exit), and `event_loop` (the turn that ties them together).

use pyo3::prelude::*;

pub mod datagram_transport;
pub mod detach;
pub mod event_loop;
pub mod fast_entry;
pub mod gil_cell;
pub mod handles;
pub mod os_errors;
pub mod pipes;
pub mod process;
pub mod reactor;
pub mod read_buffer;
pub mod ready_queue;
pub mod self_pipe;
pub mod signals;
pub mod stream_transport;
pub mod timers;

#[pymodule]
fn _ferroloop(m: &Bound<'_, PyModule>) -> PyResult<()> {
    timers::init_clock(m.py())?;
    m.add_class::<event_loop::LoopCore>()?;
    m.add_class::<handles::Handle>()?;
    m.add_class::<handles::TimerHandle>()?;
    m.add_class::<datagram_transport::DatagramCore>()?;
    m.add_class::<process::ChildWatch>()?;
    m.add_class::<pipes::ReadPipeCore>()?;
    m.add_class::<pipes::WritePipeCore>()?;
    m.add_class::<stream_transport::StreamTransport>()?;
    m.add_function(wrap_pyfunction!(fast_entry::_fast_methods, m)?)?;
    Ok(())
}
