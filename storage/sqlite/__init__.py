"""The embedded default storage backend: one SQLite file in the data directory.

Config section ``[storage.sqlite]`` (see `Options`). Every store of
storage/interfaces.py lives in the same file; named archives and key-value stores share
one table each, keyed by their name. The engine (threads, group commit, durability,
schema versions) is in database.py, the stores in stores.py, the schema in 001_*.sql.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

from .database import Database, DatabaseClosed
from .stores import (
    SqliteAccountStore,
    SqliteArchiveStore,
    SqliteKeyValueStore,
    SqlitePubSubStore,
    SqliteRoomStore,
    SqliteRosterStore,
    SqliteUploadStore,
    distinct_values,
)

__all__ = ["Options", "SqliteBackend", "DatabaseClosed", "open_backend"]


@dataclass(frozen=True)
class Options:
    path: str = "xmppd.sqlite"  # relative to the data directory unless absolute
    busy_timeout: float = 5.0  # seconds to wait for a lock held by another process
    batch_max: int = 256  # most writes committed in one transaction
    synchronous: str = "full"  # full: survives a power loss; normal: a process crash

    def validate(self, where):
        where.one_of("synchronous", self.synchronous, ("full", "normal"))


class SqliteBackend:
    """A StorageBackend on one SQLite file. Call `start()` before use, `close()` after."""

    def __init__(self, options: Options, data_dir: str):
        self.options = options
        self.path = os.path.join(data_dir, options.path)  # an absolute path wins
        self.db = Database(
            self.path, busy_timeout=options.busy_timeout, batch_max=options.batch_max, synchronous=options.synchronous
        )
        self.accounts = SqliteAccountStore(self.db)
        self.rosters = SqliteRosterStore(self.db)
        self.rooms = SqliteRoomStore(self.db)
        self.pubsub = SqlitePubSubStore(self.db)
        self.uploads = SqliteUploadStore(self.db)
        self._archives: dict[str, SqliteArchiveStore] = {}
        self._keyvalues: dict[str, SqliteKeyValueStore] = {}

    @property
    def transactions(self) -> int:
        """Write transactions committed so far (group commit: far fewer than writes)."""
        return self.db.transactions

    @property
    def writes(self) -> int:
        """Write operations committed so far."""
        return self.db.writes

    def archive(self, name: str) -> SqliteArchiveStore:
        store = self._archives.get(name)
        if store is None:
            store = self._archives[name] = SqliteArchiveStore(self.db, name)
        return store

    def keyvalue(self, name: str) -> SqliteKeyValueStore:
        store = self._keyvalues.get(name)
        if store is None:
            store = self._keyvalues[name] = SqliteKeyValueStore(self.db, name)
        return store

    async def archive_names(self) -> list[str]:
        return await self.db.read(lambda conn: distinct_values(conn, "archive", "store"))

    async def keyvalue_names(self) -> list[str]:
        return await self.db.read(lambda conn: distinct_values(conn, "keyvalue", "store"))

    async def start(self) -> None:
        directory = os.path.dirname(self.path)
        if directory:
            await asyncio.to_thread(os.makedirs, directory, exist_ok=True)
        await self.db.start()

    async def close(self) -> None:
        await self.db.close()


def open_backend(options: Options, data_dir: str) -> SqliteBackend:
    return SqliteBackend(options, data_dir)
