"""The roster cache answers like the store under it, through writes and concurrent reads."""

import asyncio

import pytest

from xmppd.roster_cache import CachedRosters
from xmppd.storage import open_backend
from xmppd.storage.interfaces import RosterItem
from xmppd.storage.memory import Options


class CountingStore:
    """A RosterStore that counts reads and can hold them until released."""

    def __init__(self, store):
        self.store = store
        self.reads = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.at_gate = asyncio.Event()

    async def get(self, owner):
        self.reads += 1
        self.at_gate.set()
        await self.gate.wait()
        return await self.store.get(owner)

    async def get_item(self, owner, contact):
        self.reads += 1
        return await self.store.get_item(owner, contact)

    def __getattr__(self, name):
        return getattr(self.store, name)


@pytest.fixture
async def stores(tmp_path):
    backend = open_backend("memory", Options(), str(tmp_path))
    await backend.start()
    counting = CountingStore(backend.rosters)
    yield counting, CachedRosters(counting, size=2)
    await backend.close()


async def test_reads_are_served_from_memory_after_the_first(stores):
    counting, cache = stores
    await counting.put_item("a@x", RosterItem("b@x", subscription="both"))
    assert (await cache.get("a@x"))[1]["b@x"].subscription == "both"
    reads = counting.reads
    assert (await cache.get_item("a@x", "b@x")).subscription == "both"
    assert await cache.get_item("a@x", "nobody@x") is None
    await cache.get("a@x")
    assert counting.reads == reads


async def test_writes_go_through_and_keep_the_cache_exact(stores):
    counting, cache = stores
    await cache.get("a@x")
    version = await cache.put_item("a@x", RosterItem("b@x", name="Bee"))
    assert await cache.get("a@x") == await counting.store.get("a@x")
    assert (await cache.get("a@x"))[0] == version
    await cache.remove_item("a@x", "b@x")
    assert await cache.get("a@x") == await counting.store.get("a@x")
    await cache.replace("a@x", 40, [RosterItem("c@x")])
    assert await cache.get("a@x") == await counting.store.get("a@x") == (40, {"c@x": RosterItem("c@x")})
    await cache.delete("a@x")
    assert await cache.get("a@x") == (0, {})


async def test_a_read_overtaken_by_a_write_is_not_kept(stores):
    counting, cache = stores
    counting.gate.clear()
    reading = asyncio.ensure_future(cache.get("a@x"))
    await counting.at_gate.wait()
    await cache.put_item("a@x", RosterItem("b@x"))
    counting.gate.set()
    await reading
    assert "b@x" in (await cache.get("a@x"))[1]


async def test_callers_cannot_change_the_cached_roster(stores):
    _, cache = stores
    _, items = await cache.get("a@x")
    items["intruder@x"] = RosterItem("intruder@x")
    assert "intruder@x" not in (await cache.get("a@x"))[1]


async def test_only_the_last_rosters_are_kept(stores):
    counting, cache = stores
    for owner in ("a@x", "b@x", "c@x"):
        await cache.get(owner)
    reads = counting.reads
    await cache.get_item("a@x", "z@x")  # evicted: read from the store
    assert counting.reads == reads + 1


async def test_a_store_shared_by_processes_is_read_every_time(stores):
    """Another node writes a shared store (PostgreSQL) behind any copy: none is kept."""
    counting, _ = stores
    counting.shared_by_processes = True
    cache = CachedRosters(counting)
    await cache.get("a@x")
    await counting.store.put_item("a@x", RosterItem("b@x"))  # written by "another node"
    assert "b@x" in (await cache.get("a@x"))[1]
    assert (await cache.get_item("a@x", "b@x")) == RosterItem("b@x")
    assert counting.reads == 3
