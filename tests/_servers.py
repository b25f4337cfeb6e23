"""Real PostgreSQL and Redis servers for the integration tests.

Each server is started once per test session from Debian's packages (which
``scripts/test.sh`` installs), in a private temporary directory, on a free
loopback port and a Unix socket, and stopped at the end.  Drivers written
against real servers (asyncpg, redis-py) exercise paths a loop's own tests
rarely reach: asyncpg upgrades its connection with ``start_tls`` after
PostgreSQL's SSLRequest, opens a second connection to cancel a query, and
receives notifications between queries; redis-py blocks in BLPOP while other
commands share the pool.

If a server's binaries are missing the tests skip, naming what to install;
with ``FERROLOOP_SERVERS_REQUIRED=1`` (set by ``scripts/test.sh`` once the
install succeeded) they fail instead, so CI cannot pass by skipping them.
"""

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from _certs import cert_files

START_TIMEOUT = 30.0


def servers_required():
    env = os.environ.get("FERROLOOP_SERVERS_REQUIRED", "").strip().lower()
    return env in ("1", "true", "yes", "on")


def unavailable(msg):
    if servers_required():
        pytest.fail(msg + " and FERROLOOP_SERVERS_REQUIRED is set", pytrace=False)
    pytest.skip(msg)


def import_driver(name):
    """The driver module, or skip/fail as for a missing server."""
    try:
        return __import__(name)
    except ImportError as exc:
        unavailable(f"{name} is not installed (pip install {name}): {exc}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, what):
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} "
                       f"within {START_TIMEOUT:g}s")


def read_pid(path):
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open(path) as f:
            return int(f.read().split()[0])
    return None


def stop_daemon(pid):
    """SIGTERM a server that is not our child, then SIGKILL if it lingers."""
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)


class Postgres:
    def __init__(self, port, socket_dir):
        self.port = port
        self.socket_dir = socket_dir  # asyncpg's host= for a Unix socket
        self.user = "postgres"
        self.database = "postgres"

    def dsn(self, **params):
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return (f"postgresql://{self.user}@127.0.0.1:{self.port}/"
                f"{self.database}" + (f"?{query}" if query else ""))


def _pg_bindir():
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(os.path.join(d, "postgres"), os.X_OK):
            return d
    initdb = shutil.which("initdb")
    return os.path.dirname(os.path.realpath(initdb)) if initdb else None


@pytest.fixture(scope="session")
def postgres_server():
    bindir = _pg_bindir()
    if bindir is None:
        unavailable("PostgreSQL is not installed (apt-get install postgresql)")
    # PostgreSQL refuses to run as root: run it as the package's user.
    run_as = {}
    if os.getuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            unavailable("running as root and there is no 'postgres' user")
        run_as = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    base = tempfile.mkdtemp(prefix="ferroloop-pg-")
    os.chmod(base, 0o755)
    data = os.path.join(base, "data")
    sockets = os.path.join(base, "sock")
    os.mkdir(sockets)
    if run_as:
        os.chown(base, run_as["user"], run_as["group"])
        os.chown(sockets, run_as["user"], run_as["group"])
    pid = None
    try:
        init = subprocess.run(
            [os.path.join(bindir, "initdb"), "-D", data, "-A", "trust",
             "-U", "postgres", "-E", "UTF8", "--no-sync"],
            check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            **run_as)
        if init.returncode != 0:
            # e.g. a /dev/null that only root may write (scripts/test.sh
            # repairs that on CI machines).
            raise RuntimeError("initdb failed: "
                               + init.stderr.decode(errors="replace")[-2000:])
        # TLS with the suite's throw-away certificate, so that asyncpg's
        # ssl= connections upgrade through the loop's start_tls.
        certfile, keyfile = cert_files()
        for src, name in ((certfile, "server.crt"), (keyfile, "server.key")):
            dst = os.path.join(data, name)
            shutil.copyfile(src, dst)
            os.chmod(dst, 0o600)
            if run_as:
                os.chown(dst, run_as["user"], run_as["group"])
        port = free_port()
        # Started through pg_ctl, so the postmaster is not a child of the
        # test process: tests that reap "any child" (waitpid(-1), asyncio's
        # child watchers) must not see it.
        opts = (f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c ssl=on -c max_connections=60")
        started = subprocess.run(
            [os.path.join(bindir, "pg_ctl"), "-D", data, "-o", opts,
             "-l", os.path.join(base, "postgres.log"), "-w",
             "-t", str(int(START_TIMEOUT)), "start"],
            check=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, **run_as)
        pid = read_pid(os.path.join(data, "postmaster.pid"))
        if started.returncode != 0:
            raise RuntimeError("pg_ctl start failed: "
                               + started.stderr.decode(errors="replace"))
        wait_for_port(port, "postgres")
        yield Postgres(port, sockets)
    finally:
        stop_daemon(pid)  # SIGTERM: postgres' "smart" shutdown, clients gone
        shutil.rmtree(base, ignore_errors=True)


class Redis:
    def __init__(self, port, unix_path):
        self.port = port
        self.unix_path = unix_path


@pytest.fixture(scope="session")
def redis_server():
    exe = shutil.which("redis-server")
    if exe is None:
        unavailable("Redis is not installed (apt-get install redis-server)")
    base = tempfile.mkdtemp(prefix="ferroloop-redis-")
    path = os.path.join(base, "redis.sock")
    port = free_port()
    pidfile = os.path.join(base, "redis.pid")
    # Daemonized (not a child of the test process; see postgres_server).
    subprocess.run(
        [exe, "--port", str(port), "--bind", "127.0.0.1",
         "--unixsocket", path, "--unixsocketperm", "700",
         "--save", "", "--appendonly", "no", "--dir", base,
         "--daemonize", "yes", "--pidfile", pidfile,
         "--logfile", os.path.join(base, "redis.log"), "--loglevel", "warning"],
        check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, "redis-server")
        yield Redis(port, path)
    finally:
        stop_daemon(read_pid(pidfile))
        shutil.rmtree(base, ignore_errors=True)
