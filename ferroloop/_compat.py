"""The few private asyncio helpers ferroloop reuses, gathered in one place.

They are small pure functions whose behaviour *is* the spec (message texts,
address fast paths); importing them keeps ferroloop identical to stock
asyncio, and keeping them here means a CPython change touches one file.
"""

import functools
import inspect
import sys

from asyncio import base_events as _base_events
from asyncio import coroutines as _coroutines
from asyncio import events as _events

#: asyncio.Server keeps its connections (for close_clients/abort_clients)
#: from 3.13 on: its _attach/_detach then take the transport.  The native
#: stream transport applies the same rule when it detaches.
SERVER_TRACKS_TRANSPORTS = sys.version_info >= (3, 13)

#: From 3.12 a stream transport flushes its write buffer with sock.sendmsg().
STREAM_SENDMSG = ("sendmsg",) if sys.version_info >= (3, 12) else ()

#: From 3.13 a datagram transport counts 8 bytes of header per queued
#: datagram in get_write_buffer_size (so many tiny datagrams still reach
#: the high-water mark).
DATAGRAM_HEADER_SIZE = 8 if sys.version_info >= (3, 13) else 0

#: From 3.13 a datagram transport sends sendto(b"") as a zero-length
#: datagram; before, it did nothing (not even check the address).
DATAGRAM_SENDS_EMPTY = sys.version_info >= (3, 13)


def check_datagram_socket(sock, socket_module) -> None:
    """Refuse a ``sock=`` that is not a datagram socket, with the check and
    message of this Python's asyncio (3.13 accepts any non-stream socket,
    such as SOCK_RAW, and words the error differently)."""
    if sys.version_info >= (3, 13):
        if sock.type == socket_module.SOCK_STREAM:
            raise ValueError(f"A datagram socket was expected, got {sock!r}")
    elif sock.type != socket_module.SOCK_DGRAM:
        raise ValueError(f"A UDP Socket was expected, got {sock!r}")

#: From 3.14 event loop policies are deprecated (removal planned for 3.16):
#: asyncio.set_event_loop_policy() warns, and the private setter behind it
#: does not.
POLICIES_DEPRECATED = sys.version_info >= (3, 14)
set_event_loop_policy = getattr(
    _events, "_set_event_loop_policy", _events.set_event_loop_policy)

#: The coroutine-function test behind "coroutines cannot be used with
#: call_soon()". From 3.14 the public asyncio.iscoroutinefunction warns
#: (deprecated); asyncio's loops call the private one, and so does ferroloop.
iscoroutinefunction = getattr(
    _coroutines, "_iscoroutinefunction", _coroutines.iscoroutinefunction)

#: A stock loop's base class, whose methods tests patch (see below).
BaseEventLoop = _base_events.BaseEventLoop
#: Stops the loop once the future given to run_until_complete is done.
run_until_complete_cb = _base_events._run_until_complete_cb
#: Numeric-address fast path of asyncio's resolver (no thread hop).
ipaddr_info = _base_events._ipaddr_info
#: Refuses ssl.SSLSocket in the sock_* methods with asyncio's message.
check_ssl_socket = _base_events._check_ssl_socket
#: The handle formatter used in asyncio's slow-callback warning.
format_handle = _base_events._format_handle


def get_running_loop():
    # Looked up at call time: asyncio's own tests swap the C accelerated
    # functions for the pure-Python ones and expect every loop to follow.
    return _events._get_running_loop()


def set_running_loop(loop) -> None:
    _events._set_running_loop(loop)


def logger():
    """asyncio's logger, looked up at call time: test suites patch
    ``asyncio.base_events.logger`` and expect the loop to log through it."""
    return _base_events.logger


#: BaseEventLoop methods a stock loop (``_UnixSelectorEventLoop``) inherits
#: unchanged, and that are not on a hot path: a test's
#: ``mock.patch.object(asyncio.BaseEventLoop, name, ...)`` reaches every
#: stock loop through them, and `follow_base_patches` makes it reach
#: ferroloop's too (asyncssh's and aioice's suites patch create_connection
#: and create_datagram_endpoint this way). call_soon, time, create_task and
#: the other per-wake-up methods are left out: the check costs a dict lookup.
#: getaddrinfo (a benchmark row) does the check inline.
PATCHABLE_BASE_METHODS = (
    "create_connection", "create_server", "create_datagram_endpoint",
    "connect_accepted_socket", "start_tls", "sendfile", "sock_sendfile",
    "getnameinfo", "connect_read_pipe", "connect_write_pipe",
    "subprocess_exec", "subprocess_shell", "run_in_executor",
    "set_default_executor", "shutdown_asyncgens", "shutdown_default_executor",
    "get_exception_handler", "set_exception_handler",
    "default_exception_handler", "call_exception_handler",
    "get_task_factory", "set_task_factory",
)


def follow_base_patches(cls) -> None:
    """Wraps each of `PATCHABLE_BASE_METHODS` on `cls` so that, while
    ``asyncio.BaseEventLoop.<name>`` is replaced, a call on a ferroloop loop
    goes to the replacement, bound as Python would bind it for a subclass
    of BaseEventLoop; otherwise to ferroloop's own method. For a coroutine
    method the replacement is called when the call is awaited (not when it
    is made), which code that awaits the call cannot tell apart."""
    base = vars(BaseEventLoop)  # a live view of the class dict
    for name in PATCHABLE_BASE_METHODS:
        setattr(cls, name, _following(base, name, getattr(cls, name)))


def _following(base, name, own):
    original = base[name]

    def target(loop):
        current = base.get(name, original)
        if current is original:
            return own.__get__(loop, type(loop))
        return bind_like_a_subclass(current, loop)

    # A coroutine method stays one (inspect.iscoroutinefunction, and so
    # mock's autospec, which then builds an AsyncMock: aiohttp's suite).
    if inspect.iscoroutinefunction(own):

        @functools.wraps(own)
        async def method(self, *args, **kwargs):
            return await target(self)(*args, **kwargs)

    else:

        @functools.wraps(own)
        def method(self, *args, **kwargs):
            return target(self)(*args, **kwargs)

    return method


def bind_like_a_subclass(attr, loop):
    """`attr` as ``loop.<name>`` would give it were it found on a base class:
    a function is bound, a Mock (not a descriptor) is not."""
    get = getattr(type(attr), "__get__", None)
    return attr if get is None else get(attr, loop, type(loop))
