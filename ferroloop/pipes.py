"""Pipe transports: connect_read_pipe and connect_write_pipe."""

from __future__ import annotations


class PipeMethods:
    """Mixin for `Loop`: connect_read_pipe, connect_write_pipe."""
