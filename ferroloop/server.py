"""`Server`: what create_server/create_unix_server return.

It is asyncio's own `Server` (`asyncio.base_events.Server`): the interface
(`sockets` tuple, `is_serving`, `start_serving`, `serve_forever`, `close`,
`wait_closed`, `get_loop`, async context manager, `_ssl_context`) is only
loop-generic code over the loop's `_start_serving`/`_stop_serving` hooks,
which ferroloop provides (see `ferroloop/network.py`)."""

from asyncio.base_events import Server

__all__ = ["Server"]
