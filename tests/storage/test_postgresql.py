"""What only the PostgreSQL backend promises beyond the contract suite: several
processes on one database. Each backend object here has its own pool of connections,
as each xmppd node has: their writes race in the database, not in one event loop."""

import asyncio

import asyncpg
import pytest

from tests.storage.test_contract import account
from tests.support.postgresql import contract_backend, new_database
from tests.support.server import free_port
from xmppd.storage import StorageUnavailable
from xmppd.storage.interfaces import ArchivedStanza, PubSubItem, RosterItem, Upload
from xmppd.storage.postgresql import Options, open_backend, schema_files, stores
from xmppd.storage.postgresql.stores import NODE_LOCK

ALICE = "alice@example.org"
NODES = 2
WRITES = 20  # per node


@pytest.fixture
async def nodes(postgresql, tmp_path):
    """Two started backends on one (emptied) database."""
    backends = [await contract_backend(tmp_path) for _ in range(NODES)]
    for backend in backends:
        await backend.start()
    yield backends
    for backend in backends:
        await backend.close()


async def test_nodes_starting_together_create_the_schema_once(postgresql):
    dsn = await asyncio.to_thread(new_database, "schema")
    backends = [open_backend(Options(dsn=dsn, pool_size=1)) for _ in range(3)]
    try:
        await asyncio.gather(*(backend.start() for backend in backends))
        conn = await asyncpg.connect(dsn)
        try:
            versions = [version for (version,) in await conn.fetch("SELECT version FROM xmppd_schema ORDER BY 1")]
        finally:
            await conn.close()
        assert versions == [version for version, _, _ in schema_files()]
    finally:
        await asyncio.gather(*(backend.close() for backend in backends))


async def test_a_database_of_a_newer_xmppd_is_refused(nodes, tmp_path):
    await nodes[0].pool.execute("INSERT INTO xmppd_schema (version, name) VALUES (999, '999_future.sql')")
    try:
        later = await contract_backend(tmp_path)
        with pytest.raises(StorageUnavailable, match="schema version 999, newer than this xmppd knows"):
            await later.start()
    finally:
        await nodes[0].pool.execute("DELETE FROM xmppd_schema WHERE version = 999")


async def test_roster_versions_of_writers_on_two_nodes_never_collide(nodes):
    async def write(node: int) -> list[int]:
        return [
            await nodes[node].rosters.put_item(ALICE, RosterItem(f"c{node}-{n}@example.net")) for n in range(WRITES)
        ]

    versions = await asyncio.gather(*(write(node) for node in range(NODES)))
    assert sorted(sum(versions, [])) == list(range(1, NODES * WRITES + 1))
    for backend in nodes:
        version, items = await backend.rosters.get(ALICE)
        assert version == NODES * WRITES and len(items) == NODES * WRITES


async def test_one_account_registered_on_two_nodes_at_once_has_one_winner(nodes):
    results = await asyncio.gather(
        *(backend.accounts.create(account(ALICE, seed=node)) for node, backend in enumerate(nodes))
    )
    assert sorted(results) == [False, True]
    winner = results.index(True)
    assert await nodes[1 - winner].accounts.get(ALICE) == account(ALICE, seed=winner)


async def test_an_upload_completed_on_two_nodes_at_once_completes_once(nodes):
    await nodes[0].uploads.add(Upload("slot", ALICE, "f.jpg", 10, "image/jpeg", 1.0, 2e9))
    results = await asyncio.gather(*(backend.uploads.mark_completed("slot") for backend in nodes))
    assert sorted(results) == [False, True]


async def test_a_publisher_waits_for_one_on_another_node_and_keeps_max_items(nodes):
    """Node 1 is publishing an item to a node (its transaction is open) when node 0
    publishes one too: node 0's trim waits for node 1's commit, so it counts that item
    and exactly max_items stay (each trimming past the other's uncommitted item would
    leave one too many)."""
    pubsub_node, maximum = "urn:xmpp:avatar:data", 3
    for n in range(maximum):
        await nodes[0].pubsub.publish(ALICE, pubsub_node, PubSubItem(f"old{n}", b"<data/>", ALICE, float(n)), maximum)
    async with nodes[1].pool.acquire() as other:
        transaction = other.transaction()
        await transaction.start()
        await other.execute(NODE_LOCK, ALICE, pubsub_node)
        await other.execute(
            'INSERT INTO pubsub_items (service, node, id, payload, publisher, "when")'
            " VALUES ($1, $2, 'theirs', '', $1, 10)",
            ALICE,
            pubsub_node,
        )
        publishing = asyncio.ensure_future(
            nodes[0].pubsub.publish(ALICE, pubsub_node, PubSubItem("mine", b"<data/>", ALICE, 11.0), maximum)
        )

        async def waiting_or_done():
            while not publishing.done() and not await other.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ):
                await asyncio.sleep(0.01)

        await asyncio.wait_for(waiting_or_done(), 10)
        await transaction.commit()
    await publishing
    items = await nodes[0].pubsub.get_items(ALICE, pubsub_node)
    assert [item.id for item in items] == ["mine", "theirs", "old2"]


async def test_unreachable_server_is_storage_unavailable_naming_it():
    port = free_port()
    backend = open_backend(Options(host="127.0.0.1", port=port, database="nowhere", connect_timeout=2.0))
    with pytest.raises(StorageUnavailable, match=f"cannot use PostgreSQL at 127.0.0.1 port {port}, database nowhere"):
        await backend.start()


async def test_deletes_of_many_rows_go_in_chunks_and_remove_them_all(nodes, monkeypatch):
    monkeypatch.setattr(stores, "DELETE_CHUNK", 3)
    archive = nodes[0].archive("archive")
    for owner in (ALICE, "bob@example.org"):
        for n in range(10):
            await archive.append(owner, ArchivedStanza(f"{n:04d}", float(n), "x@example.org", b"<m/>"))
    assert await archive.delete(ALICE) == 10
    assert await archive.delete_older_than(7.0) == 7
    assert await archive.count(ALICE) == 0 and await archive.count("bob@example.org") == 3
