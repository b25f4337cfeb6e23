"""Event loop implementations under test, imported lazily.

A loop whose import or factory fails is reported as unavailable (with the
reason) instead of aborting the run: during development ferroloop's extension
may not be built yet, and uvloop/rloop are optional."""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Factory = Callable[[], asyncio.AbstractEventLoop]

KNOWN = ("asyncio", "ferroloop", "uvloop", "rloop")
BASELINE = "asyncio"  # chart normalisation
SUBJECT = "ferroloop"  # the ratio column compares this one to the best other


@dataclass
class LoopSpec:
    name: str
    factory: Factory | None = None
    version: str = "?"
    loop_class: str = "?"
    note: str = ""  # why unavailable, or where the build came from
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def available(self) -> bool:
        return self.factory is not None


def _dist_version(mod: object, dist: str) -> str:
    v = getattr(mod, "__version__", None)
    if isinstance(v, str):
        return v
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _ferroloop_build_note(mod: object) -> str:
    # Name the exact extension file and its mtime, so a table can be tied to
    # the build it measured (stale .so files are an easy mistake).
    ext = getattr(mod, "_ferroloop", None)
    path = getattr(ext, "__file__", None)
    if path is None:
        try:
            path = importlib.import_module("ferroloop._ferroloop").__file__
        except Exception:
            return ""
    if not path:
        return ""
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(path)))
    return f"{os.path.relpath(path)} built {stamp}"


def _resolve(name: str) -> LoopSpec:
    spec = LoopSpec(name)
    if name == "asyncio":
        import sys

        spec.factory = asyncio.new_event_loop
        spec.version = "stdlib " + sys.version.split()[0]
        return spec
    mod = importlib.import_module(name)
    new = getattr(mod, "new_event_loop", None)
    if new is None:
        raise ImportError(f"{name} has no new_event_loop() (extension not built?)")
    spec.factory = new
    spec.version = _dist_version(mod, name)
    if name == "ferroloop":
        spec.note = _ferroloop_build_note(mod)
    return spec


def load_loops(names: list[str]) -> list[LoopSpec]:
    out: list[LoopSpec] = []
    for name in names:
        try:
            spec = _resolve(name)
            # Smoke-test the factory once so a broken build is reported up
            # front rather than as an error in every cell.
            assert spec.factory is not None
            loop = spec.factory()
            try:
                spec.loop_class = f"{type(loop).__module__}.{type(loop).__qualname__}"
            finally:
                loop.close()
        except Exception as e:  # ImportError, missing symbol, factory crash ...
            spec = LoopSpec(name, note=f"unavailable: {type(e).__name__}: {e}")
        out.append(spec)
    return out
