"""`python -m ferroloop script.py [args...]`: run an asyncio program on
ferroloop without changing it (`-m module` works too).

The script sees what `python script.py` would give it: `sys.argv`,
`__name__ == "__main__"`, its own directory first on `sys.path`, and the
same exit status, error messages and tracebacks. Exceptions are not caught
here: they leave through the interpreter as they would from the script, so
`sys.excepthook` (the script's own, if it sets one) prints them, SystemExit
sets the status, and an uncaught KeyboardInterrupt ends the process by
SIGINT. Only the launcher's own frames are cut from the traceback."""

from __future__ import annotations

import builtins
import importlib.machinery
import io
import os
import runpy
import sys
import types
import zipfile
from types import TracebackType

import ferroloop

USAGE = "usage: python -m ferroloop script.py [args...] | -m module [args...]"

_THIS_FILE = os.path.abspath(__file__)
# runpy's code objects are named "<frozen runpy>" when it is frozen.
_RUNPY_FILES = frozenset({os.path.abspath(runpy.__file__), "<frozen runpy>"})
# Set for a script: run_path's frames, which `python script.py` does not
# have, are cut too. `python -m module` shows runpy's frames itself, so for
# a module they stay.
_cut_runpy = False


def _user_traceback(tb: TracebackType | None) -> TracebackType | None:
    """The traceback from the first frame after the launcher's own."""
    last = None
    t = tb
    while t is not None:
        if os.path.abspath(t.tb_frame.f_code.co_filename) == _THIS_FILE:
            last = t
        t = t.tb_next
    if last is None:
        return tb
    tb = last.tb_next
    while _cut_runpy and tb is not None and tb.tb_frame.f_code.co_filename in _RUNPY_FILES:
        tb = tb.tb_next
    return tb


def _excepthook(
    exc_type: type[BaseException],
    exc: BaseException,
    tb: TracebackType | None,
) -> None:
    """The default hook, minus the launcher's frames. The default printer
    reads the traceback from the exception itself, so it is replaced there."""
    if isinstance(exc, BaseException):
        exc = exc.with_traceback(_user_traceback(tb))
        tb = exc.__traceback__
    sys.__excepthook__(exc_type, exc, tb)


def _run_script(argv: list[str]) -> int:
    global _cut_runpy
    script = argv[0]
    sys.argv = list(argv)  # as given, as the interpreter leaves it
    path = os.path.abspath(script)
    # `-m ferroloop` put the working directory first on sys.path (unless
    # -P / PYTHONSAFEPATH); `python script.py` puts the script's directory
    # there instead.
    cwd_first = not sys.flags.safe_path
    if os.path.isdir(script) or zipfile.is_zipfile(script) or script.endswith(".pyc"):
        # A directory or zip with a __main__.py: runpy finds and runs it, and
        # puts the directory or zip first on sys.path itself.
        if cwd_first:
            del sys.path[0]
        _cut_runpy = True
        runpy.run_path(script, run_name="__main__")
        return 0
    if cwd_first:
        sys.path[0] = os.path.dirname(path)
    try:
        with io.open_code(path) as f:
            source = f.read()
    except OSError as e:
        # The interpreter's own wording and status for a missing script.
        prog = sys.orig_argv[0] if sys.orig_argv else sys.executable
        print(
            f"{prog}: can't open file {path!r}: [Errno {e.errno}] {e.strerror}",
            file=sys.stderr,
        )
        return 2
    # As the interpreter does: the script runs as the __main__ module (which
    # stays in sys.modules for atexit handlers), under its absolute path
    # (__file__, tracebacks), and with no __spec__.
    main = types.ModuleType("__main__")
    main.__file__ = path
    main.__cached__ = None
    main.__loader__ = importlib.machinery.SourceFileLoader("__main__", path)
    main.__builtins__ = builtins
    main.__annotations__ = {}
    sys.modules["__main__"] = main
    code = compile(source, path, "exec", dont_inherit=True)
    exec(code, main.__dict__)
    return 0


def _run_module(argv: list[str]) -> int:
    # `python -m ferroloop` already put the working directory first on
    # sys.path, as `python -m module` does.
    sys.argv = list(argv)
    # What `python -m module` itself calls: sys.argv[0] becomes the module's
    # path, it runs in the real __main__ namespace, and a missing module is
    # reported as the interpreter reports it (status 1).
    runpy._run_module_as_main(argv[0], alter_argv=True)  # type: ignore[attr-defined]
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr if not argv else sys.stdout)
        return 2 if not argv else 0
    if argv[0] == "-m" and len(argv) < 2:
        print(USAGE, file=sys.stderr)
        return 2
    ferroloop._install()
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = _excepthook
    if argv[0] == "-m":
        return _run_module(argv[1:])
    return _run_script(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
