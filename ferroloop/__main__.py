"""`python -m ferroloop script.py [args...]`: run an asyncio program on
ferroloop without changing it (`-m module` works too).

The script sees what `python script.py` would give it: `sys.argv`,
`__name__ == "__main__"`, its own directory first on `sys.path`, its exit
code, and a traceback that starts at its own code."""

from __future__ import annotations

import os
import runpy
import sys
import traceback

import ferroloop

USAGE = "usage: python -m ferroloop script.py [args...] | -m module [args...]"


def _print_user_traceback(exc: BaseException) -> None:
    # Drop the frames of this launcher and runpy, so the traceback reads as
    # if Python had run the script directly.
    tb = exc.__traceback__
    skip = (os.path.abspath(__file__), runpy.__file__)
    while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename) in skip:
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr if not argv else sys.stdout)
        return 2 if not argv else 0
    ferroloop.install()
    try:
        if argv[0] == "-m":
            if len(argv) < 2:
                print(USAGE, file=sys.stderr)
                return 2
            sys.argv = argv[1:]
            sys.path.insert(0, os.getcwd())
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            script = argv[0]
            sys.argv = list(argv)
            sys.path[0] = os.path.dirname(os.path.abspath(script))
            runpy.run_path(script, run_name="__main__")
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - mirror the interpreter
        _print_user_traceback(exc)
        return 130 if isinstance(exc, KeyboardInterrupt) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
