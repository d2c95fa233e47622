"""The stores of storage/interfaces.py in dicts and lists.

Every call lets the other tasks run once before it takes effect, as a call to a real
backend does: code tested on memory meets the interleavings (and the races) it meets on
SQLite.

What a caller hands over is stored as the other backends store it (secrets and JSON
documents as text, payloads as bytes), so a caller that changes its objects afterwards
changes nothing stored, and what comes back is what SQLite would give back.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import functools
import inspect
import json
import math
from collections.abc import AsyncIterator, Iterable

from xmppd.protocol.sasl import ScramCredentials

from .. import domain_of
from ..archive_ranges import KeyRange, query_ranges
from ..interfaces import (
    Account,
    ArchivedStanza,
    ArchivePage,
    ArchiveQuery,
    PubSubItem,
    RosterItem,
    UnknownArchiveId,
    Upload,
)
from ..scram_secrets import decode_secrets, encode_secrets


def _suspending(cls):
    """The store class `cls` with a turn of the event loop before each coroutine method."""

    def suspending(method):
        @functools.wraps(method)
        async def call(*args, **kwargs):
            await asyncio.sleep(0)
            return await method(*args, **kwargs)

        return call

    for name, method in list(vars(cls).items()):
        if inspect.iscoroutinefunction(method):
            setattr(cls, name, suspending(method))
    return cls


async def _each(values: Iterable[str]) -> AsyncIterator[str]:
    for value in sorted(values):
        await asyncio.sleep(0)
        yield value


# ---------------------------------------------------------------- accounts


@_suspending
class MemoryAccountStore:
    def __init__(self) -> None:
        self._accounts: dict[str, tuple[str, float]] = {}  # jid -> (secrets, created)

    async def create(self, account: Account) -> bool:
        if account.jid in self._accounts:
            return False
        self._accounts[account.jid] = (encode_secrets(account.secrets), float(account.created))
        return True

    async def get(self, jid: str) -> Account | None:
        if jid not in self._accounts:
            return None
        secrets, created = self._accounts[jid]
        return Account(jid=jid, secrets=decode_secrets(secrets), created=created)

    async def set_secrets(self, jid: str, secrets: dict[str, ScramCredentials]) -> bool:
        if jid not in self._accounts:
            return False
        self._accounts[jid] = (encode_secrets(secrets), self._accounts[jid][1])
        return True

    async def delete(self, jid: str) -> bool:
        return self._accounts.pop(jid, None) is not None

    async def list(self, domain: str) -> list[str]:
        return sorted(jid for jid in self._accounts if domain_of(jid) == domain)


# ---------------------------------------------------------------- rosters


@_suspending
class MemoryRosterStore:
    def __init__(self) -> None:
        self._versions: dict[str, int] = {}
        self._items: dict[str, dict[str, RosterItem]] = {}

    async def get(self, owner: str) -> tuple[int, dict[str, RosterItem]]:
        items = self._items.get(owner, {})
        return self._versions.get(owner, 0), {contact: items[contact] for contact in sorted(items)}

    async def get_item(self, owner: str, contact: str) -> RosterItem | None:
        return self._items.get(owner, {}).get(contact)

    async def put_item(self, owner: str, item: RosterItem) -> int:
        self._items.setdefault(owner, {})[item.jid] = _frozen(item)
        return self._bump(owner)

    async def remove_item(self, owner: str, contact: str) -> int:
        if self._items.get(owner, {}).pop(contact, None) is None:
            return self._versions.get(owner, 0)  # nothing changed: same version
        return self._bump(owner)

    async def delete(self, owner: str) -> None:
        self._items.pop(owner, None)
        self._versions.pop(owner, None)

    async def replace(self, owner: str, version: int, items: list[RosterItem]) -> None:
        self._items[owner] = {item.jid: _frozen(item) for item in items}
        self._versions[owner] = version

    def _bump(self, owner: str) -> int:
        self._versions[owner] = self._versions.get(owner, 0) + 1
        return self._versions[owner]


def _frozen(item: RosterItem) -> RosterItem:
    return dataclasses.replace(item, groups=tuple(item.groups))


# ---------------------------------------------------------------- archives


def _key(item: ArchivedStanza) -> tuple[float, str]:
    return item.when, item.id


def _within(items: list[ArchivedStanza], keys: KeyRange) -> list[ArchivedStanza]:
    """The items (sorted by key) inside the range."""
    start, end = 0, len(items)
    if keys.lower is not None:
        find = bisect.bisect_right if keys.lower_exclusive else bisect.bisect_left
        start = find(items, keys.lower, key=_key)
    if keys.upper is not None:
        end = bisect.bisect_left(items, keys.upper, key=_key)
    return items[start:end]


@_suspending
class MemoryArchiveStore:
    """One named archive: per owner, a list sorted by (when, id) and an index by id."""

    capabilities = frozenset({"total", "ids", "full_id_range"})

    def __init__(self) -> None:
        self._items: dict[str, list[ArchivedStanza]] = {}
        self._by_id: dict[str, dict[str, ArchivedStanza]] = {}

    def has_items(self) -> bool:
        return bool(self._items)

    async def append(self, owner: str, item: ArchivedStanza) -> bool:
        by_id = self._by_id.setdefault(owner, {})
        if item.id in by_id:
            return False
        item = dataclasses.replace(item, when=float(item.when), payload=bytes(item.payload))
        by_id[item.id] = item
        bisect.insort(self._items.setdefault(owner, []), item, key=_key)
        return True

    async def append_many(self, items: list[tuple[str, ArchivedStanza]]) -> list[bool]:
        return [await self.append(owner, item) for owner, item in items]

    async def query(self, owner: str, query: ArchiveQuery) -> ArchivePage:
        if query.max is not None and query.max < 0:
            raise ValueError("ArchiveQuery.max must not be negative")
        items, by_id = self._items.get(owner, []), self._by_id.get(owner, {})

        def position(item_id: str) -> tuple[float, str]:
            if item_id not in by_id:
                raise UnknownArchiveId(item_id)
            return _key(by_id[item_id])

        filters, page = query_ranges(query, position)
        wanted = None if query.ids is None else set(query.ids)

        def matches(item: ArchivedStanza) -> bool:
            return (query.with_ is None or item.with_ == query.with_) and (wanted is None or item.id in wanted)

        selected = [item for item in _within(items, page) if matches(item)]
        limit = len(selected) if query.max is None else query.max
        complete = len(selected) <= limit
        if query.before is not None:  # the last `limit` items before the cursor
            selected = selected[max(0, len(selected) - limit) :] if limit else []
        else:
            selected = selected[:limit]
        count = None
        if query.count:
            count = sum(1 for item in _within(items, filters) if matches(item))
        return ArchivePage(items=selected, complete=complete, count=count)

    async def count(self, owner: str) -> int:
        return len(self._items.get(owner, []))

    async def delete(self, owner: str, ids: list[str] | None = None) -> int:
        if ids is None:
            removed = len(self._items.pop(owner, []))
            self._by_id.pop(owner, None)
            return removed
        return self._remove(owner, {item_id for item_id in ids if item_id in self._by_id.get(owner, {})})

    async def delete_older_than(self, when: float) -> int:
        return sum(
            self._remove(owner, {item.id for item in items if item.when < when})
            for owner, items in list(self._items.items())
        )

    def _remove(self, owner: str, ids: set[str]) -> int:
        if not ids:
            return 0
        kept = [item for item in self._items[owner] if item.id not in ids]
        if kept:
            self._items[owner] = kept
            for item_id in ids:
                del self._by_id[owner][item_id]
        else:
            del self._items[owner], self._by_id[owner]
        return len(ids)

    def owners(self) -> AsyncIterator[str]:
        return _each(list(self._items))


# ---------------------------------------------------------------- key-value


@_suspending
class MemoryKeyValueStore:
    def __init__(self) -> None:
        self._values: dict[str, dict[str, bytes]] = {}

    def has_items(self) -> bool:
        return bool(self._values)

    async def get(self, owner: str, key: str) -> bytes | None:
        return self._values.get(owner, {}).get(key)

    async def set(self, owner: str, key: str, value: bytes) -> None:
        self._values.setdefault(owner, {})[key] = bytes(value)

    async def delete(self, owner: str, key: str | None = None) -> None:
        values = self._values.get(owner, {})
        if key is not None:
            values.pop(key, None)
        if key is None or not values:
            self._values.pop(owner, None)

    async def keys(self, owner: str) -> list[str]:
        return sorted(self._values.get(owner, {}))

    def owners(self) -> AsyncIterator[str]:
        return _each(list(self._values))


# ---------------------------------------------------------------- rooms


@_suspending
class MemoryRoomStore:
    def __init__(self) -> None:
        self._rooms: dict[str, str] = {}  # room -> its state in JSON

    async def get(self, room: str) -> dict | None:
        state = self._rooms.get(room)
        return None if state is None else json.loads(state)

    async def save(self, room: str, state: dict) -> None:
        self._rooms[room] = json.dumps(state)

    async def delete(self, room: str) -> None:
        self._rooms.pop(room, None)

    async def list(self, service: str) -> list[str]:
        return sorted(room for room in self._rooms if domain_of(room) == service)

    def services(self) -> AsyncIterator[str]:
        return _each({domain_of(room) for room in self._rooms})


# ---------------------------------------------------------------- pubsub


@_suspending
class MemoryPubSubStore:
    def __init__(self) -> None:
        self._nodes: dict[tuple[str, str], str] = {}  # (service, node) -> config in JSON
        # (service, node) -> items by id, oldest first (a dict keeps insertion order)
        self._items: dict[tuple[str, str], dict[str, PubSubItem]] = {}

    async def get_node(self, service: str, node: str) -> dict | None:
        config = self._nodes.get((service, node))
        return None if config is None else json.loads(config)

    async def set_node(self, service: str, node: str, config: dict) -> None:
        self._nodes[service, node] = json.dumps(config)

    async def delete_node(self, service: str, node: str) -> None:
        self._nodes.pop((service, node), None)
        self._items.pop((service, node), None)

    async def list_nodes(self, service: str) -> list[str]:
        return sorted(node for owner, node in self._nodes if owner == service)

    async def publish(self, service: str, node: str, item: PubSubItem, max_items: int | None) -> None:
        items = self._items.setdefault((service, node), {})
        items.pop(item.id, None)  # a republished item is the newest
        items[item.id] = dataclasses.replace(item, payload=bytes(item.payload))
        if max_items is not None:
            for old in list(items)[: max(0, len(items) - max_items)]:
                del items[old]
            if not items:
                del self._items[service, node]

    async def get_items(
        self, service: str, node: str, ids: list[str] | None = None, max_items: int | None = None
    ) -> list[PubSubItem]:
        newest_first = reversed(self._items.get((service, node), {}).values())
        found = [item for item in newest_first if ids is None or item.id in ids]
        return found if max_items is None else found[:max_items]

    async def retract(self, service: str, node: str, item_id: str) -> bool:
        items = self._items.get((service, node), {})
        if items.pop(item_id, None) is None:
            return False
        if not items:
            del self._items[service, node]
        return True

    def services(self) -> AsyncIterator[str]:
        return _each({service for service, _ in [*self._nodes, *self._items]})


# ---------------------------------------------------------------- uploads


@_suspending
class MemoryUploadStore:
    def __init__(self) -> None:
        self._uploads: dict[str, Upload] = {}

    async def add(self, upload: Upload) -> None:
        self._uploads[upload.id] = upload

    async def get(self, upload_id: str) -> Upload | None:
        return self._uploads.get(upload_id)

    async def mark_completed(self, upload_id: str) -> bool:
        upload = self._uploads.get(upload_id)
        if upload is None or upload.completed:
            return False
        self._uploads[upload_id] = dataclasses.replace(upload, completed=True)
        return True

    async def list(self, owner: str) -> list[Upload]:
        return sorted(
            (upload for upload in self._uploads.values() if upload.owner == owner),
            key=lambda upload: (upload.created, upload.id),
        )

    async def usage(
        self, owner: str, now: float, open_since: float | None = None, exclude: str = ""
    ) -> tuple[int, int]:
        since = math.inf if open_since is None else open_since
        counted = [
            upload.size
            for upload in self._uploads.values()
            if upload.owner == owner
            and upload.expires >= now
            and upload.id != exclude
            and (upload.completed or upload.created >= since)
        ]
        return sum(counted), len(counted)

    async def remove(self, upload_id: str) -> None:
        self._uploads.pop(upload_id, None)

    async def expired(self, now: float) -> list[Upload]:
        """Uploads whose expiry time has passed (expires < now), soonest first."""
        return sorted(
            (upload for upload in self._uploads.values() if upload.expires < now),
            key=lambda upload: (upload.expires, upload.id),
        )
