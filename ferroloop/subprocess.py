"""Subprocesses: subprocess_exec, subprocess_shell and their transport."""

from __future__ import annotations


class SubprocessMethods:
    """Mixin for `Loop`: subprocess_exec, subprocess_shell."""
