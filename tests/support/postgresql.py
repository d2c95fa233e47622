"""A real PostgreSQL server for the tests (issue 19), from Debian's ``postgresql``
package (``make debian-test-packages`` installs it).

`PostgresqlProcess` runs ``initdb`` into a directory of its own (trust authentication,
locale C, no fsync: a throw-away server) and ``postgres`` in the foreground on a free
port of 127.0.0.1 with no Unix socket; as the unprivileged ``postgres`` user (else
``nobody``) when the tests run as root, which PostgreSQL refuses. It waits until the
server accepts a login, bounded by ``XMPPD_POSTGRESQL_START_TIMEOUT`` (seconds,
default 30), and dies with the thread that started it (PR_SET_PDEATHSIG).

`shared_server()` is the run's one server (started on first use, stopped at exit); the
session fixture `postgresql` gives its admin DSN. ``XMPPD_TEST_POSTGRESQL=<dsn>`` names
a running server instead, whose role may create databases: nothing is started, and the
databases the tests create there (``xmppd_test_*``) stay. A server that cannot be had
raises `PostgresqlUnavailable` with the reason: the tests that need it fail, they are
not skipped.

`new_database(label)` makes an empty database for one xmppd (its schema is created by
the xmppd that starts on it); `contract_backend(tmp_path)` is what
tests/storage/conftest.py calls: one database per run, emptied for each new tmp_path.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.s3 import _tail
from tests.support.server import free_port

LOOPBACK = "127.0.0.1"
SUPERUSER = "postgres"
ENV_EXTERNAL = "XMPPD_TEST_POSTGRESQL"
START_TIMEOUT = float(os.environ.get("XMPPD_POSTGRESQL_START_TIMEOUT", "30"))
# A throw-away server on a shared machine: nothing fsynced, small buffers.
SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "32MB",
    "max_connections": "200",
    "unix_socket_directories": "",
}


class PostgresqlUnavailable(RuntimeError):
    """No PostgreSQL server can be had on this machine (the reason is the message)."""


def binary(name: str) -> str:
    """A server program; Debian keeps them in /usr/lib/postgresql/<major>/bin."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda path: int(path.split("/")[4]))
    if found:
        return found[-1]
    if shutil.which(name):
        return shutil.which(name)
    raise PostgresqlUnavailable(
        f"no {name} (Debian package postgresql: `make debian-test-packages` installs it), and {ENV_EXTERNAL} is not set"
    )


def _server_user() -> str | None:
    """Whom the server runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in (SUPERUSER, "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name).pw_name
    raise PostgresqlUnavailable("running as root and there is no unprivileged user to run PostgreSQL as")


def _fast_stop_with_parent() -> None:
    """In the child: SIGINT (PostgreSQL's fast shutdown, which does not wait for clients)
    when the thread that started it ends, so no server outlives a killed test run.
    (ctypes is imported before: the child may no longer read the Python installation.)"""
    with contextlib.suppress(OSError, AttributeError):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGINT)


class PostgresqlProcess:
    """One PostgreSQL server in `directory` (made by initdb on the first start), on a free
    port of 127.0.0.1 kept across `stop`/`start`: a restarted server has the same DSN."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.data = self.directory / "data"
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.user = _server_user()

    @property
    def dsn(self) -> str:
        return f"postgresql://{SUPERUSER}@{LOOPBACK}:{self.port}/postgres"

    @property
    def log_path(self) -> Path:
        return self.directory / "postgresql.log"

    def _run_as_server_user(self, command: list[str], **kwargs) -> subprocess.Popen:
        with open(self.log_path, "ab") as log:
            return subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                user=self.user,
                group=self.user and pwd.getpwnam(self.user).pw_gid,
                extra_groups=[] if self.user else None,
                start_new_session=True,
                **kwargs,
            )

    def start(self) -> PostgresqlProcess:
        """initdb if needed, start the server, wait until it accepts a login."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.user:
            shutil.chown(self.directory, self.user)
        if not self.data.exists():
            initdb = self._run_as_server_user(
                [
                    binary("initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    SUPERUSER,
                    "--auth=trust",
                    "--no-sync",
                    "--locale=C",
                    "--encoding=UTF8",
                ]
            )
            if initdb.wait(START_TIMEOUT) != 0:
                raise PostgresqlUnavailable(f"initdb failed:\n{_tail(self.log_path)}")
        fixed = bool(self.port)  # started before: the same port again
        for _ in range(1 if fixed else 3):  # a free port may be taken before the server binds it
            self.port = self.port if fixed else free_port()
            settings = [arg for key, value in SETTINGS.items() for arg in ("-c", f"{key}={value}")]
            self.process = self._run_as_server_user(
                [binary("postgres"), "-D", str(self.data), "-h", LOOPBACK, "-p", str(self.port), *settings],
                preexec_fn=_fast_stop_with_parent,
            )
            if self._wait_until_answering():
                return self
            running = self.process.poll() is None
            self.stop()
            if running:
                raise PostgresqlUnavailable(
                    f"PostgreSQL did not answer within {START_TIMEOUT:.0f} s:\n{_tail(self.log_path)}"
                )
        raise PostgresqlUnavailable(f"PostgreSQL exited at start-up:\n{_tail(self.log_path)}")

    def stop(self) -> None:
        """Fast shutdown (SIGINT): open sessions are ended, nothing is waited for."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def _wait_until_answering(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            with contextlib.suppress(OSError):
                if accepts_login(LOOPBACK, self.port):
                    return True
            time.sleep(0.02)
        return False


def accepts_login(host: str, port: int, timeout: float = 2.0) -> bool:
    """One probe: does the server answer a startup message with an authentication
    request ("R"), rather than an error ("E": still starting up)?"""
    parameters = f"user\0{SUPERUSER}\0database\0postgres\0\0".encode()
    startup = struct.pack("!ii", 8 + len(parameters), 196608) + parameters  # protocol 3.0
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(startup)
        answered = sock.recv(1) == b"R"
        sock.sendall(b"X\0\0\0\4")  # Terminate
        return answered


@contextlib.contextmanager
def private_server() -> Iterator[PostgresqlProcess]:
    """A started server of its own, in a new directory of the system's temporary one
    (the server's unprivileged user cannot enter root's pytest directories); stopped and
    removed after the block."""
    directory = Path(tempfile.mkdtemp(prefix="xmppd-postgresql-"))
    server = PostgresqlProcess(directory)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


# ---------------------------------------------------------------- one server per test run

_lock = threading.Lock()
_shared: str | PostgresqlUnavailable | None = None


def shared_server() -> str:
    """The admin DSN of the run's server: started on first use (from the main thread:
    it dies with the thread that starts it), stopped at exit. A failure to start is
    remembered, so every test that needs the server fails at once with the reason."""
    global _shared
    with _lock:
        if _shared is None:
            external = os.environ.get(ENV_EXTERNAL, "").strip()
            if external:
                _shared = external
            else:
                stack = contextlib.ExitStack()
                try:
                    _shared = stack.enter_context(private_server()).dsn
                except Exception as error:  # noqa: BLE001 - report, never skip
                    _shared = (
                        error
                        if isinstance(error, PostgresqlUnavailable)
                        else PostgresqlUnavailable(f"could not start PostgreSQL: {error!r}")
                    )
                else:
                    atexit.register(stack.close)
        if isinstance(_shared, PostgresqlUnavailable):
            raise PostgresqlUnavailable(str(_shared))
        return _shared


@pytest.fixture(scope="session")
def postgresql() -> str:
    """The admin DSN of the run's PostgreSQL server (or of XMPPD_TEST_POSTGRESQL's); one
    that cannot start fails the test with the reason."""
    return shared_server()


_databases = itertools.count(1)


def with_database(dsn: str, database: str) -> str:
    """`dsn` with its database replaced."""
    base, _, _ = dsn.partition("?")
    return base.rpartition("/")[0] + f"/{database}" + (dsn[len(base) :] if "?" in dsn else "")


def new_database(label: str) -> str:
    """The DSN of a new, empty database on the run's server."""
    admin = shared_server()
    name = f"xmppd_test_{label}_{os.getpid()}_{next(_databases)}"
    psql = shutil.which("psql") or binary("psql")
    result = subprocess.run(
        [psql, admin, "-v", "ON_ERROR_STOP=1", "-q", "-c", f'CREATE DATABASE "{name}"'],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise PostgresqlUnavailable(f"cannot create database {name}: {result.stderr}")
    return with_database(admin, name)


def storage_config(dsn: str, **options) -> str:
    """The TOML that puts an xmppd's every store in the database of `dsn`."""
    extra = "".join(f"{key} = {value!r}\n" for key, value in options.items())
    return f'[storage]\ndefault = "postgresql"\n\n[storage.postgresql]\ndsn = "{dsn}"\n{extra}'


# ---------------------------------------------------------------- the contract suite

_contract_dsn: str | None = None
_emptied_for: set[str] = set()


async def contract_backend(tmp_path):
    """A new, not yet started backend for the contract suite: the run's contract
    database, emptied (TRUNCATE of every table but the schema versions) the first time a
    tmp_path asks; later calls with the same tmp_path see the same data."""
    global _contract_dsn
    import asyncpg

    from xmppd.storage.postgresql import Options, init_schema, open_backend

    if _contract_dsn is None:
        _contract_dsn = await asyncio.to_thread(new_database, "contract")
        await init_schema(Options(dsn=_contract_dsn))
    options = Options(dsn=_contract_dsn, pool_size=4)
    if str(tmp_path) not in _emptied_for:
        conn = await asyncpg.connect(_contract_dsn)
        try:
            tables = [
                name
                for (name,) in await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                    " AND tablename <> 'xmppd_schema'"
                )
            ]
            await conn.execute(f"TRUNCATE {', '.join(tables)}")
        finally:
            await conn.close()
        _emptied_for.add(str(tmp_path))
    return open_backend(options, str(tmp_path))
