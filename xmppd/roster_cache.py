"""Rosters of recently used accounts kept in memory.

RFC 6121 presence work reads a roster item for almost every presence (a probe, a
broadcast, a subscription): a user with 500 online contacts logging in costs 500 reads.
While the server runs it is the only writer of its rosters, so a write-through cache
stays exact; a roster read while a write to it is in flight is not kept. A store that
other processes write too (``shared_by_processes``: PostgreSQL shared by several nodes)
could change behind a copy: nothing is kept in front of it. (`xmppctl
deluser` on a running server removes a roster behind its back: the server keeps a stale
copy of that deleted account's roster until it is evicted, which grants nothing.)
"""

from __future__ import annotations

import collections

from xmppd.storage.interfaces import RosterItem, RosterStore


class CachedRosters:
    """A RosterStore in front of another, keeping the last `size` rosters read."""

    def __init__(self, store: RosterStore, size: int = 5000):
        self._store = store
        self._size = 0 if getattr(store, "shared_by_processes", False) else size
        self._rosters: collections.OrderedDict[str, tuple[int, dict[str, RosterItem]]] = collections.OrderedDict()
        self._reads: dict[str, bool] = {}  # owners being read -> a write overtook the read

    async def get(self, owner: str) -> tuple[int, dict[str, RosterItem]]:
        cached = self._rosters.get(owner)
        if cached is None:
            self._reads.setdefault(owner, False)
            try:
                cached = await self._store.get(owner)
            finally:
                overtaken = self._reads.pop(owner, True)  # a second reader of one owner keeps nothing
            if not overtaken:
                self._remember(owner, cached)
        else:
            self._rosters.move_to_end(owner)
        version, items = cached
        return version, dict(items)

    async def get_item(self, owner: str, contact: str) -> RosterItem | None:
        cached = self._rosters.get(owner)
        if cached is not None:
            return cached[1].get(contact)
        return await self._store.get_item(owner, contact)

    async def put_item(self, owner: str, item: RosterItem) -> int:
        return await self._write(
            owner, self._store.put_item(owner, item), lambda items: items.__setitem__(item.jid, item)
        )

    async def remove_item(self, owner: str, contact: str) -> int:
        return await self._write(owner, self._store.remove_item(owner, contact), lambda items: items.pop(contact, None))

    async def replace(self, owner: str, version: int, items: list[RosterItem]) -> None:
        self._forget(owner)
        await self._store.replace(owner, version, items)

    async def delete(self, owner: str) -> None:
        self._forget(owner)
        await self._store.delete(owner)

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    async def _write(self, owner: str, writing, change) -> int:
        self._overtake(owner)
        version = await writing
        cached = self._rosters.get(owner)
        if cached is not None:
            items = dict(cached[1])
            change(items)
            self._rosters[owner] = (version, items)
        return version

    def _forget(self, owner: str) -> None:
        self._overtake(owner)
        self._rosters.pop(owner, None)

    def _overtake(self, owner: str) -> None:
        if owner in self._reads:
            self._reads[owner] = True

    def _remember(self, owner: str, roster: tuple[int, dict[str, RosterItem]]) -> None:
        self._rosters[owner] = roster
        if len(self._rosters) > self._size:
            self._rosters.popitem(last=False)
