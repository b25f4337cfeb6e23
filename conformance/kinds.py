"""Loop kinds: the event-loop implementations the conformance harness can test.

A kind is (policy class, loop factory) plus one behavioural flag.  Everything is
named by import path ("module:attribute") and resolved lazily, so the parent
process (run.py) never has to import ferroloop: `--loops asyncio` works even
while ferroloop does not build.

To add a kind, add a `LoopKind` to `KINDS`.
"""

from __future__ import annotations

import asyncio
import importlib
from dataclasses import dataclass
from typing import Callable

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def _resolve(path: str) -> object:
    """Import "package.module:attr.sub" and return the attribute."""
    module_name, _, attr_path = path.partition(":")
    obj: object = importlib.import_module(module_name)
    for part in attr_path.split(".") if attr_path else ():
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class LoopKind:
    name: str
    # Policy class to install for the whole worker ("mod:Class"), or None to
    # keep stock asyncio's policy.  Whole-module tests reach the loop under
    # test only through the policy (asyncio.new_event_loop(), asyncio.run(),
    # IsolatedAsyncioTestCase), so this is what makes them test the kind.
    policy: str | None
    # Zero-argument callable returning a new loop ("mod:callable"); used by the
    # generated test classes (create_event_loop()/new_loop()) in modules.py.
    loop_factory: str
    # True for loops that rely on asyncio's Unix child watchers to reap
    # subprocesses (stock asyncio on 3.11).  For such kinds the generated
    # subprocess test classes attach a watcher exactly as the stdlib's own
    # concrete classes do; for False (ferroloop, which reaps its children
    # itself) they don't touch watchers at all.  See modules.py.
    needs_child_watcher: bool
    description: str = ""

    def policy_class(self) -> type[asyncio.AbstractEventLoopPolicy] | None:
        if self.policy is None:
            return None
        cls = _resolve(self.policy)
        assert isinstance(cls, type) and issubclass(cls, asyncio.AbstractEventLoopPolicy), cls
        return cls

    def factory(self) -> LoopFactory:
        factory = _resolve(self.loop_factory)
        assert callable(factory), factory
        return factory


# --- a fake second kind, for developing/testing the harness itself ----------
# "asyncio2" is stock asyncio behind a different policy and loop class, and it
# deliberately declares needs_child_watcher=False so the harness's
# "no watcher" code path (the one ferroloop uses) is exercised too: stock 3.11
# still works there because its policy lazily creates a ThreadedChildWatcher.

class FakeLoop(asyncio.SelectorEventLoop):
    """Stock selector loop under another name."""


class FakePolicy(asyncio.DefaultEventLoopPolicy):
    _loop_factory = FakeLoop


KINDS: dict[str, LoopKind] = {
    kind.name: kind
    for kind in (
        LoopKind(
            name="asyncio",
            policy=None,
            loop_factory="asyncio:SelectorEventLoop",
            needs_child_watcher=True,
            description="stock CPython asyncio (the reference)",
        ),
        LoopKind(
            name="ferroloop",
            policy="ferroloop:EventLoopPolicy",
            loop_factory="ferroloop:new_event_loop",
            needs_child_watcher=False,
            description="ferroloop (the loop under test)",
        ),
        LoopKind(
            name="asyncio2",
            policy="conformance.kinds:FakePolicy",
            loop_factory="conformance.kinds:FakeLoop",
            needs_child_watcher=False,
            description="fake kind for testing the harness: stock asyncio, no child watcher setup",
        ),
    )
}

# The kind everything is compared against.
BASELINE = "asyncio"


def install(kind: LoopKind) -> None:
    """Make `kind` the process-wide default loop.

    Every test_asyncio module's tearDownModule() calls
    asyncio.set_event_loop_policy(None), which re-instantiates
    asyncio.DefaultEventLoopPolicy lazily (events._init_event_loop_policy does
    `from . import DefaultEventLoopPolicy`).  Installing an instance alone
    would therefore silently revert to stock asyncio after the first module
    teardown; rebinding the DefaultEventLoopPolicy names keeps the kind in
    place for good.  Tests that construct asyncio.DefaultEventLoopPolicy()
    themselves (test_ssl, PolicyTests) get the kind's policy too, as they
    would for a user who installed it.
    """
    cls = kind.policy_class()
    if cls is None:
        return
    import asyncio.events
    import asyncio.unix_events

    asyncio.DefaultEventLoopPolicy = cls  # type: ignore[assignment]
    asyncio.unix_events.DefaultEventLoopPolicy = cls  # type: ignore[assignment]
    if hasattr(asyncio.events, "DefaultEventLoopPolicy"):  # not in 3.11; future-proofing
        asyncio.events.DefaultEventLoopPolicy = cls
    asyncio.set_event_loop_policy(cls())


def preflight(kind: LoopKind) -> None:
    """Raise if the kind can't even make and run a loop (e.g. not built)."""
    cls = kind.policy_class()
    loop = kind.factory()()
    try:
        assert isinstance(loop, asyncio.AbstractEventLoop), type(loop)
        assert loop.run_until_complete(asyncio.sleep(0, "ok")) == "ok"
    finally:
        loop.close()
    if cls is not None:
        policy_loop = cls().new_event_loop()
        policy_loop.close()
