"""A storage backend in the server's memory: nothing survives a restart.

For tests of logic rather than storage, and for throw-away servers (Prosody's
``storage = "memory"``): ``[storage] default = "memory"``. It has no options. The data
lives as long as the backend object: `close()` and `start()` keep it. The stores are in
stores.py, plain dicts and lists with the semantics of the contract suite.
"""

from __future__ import annotations

from dataclasses import dataclass

from .stores import (
    MemoryAccountStore,
    MemoryArchiveStore,
    MemoryKeyValueStore,
    MemoryPubSubStore,
    MemoryRoomStore,
    MemoryRosterStore,
    MemoryUploadStore,
)

__all__ = ["Options", "MemoryBackend", "open_backend"]


@dataclass(frozen=True)
class Options:
    """Nothing to configure."""


class MemoryBackend:
    def __init__(self, options: Options, data_dir: str | None = None):
        self.options = options
        self.accounts = MemoryAccountStore()
        self.rosters = MemoryRosterStore()
        self.rooms = MemoryRoomStore()
        self.pubsub = MemoryPubSubStore()
        self.uploads = MemoryUploadStore()
        self._archives: dict[str, MemoryArchiveStore] = {}
        self._keyvalues: dict[str, MemoryKeyValueStore] = {}

    def archive(self, name: str) -> MemoryArchiveStore:
        return self._archives.setdefault(name, MemoryArchiveStore())

    def keyvalue(self, name: str) -> MemoryKeyValueStore:
        return self._keyvalues.setdefault(name, MemoryKeyValueStore())

    async def archive_names(self) -> list[str]:
        return sorted(name for name, store in self._archives.items() if store.has_items())

    async def keyvalue_names(self) -> list[str]:
        return sorted(name for name, store in self._keyvalues.items() if store.has_items())

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass


def open_backend(options: Options, data_dir: str | None = None) -> MemoryBackend:
    return MemoryBackend(options, data_dir)
