"""Package-level API of ferroloop (these tests have no asyncio param)."""

import asyncio
import os
import subprocess
import sys
import textwrap
import warnings

import pytest

from conftest import subprocess_env


def test_loop_is_abstract_event_loop_subclass(ferroloop):
    assert isinstance(ferroloop.Loop, type)
    assert issubclass(ferroloop.Loop, asyncio.AbstractEventLoop)


def test_new_event_loop_returns_loop(ferroloop):
    loop = ferroloop.new_event_loop()
    try:
        assert isinstance(loop, ferroloop.Loop)
        assert isinstance(loop, asyncio.AbstractEventLoop)
        assert not loop.is_running()
        assert not loop.is_closed()
        assert loop.run_until_complete(asyncio.sleep(0, "ok")) == "ok"
    finally:
        loop.close()
    assert loop.is_closed()


def test_new_event_loop_returns_distinct_loops(ferroloop):
    a = ferroloop.new_event_loop()
    b = ferroloop.new_event_loop()
    try:
        assert a is not b
    finally:
        a.close()
        b.close()


def test_event_loop_policy(ferroloop):
    policy = ferroloop.EventLoopPolicy()
    assert isinstance(policy, asyncio.AbstractEventLoopPolicy)
    asyncio.set_event_loop_policy(policy)
    assert asyncio.get_event_loop_policy() is policy
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(loop, ferroloop.Loop)
    finally:
        loop.close()
    loop = policy.new_event_loop()
    try:
        assert isinstance(loop, ferroloop.Loop)
    finally:
        loop.close()


def test_policy_get_event_loop_in_main_thread(ferroloop):
    policy = ferroloop.EventLoopPolicy()
    asyncio.set_event_loop_policy(policy)
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        assert policy.get_event_loop() is loop
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def _install(ferroloop):
    """ferroloop.install(), which warns where policies are deprecated (3.14+)."""
    if sys.version_info >= (3, 14):
        with pytest.warns(DeprecationWarning, match=r"ferroloop\.run\(") as seen:
            ferroloop.install()
        # Pointed at the caller, as asyncio's own deprecation warnings are.
        assert [w.filename for w in seen] == [__file__]
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ferroloop.install()


def test_install_sets_policy(ferroloop):
    _install(ferroloop)
    policy = asyncio.get_event_loop_policy()
    assert isinstance(policy, ferroloop.EventLoopPolicy)
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(loop, ferroloop.Loop)
    finally:
        loop.close()


def test_asyncio_run_under_installed_policy(ferroloop):
    _install(ferroloop)

    async def main():
        return type(asyncio.get_running_loop())

    assert issubclass(asyncio.run(main()), ferroloop.Loop)


def test_run_returns_result_on_ferroloop(ferroloop):
    seen = {}

    async def main(x):
        loop = asyncio.get_running_loop()
        seen["loop"] = loop
        seen["debug"] = loop.get_debug()
        await asyncio.sleep(0)
        return x * 2

    assert ferroloop.run(main(21)) == 42
    assert isinstance(seen["loop"], ferroloop.Loop)
    assert seen["loop"].is_closed()
    assert seen["debug"] is False
    assert asyncio.events._get_running_loop() is None


def test_run_propagates_exception(ferroloop):
    async def main():
        await asyncio.sleep(0)
        raise ZeroDivisionError("boom")

    with pytest.raises(ZeroDivisionError, match="boom"):
        ferroloop.run(main())
    assert asyncio.events._get_running_loop() is None


@pytest.mark.parametrize("debug", [True, False])
def test_run_debug_flag(ferroloop, debug):
    async def main():
        return asyncio.get_running_loop().get_debug()

    assert ferroloop.run(main(), debug=debug) is debug


def test_run_default_debug_is_none(ferroloop):
    import inspect
    sig = inspect.signature(ferroloop.run)
    assert "debug" in sig.parameters
    assert sig.parameters["debug"].default is None


def test_run_cancels_leftover_tasks(ferroloop):
    state = {}

    async def sleeper():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise

    async def main():
        state["task"] = asyncio.get_running_loop().create_task(sleeper())
        await asyncio.sleep(0)
        return "done"

    assert ferroloop.run(main()) == "done"
    assert state.get("cancelled") is True
    assert state["task"].cancelled()


def test_run_rejects_non_coroutine(ferroloop):
    # asyncio.run raises ValueError("a coroutine was expected, got ...")
    with pytest.raises(ValueError):
        ferroloop.run(lambda: None)


def test_run_inside_running_loop_raises(ferroloop):
    import gc

    async def inner():
        return 1

    async def main():
        coro = inner()
        try:
            ferroloop.run(coro)
        except RuntimeError as exc:
            return str(exc)
        finally:
            coro.close()
        return None

    msg = ferroloop.run(main())
    gc.collect()  # nothing (e.g. an un-awaited coroutine) may be left over
    # asyncio.run: "asyncio.run() cannot be called from a running event loop"
    assert msg is not None
    assert "cannot be called from a running event loop" in msg


# ---------------------------------------------------------------------------
# python -m ferroloop script.py args...
# ---------------------------------------------------------------------------

SCRIPT = textwrap.dedent("""
    import asyncio, json, sys

    async def main():
        return type(asyncio.get_running_loop()).__module__ + ":" + \\
            type(asyncio.get_running_loop()).__qualname__

    loop_type = asyncio.run(main())
    import ferroloop
    async def is_ferro():
        return isinstance(asyncio.get_running_loop(), ferroloop.Loop)
    print(json.dumps({
        "argv": sys.argv,
        "name": __name__,
        "loop_type": loop_type,
        "is_ferroloop": asyncio.run(is_ferro()),
        "main_file": getattr(sys.modules["__main__"], "__file__", None),
    }))
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "exit3":
        sys.exit(3)
    if mode == "raise":
        raise LookupError("uncaught-marker")
""")


def _run_module(tmp_path, *args, script=SCRIPT, cwd=None):
    path = tmp_path / "script.py"
    path.write_text(script)
    proc = subprocess.run(
        [sys.executable, "-m", "ferroloop", str(path), *args],
        capture_output=True, text=True, timeout=30,
        env=subprocess_env(), cwd=str(cwd or tmp_path))
    return path, proc


def _parse(proc):
    import json
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    assert lines, (proc.returncode, proc.stdout, proc.stderr)
    return json.loads(lines[-1])


def test_import_run_and_launcher_raise_no_deprecation_warning(ferroloop, tmp_path):
    """ferroloop must not lean on what this Python deprecates: from 3.14
    that includes asyncio.DefaultEventLoopPolicy, set_event_loop_policy and
    asyncio.iscoroutinefunction. With every warning an error, importing it,
    running a program on it (including the callback checks that refuse a
    coroutine function) and the launcher all still work."""
    code = textwrap.dedent("""
        import asyncio, ferroloop
        async def main():
            loop = asyncio.get_running_loop()
            async def coro_fn():
                pass
            try:
                loop.call_soon(coro_fn)
            except TypeError as e:
                return str(e)
        print(ferroloop.run(main()))
    """)
    strict = [sys.executable, "-W", "error", "-X", "dev"]
    proc = subprocess.run(strict + ["-c", code], capture_output=True, text=True,
                          timeout=30, env=subprocess_env())
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        0, "coroutines cannot be used with call_soon()\n", "")
    path = tmp_path / "script.py"
    path.write_text(SCRIPT)
    proc = subprocess.run(strict + ["-m", "ferroloop", str(path)], capture_output=True,
                          text=True, timeout=30, env=subprocess_env())
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert _parse(proc)["is_ferroloop"] is True


def test_main_module_runs_script_with_argv(ferroloop, tmp_path):
    path, proc = _run_module(tmp_path, "a", "b")
    assert proc.returncode == 0, proc.stderr
    data = _parse(proc)
    assert data["argv"] == [str(path), "a", "b"]
    assert data["name"] == "__main__"
    assert data["is_ferroloop"] is True
    assert os.path.samefile(data["main_file"], path)


def test_main_module_relative_script_argv(ferroloop, tmp_path):
    # `python script.py a b` gives sys.argv == ['script.py', 'a', 'b']
    (tmp_path / "script.py").write_text(SCRIPT)
    proc = subprocess.run(
        [sys.executable, "-m", "ferroloop", "script.py", "a", "b"],
        capture_output=True, text=True, timeout=30,
        env=subprocess_env(), cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    data = _parse(proc)
    assert data["argv"] == ["script.py", "a", "b"]
    assert data["name"] == "__main__"
    assert data["is_ferroloop"] is True


def test_main_module_argv_matches_plain_python(ferroloop, tmp_path):
    path, proc = _run_module(tmp_path, "x", "--flag", "y")
    assert proc.returncode == 0, proc.stderr
    plain = subprocess.run(
        [sys.executable, str(path), "x", "--flag", "y"],
        capture_output=True, text=True, timeout=30,
        env=subprocess_env(), cwd=str(tmp_path))
    assert plain.returncode == 0, plain.stderr
    assert _parse(proc)["argv"] == _parse(plain)["argv"]
    assert _parse(plain)["is_ferroloop"] is False


def test_main_module_propagates_sys_exit_code(ferroloop, tmp_path):
    _, proc = _run_module(tmp_path, "exit3")
    assert proc.returncode == 3, proc.stderr
    assert _parse(proc)["argv"][1:] == ["exit3"]


def test_main_module_uncaught_exception(ferroloop, tmp_path):
    _, proc = _run_module(tmp_path, "raise")
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert "LookupError: uncaught-marker" in proc.stderr


def test_main_module_script_in_sys_path(ferroloop, tmp_path):
    # `python script.py` puts the script's directory first on sys.path.
    (tmp_path / "helper_mod_xyz.py").write_text("VALUE = 7\n")
    script = "import helper_mod_xyz, sys\nsys.exit(helper_mod_xyz.VALUE)\n"
    sub = tmp_path / "sub"
    sub.mkdir()
    _, proc = _run_module(tmp_path, script=script, cwd=sub)
    assert proc.returncode == 7, proc.stderr


def _plain_and_ferro(cwd, *args):
    """Runs `python ARGS` and `python -m ferroloop ARGS` in `cwd`."""
    def run(prefix):
        return subprocess.run(
            [sys.executable, *prefix, *args], capture_output=True, text=True,
            timeout=30, env=subprocess_env(), cwd=str(cwd))
    return run([]), run(["-m", "ferroloop"])


LOOP_AGNOSTIC_SCRIPTS = {
    "raise": "def f():\n    raise LookupError('uncaught-marker')\nf()\n",
    "keyboard_interrupt": "raise KeyboardInterrupt\n",
    "syntax_error": "x = (\n",
    "exit_message": "import sys\nsys.exit('fatal message')\n",
    "own_excepthook": (
        "import sys\n"
        "def hook(t, v, tb):\n"
        "    print('own hook', t.__name__, v, file=sys.stderr)\n"
        "sys.excepthook = hook\n"
        "raise OSError(5, 'boom')\n"),
    "atexit_sees_main": (
        "import atexit, sys\n"
        "VALUE = 'main-module-kept'\n"
        "atexit.register(lambda: print(sys.modules['__main__'].VALUE))\n"),
    "module_globals": (
        "import sys\n"
        "print(__file__, sys.argv, __name__, __spec__, __package__,\n"
        "      type(__loader__).__name__, sys.modules['__main__'].__dict__ is globals(),\n"
        "      sorted(k for k in globals() if k.startswith('__')))\n"),
}


@pytest.mark.parametrize("name", sorted(LOOP_AGNOSTIC_SCRIPTS))
def test_main_module_behaves_as_plain_python(ferroloop, tmp_path, name):
    # Same stdout, stderr (tracebacks cut to the script's own frames, the
    # script's own sys.excepthook) and exit status, including the SIGINT
    # death of an uncaught KeyboardInterrupt (status -2, not 130 or 1).
    (tmp_path / "script.py").write_text(LOOP_AGNOSTIC_SCRIPTS[name])
    plain, ferro = _plain_and_ferro(tmp_path, "script.py", "arg")
    assert (ferro.returncode, ferro.stdout, ferro.stderr) == (
        plain.returncode, plain.stdout, plain.stderr)


def test_main_module_missing_script_reported_as_plain_python(ferroloop, tmp_path):
    plain, ferro = _plain_and_ferro(tmp_path, "no_such_script.py")
    assert plain.returncode == 2
    assert (ferro.returncode, ferro.stderr) == (plain.returncode, plain.stderr)


def test_dash_m_behaves_as_plain_python(ferroloop, tmp_path):
    pkg = tmp_path / "demo_pkg_xyz"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(
        "import sys\nprint(sys.argv, __name__)\nraise ValueError('from -m')\n")
    plain = subprocess.run(
        [sys.executable, "-m", "demo_pkg_xyz", "a"], capture_output=True,
        text=True, timeout=30, env=subprocess_env(), cwd=str(tmp_path))
    ferro = subprocess.run(
        [sys.executable, "-m", "ferroloop", "-m", "demo_pkg_xyz", "a"],
        capture_output=True, text=True, timeout=30, env=subprocess_env(),
        cwd=str(tmp_path))
    assert plain.returncode == 1
    assert (ferro.returncode, ferro.stdout, ferro.stderr) == (
        plain.returncode, plain.stdout, plain.stderr)
    missing_plain = subprocess.run(
        [sys.executable, "-m", "no_such_module_xyz"], capture_output=True,
        text=True, timeout=30, env=subprocess_env(), cwd=str(tmp_path))
    missing_ferro = subprocess.run(
        [sys.executable, "-m", "ferroloop", "-m", "no_such_module_xyz"],
        capture_output=True, text=True, timeout=30, env=subprocess_env(),
        cwd=str(tmp_path))
    assert (missing_ferro.returncode, missing_ferro.stderr) == (
        missing_plain.returncode, missing_plain.stderr)


def test_main_module_runs_directory_with_main(ferroloop, tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "__main__.py").write_text(
        "import asyncio, sys\n"
        "async def main():\n"
        "    return type(asyncio.get_running_loop()).__module__\n"
        "print(sys.argv, asyncio.run(main()))\nsys.exit(4)\n")
    plain, ferro = _plain_and_ferro(tmp_path, "app", "x")
    assert plain.returncode == ferro.returncode == 4
    assert plain.stdout.split()[:2] == ferro.stdout.split()[:2] == ["['app',", "'x']"]
    assert "ferroloop" in ferro.stdout and "ferroloop" not in plain.stdout
