"""The table of CPython test_asyncio modules the harness runs, and how.

The modules are always imported from the interpreter's own `test` package
(test.test_asyncio.<name>); nothing is copied into this repository.

Two ways to run a module:

* whole module: every TestCase class in it, unchanged.  The kind under test is
  reached through the event loop policy that the worker installs
  (asyncio.new_event_loop(), asyncio.run(), IsolatedAsyncioTestCase...).
  Classes that exercise CPython's private pure-Python classes (TestLoop,
  HandleTests, the Python Future...) run identically for every kind; that is
  expected, they must simply pass everywhere.

* generated classes: some modules hard-code the loop in concrete classes
  (`SelectorEventLoop(...)` in create_event_loop()/new_loop()).  For those,
  `replaces` names the loop-generic mixins: every concrete class of the module
  that inherits one of them is dropped, and `generate` builds our own classes
  from the same mixins with the factory returning the kind's loop.  The SAME
  generated classes (same names, same tests) are built for every kind -- for
  asyncio the factory is asyncio.SelectorEventLoop (epoll) -- so counts are
  comparable.  Only the default selector is covered; the stdlib also runs
  poll/select variants of the same tests, which say nothing about ferroloop.

Generated classes get `__module__` = the test module, so their test ids read
like the module's own ("test_events.EventLoopTests.test_foo") and the
module's setUpModule/tearDownModule fixtures still apply.

To add a module: add a ModuleSpec to MODULES (staged=True keeps it out of the
default run until it is ready).
"""

from __future__ import annotations

import importlib
import sys
import unittest
from dataclasses import dataclass
from types import ModuleType
from typing import Callable

from conformance.kinds import LoopFactory, LoopKind

PACKAGE = "test.test_asyncio"

GenerateFn = Callable[[ModuleType, LoopKind, LoopFactory], list[type[unittest.TestCase]]]


@dataclass(frozen=True)
class ModuleSpec:
    name: str  # e.g. "test_events"; imported as test.test_asyncio.<name>
    # Names of loop-generic mixins in the module; concrete subclasses of any of
    # them are NOT run (they are replaced by `generate`'s classes).
    replaces: tuple[str, ...] = ()
    generate: GenerateFn | None = None
    # Staged modules are selectable by name (or --all) but not in the default run.
    staged: bool = False
    # The first CPython with this module; older interpreters skip it.
    since: tuple[int, int] = (3, 11)
    notes: str = ""

    @property
    def available(self) -> bool:
        return sys.version_info[:2] >= self.since

    def import_module(self) -> ModuleType:
        return importlib.import_module(f"{PACKAGE}.{self.name}")


# --------------------------------------------------------------------------
# helpers for building generated classes


def _make_class(
    mod: ModuleType,
    name: str,
    bases: tuple[type, ...],
    attrs: dict[str, object] | None = None,
) -> type[unittest.TestCase]:
    namespace: dict[str, object] = {"__module__": mod.__name__, "__qualname__": name}
    namespace.update(attrs or {})
    cls = type(name, bases, namespace)
    assert issubclass(cls, unittest.TestCase), bases
    return cls


def _factory_method(factory: LoopFactory) -> Callable[[object], object]:
    """A create_event_loop()/new_loop() method returning a fresh kind loop."""

    def make_loop(self: object) -> object:
        return factory()

    make_loop.__name__ = "make_loop_for_conformance"
    return make_loop


class _SubprocessLoopNoWatcher:
    """test_subprocess without a child watcher.

    Mirrors test_subprocess.SubprocessWatcherMixin.setUp minus the watcher
    lines: for a loop that reaps its own children (ferroloop), attaching an
    asyncio child watcher would be wrong (SafeChildWatcher steals SIGCHLD).
    """

    _conformance_loop_factory: LoopFactory

    def setUp(self) -> None:
        super().setUp()  # type: ignore[misc]
        self.loop = type(self)._conformance_loop_factory()
        self.set_event_loop(self.loop)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------
# per-module generators
#
# SUBPROCESS / CHILD WATCHER POLICY (the one place to change it):
# kinds with needs_child_watcher=True (stock asyncio) get exactly the stdlib's
# watcher setup -- test_events.UnixEventLoopTestsMixin (SafeChildWatcher,
# installed via asyncio.set_child_watcher) and, for test_subprocess,
# SubprocessWatcherMixin with ThreadedChildWatcher (3.11's default watcher;
# the stdlib additionally runs the Safe/Fast/Pidfd variants, which only test
# asyncio's watchers).  Kinds with needs_child_watcher=False get the plain
# mixins: no watcher is created, attached or installed.


def _gen_events(mod: ModuleType, kind: LoopKind, factory: LoopFactory) -> list[type[unittest.TestCase]]:
    # Concrete stdlib classes: {Select,Poll,EPoll,Kqueue}EventLoopTests =
    # (UnixEventLoopTestsMixin, SubprocessTestsMixin, test_utils.TestCase).
    # 3.14 has no watchers, and its test_events no watcher mixin.
    watcher_mixin = getattr(mod, "UnixEventLoopTestsMixin", mod.EventLoopTestsMixin)
    loop_mixin = watcher_mixin if kind.needs_child_watcher else mod.EventLoopTestsMixin
    return [
        _make_class(
            mod,
            "EventLoopTests",
            (loop_mixin, mod.SubprocessTestsMixin, mod.test_utils.TestCase),
            {"create_event_loop": _factory_method(factory)},
        )
    ]


def _gen_sock_lowlevel(mod: ModuleType, kind: LoopKind, factory: LoopFactory) -> list[type[unittest.TestCase]]:
    return [
        _make_class(
            mod,
            "SockTests",
            (mod.BaseSockTestsMixin, mod.test_utils.TestCase),
            {"create_event_loop": _factory_method(factory)},
        )
    ]


def _gen_sendfile(mod: ModuleType, kind: LoopKind, factory: LoopFactory) -> list[type[unittest.TestCase]]:
    # SendfileTestsBase = SendfileMixin + SockSendfileMixin (both on SendfileBase).
    return [
        _make_class(
            mod,
            "SendfileTests",
            (mod.SendfileTestsBase, mod.test_utils.TestCase),
            {"create_event_loop": _factory_method(factory)},
        )
    ]


def _gen_server(mod: ModuleType, kind: LoopKind, factory: LoopFactory) -> list[type[unittest.TestCase]]:
    # SelectorStartServerTests adds a loop-generic test of its own
    # (test_start_unix_server_1) on top of BaseStartServer, so subclass the
    # concrete class and override only its loop factory.
    return [
        _make_class(
            mod,
            "StartServerTests",
            (mod.SelectorStartServerTests,),
            {"new_loop": _factory_method(factory)},
        )
    ]


def _gen_buffered_proto(mod: ModuleType, kind: LoopKind, factory: LoopFactory) -> list[type[unittest.TestCase]]:
    return [
        _make_class(
            mod,
            "BufferedProtocolTests",
            (mod.BaseTestBufferedProtocol, mod.unittest.TestCase),
            {"new_loop": _factory_method(factory)},
        )
    ]


def _gen_sslproto(mod: ModuleType, kind: LoopKind, factory: LoopFactory) -> list[type[unittest.TestCase]]:
    cls = _make_class(
        mod,
        "StartTLSTests",
        (mod.BaseStartTLS, mod.unittest.TestCase),
        {"new_loop": _factory_method(factory)},
    )
    # Same decorator as the stdlib's SelectorStartTLSTests.
    return [unittest.skipIf(mod.ssl is None, "No ssl module")(cls)]


def _gen_subprocess(mod: ModuleType, kind: LoopKind, factory: LoopFactory) -> list[type[unittest.TestCase]]:
    if kind.needs_child_watcher:
        # The stdlib's SubprocessThreadedWatcherTests itself (its loop comes
        # from policy.new_event_loop(), i.e. the installed kind); how it
        # names its watcher changed in 3.12 (Watcher -> _get_watcher).
        return [
            _make_class(mod, "SubprocessTests", (mod.SubprocessThreadedWatcherTests,))
        ]
    return [
        _make_class(
            mod,
            "SubprocessTests",
            (_SubprocessLoopNoWatcher, mod.SubprocessMixin, mod.test_utils.TestCase),
            {"_conformance_loop_factory": staticmethod(factory)},
        )
    ]


# --------------------------------------------------------------------------
# the table

_SPECS: tuple[ModuleSpec, ...] = (
    ModuleSpec("test_tasks"),
    ModuleSpec("test_futures"),
    ModuleSpec("test_futures2"),
    ModuleSpec("test_locks"),
    ModuleSpec("test_queues"),
    ModuleSpec("test_taskgroups"),
    ModuleSpec("test_timeouts"),
    ModuleSpec("test_runners"),
    ModuleSpec("test_waitfor"),
    ModuleSpec("test_pep492"),
    ModuleSpec("test_context"),
    ModuleSpec("test_threads"),
    ModuleSpec("test_eager_task_factory", since=(3, 12),
               notes="eager tasks (3.12+): asyncio.eager_task_factory on the kind's loop"),
    ModuleSpec(
        "test_sock_lowlevel",
        replaces=("BaseSockTestsMixin",),
        generate=_gen_sock_lowlevel,
    ),
    ModuleSpec(
        "test_events",
        replaces=("EventLoopTestsMixin",),
        generate=_gen_events,
        notes="GetEventLoopTestsMixin classes (TestPy/CGetEventLoop) stay: they use "
        "asyncio.new_event_loop() (the policy) and asyncio.set_child_watcher()",
    ),
    ModuleSpec("test_streams",
               notes="test_read_all_from_pipe_reader installs a SafeChildWatcher via the policy"),
    ModuleSpec(
        "test_server",
        replaces=("BaseStartServer",),
        generate=_gen_server,
    ),
    ModuleSpec(
        "test_sendfile",
        replaces=("SendfileBase",),
        generate=_gen_sendfile,
    ),
    ModuleSpec(
        "test_buffered_proto",
        replaces=("BaseTestBufferedProtocol",),
        generate=_gen_buffered_proto,
    ),
    ModuleSpec("test_ssl"),
    ModuleSpec(
        "test_sslproto",
        replaces=("BaseStartTLS",),
        generate=_gen_sslproto,
        notes="SslProtoHandshakeTests run as-is (CPython's SSLProtocol on the kind's loop)",
    ),
    # ---- staged: selectable by name or --all, not in the default run yet ----
    ModuleSpec(
        "test_subprocess",
        replaces=("SubprocessMixin",),
        generate=_gen_subprocess,
        notes="GenericWatcherTests stays: it calls asyncio.set_child_watcher() on the policy",
    ),
)

MODULES: dict[str, ModuleSpec] = {spec.name: spec for spec in _SPECS}


def default_modules() -> list[str]:
    return [spec.name for spec in _SPECS if not spec.staged and spec.available]


def all_modules() -> list[str]:
    return [spec.name for spec in _SPECS if spec.available]


def lookup(name: str) -> ModuleSpec:
    """Accept "test_locks", "locks" or "test.test_asyncio.test_locks"."""
    short = name.rsplit(".", 1)[-1]
    if not short.startswith("test_"):
        short = "test_" + short
    try:
        spec = MODULES[short]
    except KeyError:
        raise KeyError(f"unknown module {name!r}; configured: {', '.join(all_modules())}") from None
    if not spec.available:
        since = ".".join(map(str, spec.since))
        raise KeyError(f"{spec.name} is new in Python {since}; this is {sys.version.split()[0]}")
    return spec


def load_test_classes(
    spec: ModuleSpec, mod: ModuleType, kind: LoopKind, factory: LoopFactory
) -> list[type[unittest.TestCase]]:
    """The TestCase classes to run for `spec` and `kind`, in a stable order.

    Mirrors unittest.TestLoader.loadTestsFromModule (every TestCase subclass
    found in the module namespace, sorted by name), minus the concrete classes
    replaced by generated ones, plus the generated ones at the end.
    """
    replaced = tuple(getattr(mod, mixin) for mixin in spec.replaces)
    classes: list[type[unittest.TestCase]] = []
    seen: set[type] = set()
    for attr in sorted(dir(mod)):
        obj = getattr(mod, attr)
        if not (isinstance(obj, type) and issubclass(obj, unittest.TestCase)) or obj in seen:
            continue
        seen.add(obj)
        if replaced and issubclass(obj, replaced):
            continue
        classes.append(obj)
    if spec.generate is not None:
        classes.extend(spec.generate(mod, kind, factory))
    return classes
