"""Stream connections and servers: create_connection, create_server, the
Unix-socket variants, connect_accepted_socket, sendfile and start_tls.

Set-up (resolution, socket options, TLS wrapping) is here in Python; the byte
path is the native stream transport."""

from __future__ import annotations


class NetworkMethods:
    """Mixin for `Loop`: TCP and Unix stream endpoints."""
