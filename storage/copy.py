"""Copy a whole server's data from one storage backend to another (``xmppctl storage copy``).

Only the interfaces of interfaces.py are used, so any backend can be either end:
accounts of the given domains, their rosters (with their versions: a client that
cached a version must not be told "unchanged" for other items), every named archive
and key-value store the source holds, rooms, pubsub services with their nodes and
items, and upload records (the file bytes live in the media store, which is not a
storage backend and is not copied).

The copy streams: archives are read a page at a time and listings are walked as the
backends yield them, with a bounded number of writes in flight. It is idempotent:
archive appends are idempotent on the item id, accounts are created once, rosters
are replaced whole, key-value pairs, rooms and nodes are upserts, pubsub items are
republished oldest first (which keeps their order) and uploads are written only when
the target's record differs. A rerun after a failure finishes the job without
duplicating anything.

`census` counts what a backend holds, store by store, the same way on both ends, so
that the caller can compare the source's counts with the target's after the copy.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from typing import TypeVar

from .interfaces import ArchiveQuery, StorageBackend

T = TypeVar("T")

# Archive items read per query, and writes in flight at once.
PAGE = 500
CONCURRENCY = 32


async def _each(
    items: Iterable[T] | AsyncIterable[T], work: Callable[[T], Awaitable[None]], limit: int = CONCURRENCY
) -> None:
    """Run `work` on every item with at most `limit` running, reading `items` lazily;
    the first error cancels the rest and is raised."""
    running: set[asyncio.Task] = set()

    async def settle(when) -> None:
        done, _ = await asyncio.wait(running, return_when=when)
        running.difference_update(done)
        for task in done:
            task.result()

    try:
        if isinstance(items, AsyncIterable):
            async for item in items:
                if len(running) >= limit:
                    await settle(asyncio.FIRST_COMPLETED)
                running.add(asyncio.ensure_future(work(item)))
        else:
            for item in items:
                if len(running) >= limit:
                    await settle(asyncio.FIRST_COMPLETED)
                running.add(asyncio.ensure_future(work(item)))
        if running:
            await settle(asyncio.ALL_COMPLETED)
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)


async def _accounts(backend: StorageBackend, domains: Iterable[str]) -> list[str]:
    return [jid for domain in domains for jid in await backend.accounts.list(domain)]


# ---------------------------------------------------------------- copy


async def copy(
    source: StorageBackend,
    target: StorageBackend,
    domains: Iterable[str],
    progress: Callable[[str], None] = lambda text: None,
    page: int = PAGE,
) -> None:
    """Copy everything of `source` to `target` (both started); accounts, rosters and
    uploads of the users of `domains`."""
    users = await _accounts(source, domains)

    async def account(jid: str) -> None:
        stored = await source.accounts.get(jid)
        if stored is None:  # deleted meanwhile
            return
        if not await target.accounts.create(stored):
            existing = await target.accounts.get(jid)
            if existing is not None and existing.secrets != stored.secrets:
                await target.accounts.set_secrets(jid, stored.secrets)

    await _each(users, account)
    progress("accounts")

    async def roster(jid: str) -> None:
        version, items = await source.rosters.get(jid)
        if version or items:
            await target.rosters.replace(jid, version, list(items.values()))

    await _each(users, roster)
    progress("rosters")

    for name in await source.archive_names():
        await _copy_archive(source, target, name, page)
        progress(f"archive {name}")

    for name in await source.keyvalue_names():
        from_store, to_store = source.keyvalue(name), target.keyvalue(name)

        async def keyvalue(owner: str, from_store=from_store, to_store=to_store) -> None:
            for key in await from_store.keys(owner):
                value = await from_store.get(owner, key)
                if value is not None:
                    await to_store.set(owner, key, value)

        await _each(from_store.owners(), keyvalue)
        progress(f"keyvalue {name}")

    async def service_rooms(service: str) -> None:
        async def room(jid: str) -> None:
            state = await source.rooms.get(jid)
            if state is not None:
                await target.rooms.save(jid, state)

        await _each(await source.rooms.list(service), room)

    await _each(source.rooms.services(), service_rooms, limit=1)
    progress("rooms")

    async def pubsub_service(service: str) -> None:
        async def node(name: str) -> None:
            config = await source.pubsub.get_node(service, name)
            if config is None:
                return
            await target.pubsub.set_node(service, name, config)
            # Oldest first, one at a time: publication order is the items' order.
            for item in reversed(await source.pubsub.get_items(service, name)):
                await target.pubsub.publish(service, name, item, max_items=None)

        await _each(await source.pubsub.list_nodes(service), node)

    await _each(source.pubsub.services(), pubsub_service, limit=4)
    progress("pubsub")

    async def uploads(jid: str) -> None:
        for upload in await source.uploads.list(jid):
            existing = await target.uploads.get(upload.id)
            if existing == upload:
                continue
            if existing is not None:
                await target.uploads.remove(upload.id)
            await target.uploads.add(upload)

    await _each(users, uploads)
    progress("uploads")


async def _copy_archive(source: StorageBackend, target: StorageBackend, name: str, page: int) -> None:
    from_store, to_store = source.archive(name), target.archive(name)

    async def owner_archive(owner: str) -> None:
        after = None
        while True:
            found = await from_store.query(owner, ArchiveQuery(after=after, max=page, count=False))
            await _each(found.items, lambda item: to_store.append(owner, item))
            if found.complete or not found.items:
                return
            after = found.items[-1].id

    # A few owners at once, each with its page's appends in flight: many small
    # archives (offline queues) and one huge archive (a busy room) both go fast.
    await _each(from_store.owners(), owner_archive, limit=4)


# ---------------------------------------------------------------- census


async def census(backend: StorageBackend, domains: Iterable[str]) -> dict[str, int]:
    """How many of each thing `backend` holds, by store name (what the copy compares)."""
    counts: dict[str, int] = {}
    users = await _accounts(backend, domains)
    counts["accounts"] = len(users)
    rosters = [await backend.rosters.get(jid) for jid in users]
    counts["rosters"] = sum(1 for version, items in rosters if version or items)
    counts["roster items"] = sum(len(items) for _, items in rosters)
    counts["roster versions (sum)"] = sum(version for version, _ in rosters)
    for name in await backend.archive_names():
        store = backend.archive(name)
        counts[f"archive {name}"] = sum([await store.count(owner) async for owner in store.owners()])
    for name in await backend.keyvalue_names():
        store = backend.keyvalue(name)
        counts[f"keyvalue {name}"] = sum([len(await store.keys(owner)) async for owner in store.owners()])
    counts["rooms"] = sum([len(await backend.rooms.list(service)) async for service in backend.rooms.services()])
    nodes = items = 0
    async for service in backend.pubsub.services():
        for node in await backend.pubsub.list_nodes(service):
            nodes += 1
            items += len(await backend.pubsub.get_items(service, node))
    counts["pubsub nodes"], counts["pubsub items"] = nodes, items
    counts["uploads"] = sum([len(await backend.uploads.list(jid)) for jid in users])
    return counts
