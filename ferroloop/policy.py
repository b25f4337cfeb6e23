"""`EventLoopPolicy`: asyncio's default Unix policy, making ferroloop loops."""

from __future__ import annotations

from asyncio import unix_events

from .loop import Loop


# The class behind asyncio.DefaultEventLoopPolicy, by the name it has on
# every version: from 3.14 reading that public alias warns (policies are
# deprecated there), and importing ferroloop must not.
class EventLoopPolicy(unix_events._UnixDefaultEventLoopPolicy):
    """The stock policy (child watchers and all), with ferroloop loops."""

    _loop_factory = Loop

    def new_event_loop(self) -> Loop:
        return Loop()

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__}>"
