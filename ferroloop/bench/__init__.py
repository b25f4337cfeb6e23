"""Benchmark harness for ferroloop: ``python -m ferroloop.bench --help``.

Rows live in ``ferroloop/bench/rows/*.py``; each is one function decorated
with :func:`row` (see ``rows/callbacks.py`` for examples).  Any module in that
package is discovered automatically.
"""

from .registry import ROWS, CheckFailed, Sample, Skip, check, row

__all__ = ["ROWS", "CheckFailed", "Sample", "Skip", "check", "row"]
