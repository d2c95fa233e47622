"""PostgreSQL as the storage backend: every store in one database that several xmppd
nodes may share.

Config section ``[storage.postgresql]`` (see `Options`); the driver is asyncpg (the extra
``xmppd[postgresql]``), a pool of connections per process. The tables are in
``schema/NNN_*.sql``, created or upgraded at start-up (schema.py), the stores in stores.py.

Several processes on one database: nothing is kept in a process that another could
change behind its back. Every write is one transaction, committed before its coroutine
returns; counters (roster versions, the order of pubsub items) are moved in SQL under
the row's lock, so two nodes never hand out the same value; "create if absent" and
"complete once" are single conditional statements, so of two racing nodes one wins.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .. import StorageUnavailable
from .schema import schema_files, upgrade
from .stores import (
    PostgresqlAccountStore,
    PostgresqlArchiveStore,
    PostgresqlKeyValueStore,
    PostgresqlPubSubStore,
    PostgresqlRoomStore,
    PostgresqlRosterStore,
    PostgresqlUploadStore,
    distinct,
)

__all__ = ["Options", "PostgresqlBackend", "BackendNotStarted", "open_backend", "init_schema", "schema_files"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 5432


@dataclass(frozen=True)
class Options:
    # A libpq URI, postgresql://user:password@host:port/database?sslmode=...; the keys
    # below, when set, override its parts. Nothing set: libpq's defaults (PGHOST, PGUSER...).
    dsn: str = ""
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    database: str | None = None
    pool_size: int = 10  # connections of one xmppd process, at most
    connect_timeout: float = 10.0  # seconds
    command_timeout: float = 30.0  # seconds one statement may take

    def problems(self) -> list[tuple[str, str]]:
        """(key, message) for every bad value; empty when the options are usable."""
        found = []
        if self.dsn and urlsplit(self.dsn).scheme not in ("postgresql", "postgres"):
            found.append(("dsn", "must be a postgresql:// URI"))
        if self.port is not None and not 0 < self.port < 65536:
            found.append(("port", "must be a port number (1-65535)"))
        if self.pool_size < 1:
            found.append(("pool_size", "must be at least 1"))
        for key in ("connect_timeout", "command_timeout"):
            if getattr(self, key) <= 0:
                found.append((key, "must be positive"))
        return found

    def validate(self, where) -> None:
        """Called by xmppd/config.py: the first problem stops start-up, naming its key."""
        for key, message in self.problems():
            where.fail(key, message)

    def check(self) -> None:
        """Raise ValueError for options made in code (open_backend calls this)."""
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(f"{key}: {message}" for key, message in problems))

    def target(self) -> str:
        """Where the options point, for messages (never the password)."""
        parts = urlsplit(self.dsn)
        host = self.host or parts.hostname or "the default host"
        port = self.port or parts.port or DEFAULT_PORT
        database = self.database or parts.path.lstrip("/") or "the default database"
        return f"{host} port {port}, database {database}"


class BackendNotStarted(RuntimeError):
    """A store was used before `start()` or after `close()`."""


class PostgresqlBackend:
    """A StorageBackend on a PostgreSQL database. Call `start()` before use, `close()` after."""

    def __init__(self, options: Options, data_dir: str | None = None):
        self.options = options
        self._pool = None
        self.accounts = PostgresqlAccountStore(self)
        self.rosters = PostgresqlRosterStore(self)
        self.rooms = PostgresqlRoomStore(self)
        self.pubsub = PostgresqlPubSubStore(self)
        self.uploads = PostgresqlUploadStore(self)
        self._archives: dict[str, PostgresqlArchiveStore] = {}
        self._keyvalues: dict[str, PostgresqlKeyValueStore] = {}

    @property
    def pool(self):
        if self._pool is None:
            raise BackendNotStarted("the PostgreSQL backend is not started")
        return self._pool

    def archive(self, name: str) -> PostgresqlArchiveStore:
        store = self._archives.get(name)
        if store is None:
            store = self._archives[name] = PostgresqlArchiveStore(self, name)
        return store

    def keyvalue(self, name: str) -> PostgresqlKeyValueStore:
        store = self._keyvalues.get(name)
        if store is None:
            store = self._keyvalues[name] = PostgresqlKeyValueStore(self, name)
        return store

    async def archive_names(self) -> list[str]:
        return [name async for name in distinct(self.pool, "archive", "store")]

    async def keyvalue_names(self) -> list[str]:
        return [name async for name in distinct(self.pool, "keyvalue", "store")]

    async def start(self) -> None:
        if self._pool is not None:
            return
        pool = await connect(self.options)
        try:
            async with pool.acquire() as conn:
                applied = await upgrade(conn)
        except BaseException:
            pool.terminate()
            raise
        if applied:
            log.info("event=schema-applied backend=postgresql versions=%s", applied)
        self._pool = pool

    async def close(self) -> None:
        """Wait for the statements in flight (at most command_timeout), then disconnect."""
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), self.options.command_timeout)
            except TimeoutError:  # asyncpg terminated the pool
                log.warning("event=storage-close-timeout backend=postgresql")


async def connect(options: Options):
    """An asyncpg pool on the database of `options`."""
    import asyncpg

    try:
        return await asyncpg.create_pool(
            options.dsn or None,
            host=options.host,
            port=options.port,
            user=options.user,
            password=options.password,
            database=options.database,
            min_size=1,
            max_size=options.pool_size,
            timeout=options.connect_timeout,
            command_timeout=options.command_timeout,
        )
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        raise StorageUnavailable(f"cannot use PostgreSQL at {options.target()}: {error}") from None


async def init_schema(options: Options) -> list[int]:
    """Create or upgrade the tables; returns the versions applied now. For
    ``xmppctl storage init`` (a starting backend does the same)."""
    options.check()
    pool = await connect(options)
    try:
        async with pool.acquire() as conn:
            return await upgrade(conn)
    finally:
        pool.terminate()


def open_backend(options: Options, data_dir: str | None = None) -> PostgresqlBackend:
    options.check()
    return PostgresqlBackend(options, data_dir)
