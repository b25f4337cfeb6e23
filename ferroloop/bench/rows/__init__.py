"""Row modules.  Every module here is imported by :func:`load_all`; rows are
ordered by the module's ``ORDER`` constant (default 100), then by definition
order, so a new row module needs no edit anywhere else."""

from __future__ import annotations

import importlib
import pkgutil
import sys

from ..registry import ROWS, Row


def load_all() -> list[Row]:
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")

    def key(r: Row) -> tuple[int, int]:
        mod = sys.modules.get(getattr(r.fn, "__module__", ""), None)
        return (getattr(mod, "ORDER", 100), r.seq)

    return sorted(ROWS.values(), key=key)
