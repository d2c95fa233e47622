"""The SQLite engine under the stores: one writer thread with group commit, a small pool
of reader threads, versioned schema files.

No sqlite3 call ever runs on the event loop. A store hands a plain function
``fn(connection) -> result`` to :meth:`Database.write` or :meth:`Database.read` and
awaits its result:

- Writes go to a queue served by one writer thread. The thread takes every write that is
  waiting (up to ``batch_max``), runs them in one transaction, each inside its own
  SAVEPOINT so that one failing write does not undo the others, COMMITs once, and only
  then resolves each caller's future. Under load, hundreds of writes share one commit and
  one fsync (group commit).
- Reads run on separate connections, each in its own thread, in a short read
  transaction (a consistent snapshot). WAL mode lets them run while the writer writes.

Durability: the stores promise that a write is committed before its coroutine returns,
because the caller may then ack it to a client. In WAL mode, ``synchronous=NORMAL``
already survives a crash or a SIGKILL of the process (the commit is in the OS page cache),
but not a power loss or a kernel crash, which may lose the last transactions. We use
``synchronous=FULL`` by default: every COMMIT fsyncs the WAL, so an acked write also
survives a power loss. Group commit is what makes that affordable: one fsync per batch,
not per write; a single client writing one message after another still waits for an
fsync each, which the `synchronous = "normal"` option trades for crash-only durability.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import logging
import os
import queue
import re
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

READERS = 2  # reader threads, each with its own connection
_SCHEMA_FILE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
_STOP = object()


class DatabaseClosed(RuntimeError):
    """The backend is not started or already closed."""


def schema_files() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) of every schema file of this package, in order."""
    files = []
    for entry in importlib.resources.files(__package__).iterdir():
        match = _SCHEMA_FILE.match(entry.name)
        if match:
            files.append((int(match.group(1)), entry.name, entry.read_text("utf-8")))
    files.sort()
    versions = [version for version, _, _ in files]
    if versions != list(range(1, len(files) + 1)):
        raise RuntimeError(f"sqlite schema files are not numbered 001, 002, ...: {versions}")
    return files


def _statements(sql: str) -> list[str]:
    """Split a schema file into statements (comments stay with the next statement)."""
    statements, buffer = [], ""
    for line in sql.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    rest = [line for line in buffer.splitlines() if line.strip() and not line.strip().startswith("--")]
    if rest:
        raise RuntimeError(f"unterminated SQL statement at the end of a schema file: {rest}")
    return statements


def _keep_private(path: str) -> None:
    """The database file (password keys, archives) readable by the server's user only,
    whatever the umask: made 0600, or set to 0600 when others may read it. SQLite gives
    its -wal and -shm files the database's mode; those left by an earlier run follow."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    for name in (path, f"{path}-wal", f"{path}-shm"):
        try:
            if os.stat(name).st_mode & 0o077:
                os.chmod(name, 0o600)
                log.warning("event=database-made-private path=%s", name)
        except FileNotFoundError:
            pass


def _upgrade(conn: sqlite3.Connection, path: str) -> None:
    """Apply the schema files newer than the database's PRAGMA user_version.

    All of them in one transaction: a failure leaves the database as it was, and a
    second process starting at the same time waits, then finds nothing left to do.
    """
    files = schema_files()
    latest = files[-1][0] if files else 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = conn.execute("PRAGMA user_version").fetchone()[0]
        if current > latest:
            raise RuntimeError(
                f"{path}: schema version {current} is newer than this xmppd knows"
                f" ({latest}); refusing to open it with an older version"
            )
        for version, name, sql in files:
            if version <= current:
                continue
            log.info("event=schema-applying path=%s schema=%s", path, name)
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def backup_file(path: str, target: str, busy_timeout: float = 5.0) -> None:
    """Copy the database at `path` into the new file `target` (blocking; run it in a
    thread) with SQLite's online backup API, in one step: one read transaction, so a
    consistent snapshot while a server writes, whose writer WAL mode does not block.
    The copy is readable only by its owner, like the original."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no SQLite database at {path}")
    source = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    try:
        source.execute("PRAGMA query_only = ON")
        _keep_private(target)
        copy = sqlite3.connect(target, isolation_level=None)
        try:
            source.backup(copy)  # pages=-1: everything in one step
        finally:
            copy.close()
    finally:
        source.close()


Outcome = tuple[asyncio.Future, Any, "BaseException | None"]


def _resolve(outcomes: list[Outcome]) -> None:
    for future, result, error in outcomes:
        if future.done():  # the caller was cancelled; the write stands
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _notify_all(loop: asyncio.AbstractEventLoop, outcomes: list[Outcome]) -> None:
    """Hand outcomes to the event loop: one wake-up for a whole batch."""
    try:
        loop.call_soon_threadsafe(_resolve, outcomes)
    except RuntimeError:  # the loop was closed under us
        pass


def _notify(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future, result: Any = None, error: BaseException | None = None
) -> None:
    _notify_all(loop, [(future, result, error)])


class Database:
    """One SQLite file: the writer thread, the reader threads, their queues."""

    def __init__(
        self,
        path: str,
        busy_timeout: float = 5.0,
        batch_max: int = 256,
        readers: int = READERS,
        synchronous: str = "full",
    ):
        if batch_max < 1:
            raise ValueError("batch_max must be at least 1")
        self.path = path
        self.busy_timeout = busy_timeout
        self.batch_max = batch_max
        self.synchronous = {"full": "FULL", "normal": "NORMAL"}[synchronous]
        self.readers = readers
        self.transactions = 0  # write transactions committed
        self.writes = 0  # write operations committed
        self._writes: queue.SimpleQueue = queue.SimpleQueue()
        self._reads: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._open = False

    # ------------------------------------------------------------ life cycle

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves.
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=True)
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        return conn

    async def start(self) -> None:
        if self._open:
            return
        loop = asyncio.get_running_loop()
        try:
            ready = loop.create_future()
            writer = threading.Thread(
                target=self._run_writer, args=(loop, ready), name=f"sqlite-writer:{self.path}", daemon=True
            )
            writer.start()
            self._threads.append(writer)
            await ready  # schema applied, or its error raised here
            for number in range(self.readers):
                started = loop.create_future()
                reader = threading.Thread(
                    target=self._run_reader,
                    args=(loop, started),
                    name=f"sqlite-reader-{number}:{self.path}",
                    daemon=True,
                )
                reader.start()
                self._threads.append(reader)
                await started
        except BaseException:
            await self.close()
            raise
        self._open = True

    async def close(self) -> None:
        """Finish the writes already queued, then stop every thread and close: the readers
        first, then the writer, which checkpoints the WAL into the database file. The file
        is then whole on its own, and opening it again without writing leaves it as it is
        (a backup's checksum holds)."""
        if not self._threads:
            return
        self._open = False
        writer, *readers = self._threads
        self._threads = []
        for _ in readers:
            self._reads.put(_STOP)
        await asyncio.to_thread(lambda: [thread.join() for thread in readers])
        self._writes.put(_STOP)
        await asyncio.to_thread(writer.join)

    # ------------------------------------------------------------ submitting work

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn in the next write transaction; return once it is committed."""
        if not self._open:
            raise DatabaseClosed(f"{self.path}: storage is not open")
        future = asyncio.get_running_loop().create_future()
        self._writes.put((fn, future))
        return await future

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn on a reader connection, in a read transaction."""
        if not self._open:
            raise DatabaseClosed(f"{self.path}: storage is not open")
        future = asyncio.get_running_loop().create_future()
        self._reads.put((fn, future))
        return await future

    # ------------------------------------------------------------ threads

    def _run_writer(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future) -> None:
        try:
            _keep_private(self.path)
            conn = self._connect()
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise RuntimeError(f"{self.path}: cannot switch to WAL mode (got {mode})")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")  # see the module docstring
            _upgrade(conn, self.path)
        except BaseException as error:
            _notify(loop, ready, error=error)
            return
        _notify(loop, ready)
        try:
            stop = False
            while not stop:
                batch = [self._writes.get()]
                while len(batch) < self.batch_max:
                    try:
                        batch.append(self._writes.get_nowait())
                    except queue.Empty:
                        break
                if batch[-1] is _STOP:  # nothing is queued after _STOP
                    batch.pop()
                    stop = True
                if batch:
                    self._commit_batch(conn, loop, batch)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()

    def _commit_batch(self, conn: sqlite3.Connection, loop: asyncio.AbstractEventLoop, batch: list) -> None:
        outcomes: list[Outcome] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, future in batch:
                conn.execute("SAVEPOINT op")
                try:
                    result = fn(conn)
                except Exception as error:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    outcomes.append((future, None, error))
                else:
                    conn.execute("RELEASE op")
                    outcomes.append((future, result, None))
            conn.execute("COMMIT")
        except Exception as error:
            # BEGIN or COMMIT failed (locked, disk full, I/O error): nothing was written.
            log.error("event=write-transaction-failed path=%s writes=%d error=%s", self.path, len(batch), error)
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            _notify_all(loop, [(future, None, error) for _, future in batch])
            return
        self.transactions += 1
        self.writes += len(batch)
        _notify_all(loop, outcomes)

    def _run_reader(self, loop: asyncio.AbstractEventLoop, started: asyncio.Future) -> None:
        try:
            conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
        except BaseException as error:
            _notify(loop, started, error=error)
            return
        _notify(loop, started)
        try:
            while True:
                job = self._reads.get()
                if job is _STOP:
                    break
                fn, future = job
                try:
                    conn.execute("BEGIN")
                    try:
                        result = fn(conn)
                    finally:
                        conn.execute("COMMIT")
                except Exception as error:
                    _notify(loop, future, error=error)
                else:
                    _notify(loop, future, result)
        finally:
            conn.close()
