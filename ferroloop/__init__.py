"""ferroloop: asyncio's event loop, written in Rust.

Switch an asyncio program to it with one line::

    ferroloop.install()                       # the default policy from now on
    ferroloop.run(main())                     # like asyncio.run
    asyncio.Runner(loop_factory=ferroloop.new_event_loop)

or run a script unchanged with ``python -m ferroloop script.py``.
"""

from __future__ import annotations

import asyncio
import warnings
from typing import Any, Coroutine, TypeVar

from . import _compat
from ._ferroloop import Handle, TimerHandle
from .loop import Loop
from .policy import EventLoopPolicy

__all__ = ["Loop", "Handle", "TimerHandle", "EventLoopPolicy", "new_event_loop", "install", "run"]
__version__ = "0.1.0"

_T = TypeVar("_T")


def new_event_loop() -> Loop:
    """Return a new ferroloop event loop."""
    return Loop()


def install() -> None:
    """Make ferroloop the loop asyncio creates from now on (sets the policy).

    Event loop policies are deprecated from Python 3.14 and go in 3.16; there
    this warns, as `asyncio.set_event_loop_policy` does. `ferroloop.run()`
    and `asyncio.Runner(loop_factory=ferroloop.new_event_loop)` need no
    policy."""
    if _compat.POLICIES_DEPRECATED:
        warnings.warn(
            "ferroloop.install() sets an event loop policy, and policies are "
            "deprecated since Python 3.14 (to be removed in 3.16); use "
            "ferroloop.run(main()) or "
            "asyncio.Runner(loop_factory=ferroloop.new_event_loop) instead",
            DeprecationWarning,
            stacklevel=2,
        )
    _install()


def _install() -> None:
    # `python -m ferroloop` too: the launcher swaps the loop of a program
    # that never asked for one, so it has nothing to warn its user about.
    _compat.set_event_loop_policy(EventLoopPolicy())


def run(main: Coroutine[Any, Any, _T], *, debug: bool | None = None) -> _T:
    """Run a coroutine on a new ferroloop loop, as `asyncio.run` does."""
    if asyncio.events._get_running_loop() is not None:
        # Checked before a Runner (and its loop) exists, as asyncio.run does.
        raise RuntimeError("ferroloop.run() cannot be called from a running event loop")
    with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
        return runner.run(main)
