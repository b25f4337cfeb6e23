"""connect_read_pipe / connect_write_pipe: pipes, FIFOs, sockets, PTYs;
EOF, flow control and connection_lost."""

import asyncio
import errno
import os
import pty
import socket
import tempfile

import pytest

from conftest import run


class ReadProto(asyncio.Protocol):
    def __init__(self, loop):
        self.events = []
        self.data = bytearray()
        self.transport = None
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def data_received(self, data):
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        self.data += data

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)


class WriteProto(asyncio.BaseProtocol):
    def __init__(self, loop):
        self.events = []
        self.transport = None
        self.lost = loop.create_future()
        self.resumed = None
        self.loop = loop

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def pause_writing(self):
        self.events.append("pause")
        self.resumed = self.loop.create_future()

    def resume_writing(self):
        self.events.append("resume")
        self.resumed.set_result(None)

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)


def test_read_pipe_data_eof_lost(loop):
    r, w = os.pipe()
    rf = open(r, "rb", 0)

    async def main():
        t, p = await loop.connect_read_pipe(lambda: ReadProto(loop), rf)
        assert isinstance(t, asyncio.ReadTransport)
        assert t.get_extra_info("pipe") is rf
        assert t.is_reading()
        os.write(w, b"hello ")
        await asyncio.sleep(0.01)
        os.write(w, b"world")
        os.close(w)
        assert await p.lost is None
        assert bytes(p.data) == b"hello world"
        assert p.events == ["made", "data", "eof", "lost"]
        assert t.is_closing()
        assert rf.closed

    run(loop, main())


def test_read_pipe_pause_resume(loop):
    r, w = os.pipe()
    rf = open(r, "rb", 0)

    async def main():
        t, p = await loop.connect_read_pipe(lambda: ReadProto(loop), rf)
        t.pause_reading()
        assert not t.is_reading()
        os.write(w, b"x" * 100)
        await asyncio.sleep(0.02)
        assert not p.data
        t.resume_reading()
        await asyncio.sleep(0.02)
        assert bytes(p.data) == b"x" * 100
        t.close()
        assert await p.lost is None
        assert "eof" not in p.events
        os.close(w)

    run(loop, main())


def test_read_pipe_rejects_regular_file(loop):
    async def main():
        with tempfile.TemporaryFile() as f:
            with pytest.raises(ValueError, match="Pipe transport is for pipes/sockets only."):
                await loop.connect_read_pipe(lambda: ReadProto(loop), f)
            with pytest.raises(ValueError, match="Pipe transport is only for pipes"):
                await loop.connect_write_pipe(lambda: WriteProto(loop), f)

    run(loop, main())


def test_write_pipe_flow_control_and_big_write(loop):
    r, w = os.pipe()
    wf = open(w, "wb", 0)
    total = 4 * 1024 * 1024

    async def main():
        t, p = await loop.connect_write_pipe(lambda: WriteProto(loop), wf)
        assert isinstance(t, asyncio.WriteTransport)
        assert t.can_write_eof()
        t.set_write_buffer_limits(high=64 * 1024)
        t.write(b"a" * total)
        assert "pause" in p.events
        assert t.get_write_buffer_size() > 0
        got = 0
        rfut = loop.run_in_executor(None, _read_all, r)
        await p.resumed
        t.close()
        assert await p.lost is None
        got = await rfut
        assert got == total
        assert p.events == ["made", "pause", "resume", "lost"]
        assert t.get_write_buffer_size() == 0

    run(loop, main(), timeout=10)
    os.close(r)


def _read_all(fd):
    n = 0
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return n
        n += len(chunk)


def test_write_pipe_reader_closes(loop):
    r, w = os.pipe()
    wf = open(w, "wb", 0)

    async def main():
        t, p = await loop.connect_write_pipe(lambda: WriteProto(loop), wf)
        os.close(r)
        # The peer's close is noticed without writing.
        assert await asyncio.wait_for(p.lost, 2) is None
        assert t.is_closing()
        t.write(b"ignored")  # after close: silently dropped

    run(loop, main())


def test_write_pipe_broken_with_buffered_data(loop):
    r, w = os.pipe()
    wf = open(w, "wb", 0)

    async def main():
        t, p = await loop.connect_write_pipe(lambda: WriteProto(loop), wf)
        t.write(b"x" * (1 << 20))
        assert t.get_write_buffer_size() > 0
        os.close(r)
        exc = await asyncio.wait_for(p.lost, 2)
        assert isinstance(exc, BrokenPipeError)

    run(loop, main())


def test_write_eof_and_abort(loop):
    r, w = os.pipe()
    wf = open(w, "wb", 0)

    async def main():
        t, p = await loop.connect_write_pipe(lambda: WriteProto(loop), wf)
        t.write(b"data")
        t.write_eof()
        assert t.is_closing()
        assert await p.lost is None
        assert os.read(r, 100) == b"data"
        assert os.read(r, 100) == b""

    run(loop, main())
    os.close(r)

    r, w = os.pipe()
    wf = open(w, "wb", 0)

    async def main2():
        t, p = await loop.connect_write_pipe(lambda: WriteProto(loop), wf)
        t.write(b"x" * (1 << 20))
        t.abort()
        assert await p.lost is None
        assert t.get_write_buffer_size() == 0

    run(loop, main2())
    os.close(r)


def test_socket_as_pipe(loop):
    a, b = socket.socketpair()

    async def main():
        t, p = await loop.connect_read_pipe(lambda: ReadProto(loop), a)
        b.sendall(b"over a socket")
        b.close()
        assert await p.lost is None
        assert bytes(p.data) == b"over a socket"

    run(loop, main())


def test_fifo(loop):
    async def main():
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "fifo")
            os.mkfifo(path)
            rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            wfd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            rt, rp = await loop.connect_read_pipe(lambda: ReadProto(loop), open(rfd, "rb", 0))
            wt, wp = await loop.connect_write_pipe(lambda: WriteProto(loop), open(wfd, "wb", 0))
            wt.write(b"through a fifo")
            wt.close()
            assert await wp.lost is None
            assert await rp.lost is None
            assert bytes(rp.data) == b"through a fifo"

    run(loop, main())


def test_pty_output_eio_is_eof(loop):
    master, slave = pty.openpty()
    mf = open(master, "rb", 0)

    async def main():
        t, p = await loop.connect_read_pipe(lambda: ReadProto(loop), mf)
        os.write(slave, b"from the pty\n")
        await asyncio.sleep(0.05)
        os.close(slave)
        exc = await asyncio.wait_for(p.lost, 2)
        # Linux reports the hang-up of the slave side as EIO: the transport
        # ends quietly with that error (no exception handler call).
        assert exc is None or (isinstance(exc, OSError) and exc.errno == errno.EIO)
        assert b"from the pty" in bytes(p.data)

    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    run(loop, main())
    assert contexts == []


def test_pty_write(loop):
    master, slave = pty.openpty()
    sf = open(slave, "wb", 0)

    async def main():
        t, p = await loop.connect_write_pipe(lambda: WriteProto(loop), sf)
        t.write(b"to the pty\n")
        await asyncio.sleep(0.02)
        data = os.read(master, 100)
        assert b"to the pty" in data
        t.close()
        assert await p.lost is None

    run(loop, main())
    os.close(master)


def test_unclosed_transport_warns(loop):
    r, w = os.pipe()
    rf = open(r, "rb", 0)

    async def main():
        t, p = await loop.connect_read_pipe(lambda: ReadProto(loop), rf)
        return t

    t = run(loop, main())
    loop.close()
    assert "open" in repr(t)
    with pytest.warns(ResourceWarning, match="unclosed transport"):
        t.__del__()
    t._pipe = None
    os.close(w)


def test_write_pipe_data_types(loop):
    r, w = os.pipe()
    wf = open(w, "wb", 0)

    async def main():
        t, p = await loop.connect_write_pipe(lambda: WriteProto(loop), wf)
        t.write(b"bytes,")
        t.write(bytearray(b"bytearray,"))
        t.write(memoryview(b"memoryview"))
        t.write(b"")
        with pytest.raises(AssertionError):
            t.write("text")
        t.close()
        await p.lost
        assert os.read(r, 100) == b"bytes,bytearray,memoryview"

    run(loop, main())
    os.close(r)


def test_set_protocol_switches_reads(loop):
    r, w = os.pipe()
    rf = open(r, "rb", 0)

    async def main():
        t, p = await loop.connect_read_pipe(lambda: ReadProto(loop), rf)
        p2 = ReadProto(loop)
        t.set_protocol(p2)
        assert t.get_protocol() is p2
        os.write(w, b"to the new protocol")
        os.close(w)
        await p2.lost
        assert bytes(p2.data) == b"to the new protocol" and not p.data

    run(loop, main())


def test_read_pipe_kept_alive_while_reading(loop):
    import gc

    r, w = os.pipe()
    proto = ReadProto(loop)

    async def main():
        t, _ = await loop.connect_read_pipe(lambda: proto, open(r, "rb", 0))
        proto.transport = None
        del t
        await asyncio.sleep(0)
        gc.collect()
        os.write(w, b"still read")
        os.close(w)
        return await asyncio.wait_for(proto.lost, 2)

    assert run(loop, main()) is None
    assert bytes(proto.data) == b"still read"
