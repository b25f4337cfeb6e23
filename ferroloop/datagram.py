"""Datagram endpoints: create_datagram_endpoint (UDP and Unix datagram)."""

from __future__ import annotations


class DatagramMethods:
    """Mixin for `Loop`: create_datagram_endpoint."""
