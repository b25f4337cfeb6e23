"""`EventLoopPolicy`: asyncio's default Unix policy, making ferroloop loops."""

from __future__ import annotations

import asyncio

from .loop import Loop


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """The stock policy (child watchers and all), with ferroloop loops."""

    _loop_factory = Loop

    def new_event_loop(self) -> Loop:
        return Loop()

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__}>"
