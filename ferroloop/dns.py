"""Name resolution (`loop.getaddrinfo`, `loop.getnameinfo`) that never blocks
the loop: numeric hosts are answered in place (no thread hop, nothing to look
up); names go to the default executor, as asyncio does."""

from __future__ import annotations

import socket

from . import _compat

_NUMERIC = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV

#: BaseEventLoop's getaddrinfo: while a test has replaced it, calls go to
#: the replacement (see `_compat.follow_base_patches`; checked inline here,
#: where an extra coroutine would cost a third of a numeric lookup).
_BaseEventLoop = _compat.BaseEventLoop
_BASE_GETADDRINFO = _BaseEventLoop.getaddrinfo

#: The socket module's own getaddrinfo. Only it may be called in place for a
#: numeric host: a replacement (a test's fake resolver, a library's patch)
#: is called in the executor as asyncio calls it, and its answers are never
#: remembered.
_SOCKET_GETADDRINFO = socket.getaddrinfo

# Numeric answers a loop remembers, at most this many (then it starts over).
_NUMERIC_CACHE_SIZE = 1024


def _numeric_port(port) -> bool:
    if port is None or isinstance(port, int):
        return True
    if isinstance(port, (bytes, str)):
        try:
            int(port)
        except ValueError:
            return False
        return True
    return False


class ResolverMethods:
    """Mixin for `Loop`: getaddrinfo, getnameinfo and the address fast path."""

    #: (host, port, type(port), family, type, proto, flags) -> the answer, for
    #: numeric hosts only: they need no lookup, so the answer never changes.
    #: Per loop (set up by `Loop.__init__`), so nothing is shared between
    #: loops or threads.
    _numeric_answers: dict

    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
        if _BaseEventLoop.getaddrinfo is not _BASE_GETADDRINFO:
            patched = _compat.bind_like_a_subclass(_BaseEventLoop.__dict__["getaddrinfo"], self)
            return await patched(host, port, family=family, type=type, proto=proto, flags=flags)
        self._check_closed()
        if socket.getaddrinfo is _SOCKET_GETADDRINFO:
            key = (host, port, port.__class__, family, type, proto, flags)
            try:
                return list(self._numeric_answers[key])
            except (KeyError, TypeError):
                pass
            if _numeric_port(port) and host is not None:
                try:
                    # Cannot block: AI_NUMERICHOST refuses anything needing DNS.
                    infos = _SOCKET_GETADDRINFO(host, port, family, type, proto, flags | _NUMERIC)
                except (socket.gaierror, UnicodeError):
                    pass  # not numeric after all: resolve in a thread below
                else:
                    # A numeric answer depends on nothing but its arguments
                    # (save AI_ADDRCONFIG, which looks at the interfaces).
                    if not flags & socket.AI_ADDRCONFIG:
                        answers = self._numeric_answers
                        if len(answers) >= _NUMERIC_CACHE_SIZE:
                            answers.clear()
                        try:
                            answers[key] = tuple(infos)
                        except TypeError:
                            pass
                    return infos
        getaddr_func = socket.getaddrinfo
        if self.get_debug():
            getaddr_func = self._getaddrinfo_debug
        return await self.run_in_executor(
            None, getaddr_func, host, port, family, type, proto, flags
        )

    def _getaddrinfo_debug(self, host, port, family, type, proto, flags):
        import time

        msg = [f"{host}:{port!r}"]
        if family:
            msg.append(f"family={family!r}")
        if type:
            msg.append(f"type={type!r}")
        if proto:
            msg.append(f"proto={proto!r}")
        if flags:
            msg.append(f"flags={flags!r}")
        msg = ", ".join(msg)
        logger = _compat.logger()
        logger.debug("Get address info %s", msg)
        t0 = time.monotonic()
        addrinfo = socket.getaddrinfo(host, port, family, type, proto, flags)
        dt = time.monotonic() - t0
        msg = f"Getting address info {msg} took {dt * 1e3:.3f}ms: {addrinfo!r}"
        if dt >= self.slow_callback_duration:
            logger.info(msg)
        else:
            logger.debug(msg)
        return addrinfo

    async def getnameinfo(self, sockaddr, flags=0):
        return await self.run_in_executor(None, socket.getnameinfo, sockaddr, flags)

    async def _ensure_resolved(self, address, *, family=0, type=socket.SOCK_STREAM, proto=0, flags=0):
        host, port = address[:2]
        info = _compat.ipaddr_info(host, port, family, type, proto, *address[2:])
        if info is not None:
            return [info]
        return await self.getaddrinfo(host, port, family=family, type=type, proto=proto, flags=flags)
