"""What the contract suite cannot see of the Cassandra backend: its data model at work.

Runs on the real node of tests/support/cassandra.py (in the keyspace the contract
suite uses, emptied for each test); a node that cannot start fails these tests.
"""

import asyncio
import re
import time
from pathlib import Path

import pytest

from tests.support.cassandra import CassandraUnavailable, cassandra_node, contract_backend
from xmppd.storage.interfaces import (
    Account,
    ArchivedStanza,
    ArchiveQuery,
    PubSubItem,
    RosterItem,
    Upload,
)

pytestmark = pytest.mark.cassandra

PACKAGE = Path(__file__).resolve().parents[2] / "storage" / "cassandra"
ALICE = "alice@example.org"
BOB = "bob@example.org"
T0 = 1_700_000_000.0


@pytest.fixture
async def make(tmp_path):
    """Started backends on the shared keyspace (emptied once for this test)."""
    backends = []

    async def make(**overrides):
        backend = await contract_backend(tmp_path, **overrides)
        await backend.start()
        backends.append(backend)
        return backend

    yield make
    for backend in backends:
        await backend.close()


def stanza(i: int, when: float | None = None, with_: str | None = None) -> ArchivedStanza:
    return ArchivedStanza(
        id=f"m{i:05d}",
        when=T0 + i if when is None else when,
        with_=with_ or f"peer{i % 3}@example.org",
        payload=f"<message><body>{i}</body></message>".encode(),
    )


def account(jid: str, seed: int = 1) -> Account:
    from xmppd.protocol.sasl import ScramCredentials

    secrets = {
        "sha256": ScramCredentials(
            salt=bytes([seed]) * 16,
            iterations=4096 + seed,
            stored_key=bytes([seed, 1]) * 16,
            server_key=bytes([seed, 2]) * 16,
        )
    }
    return Account(jid=jid, secrets=secrets, created=T0)


def numbers(page) -> list[int]:
    return [int(item.id[1:]) for item in page.items]


async def scalar(backend, cql: str, params=()):
    return (await backend.cql.execute(cql, params)).one()[0]


# ---------------------------------------------------------------- idempotent appends


async def test_cassandra_retried_append_does_not_duplicate(make):
    first, other_process = await make(), await make()  # two clusters, two sessions
    item = stanza(1)
    assert await first.archive("archive").append(ALICE, item) is True
    assert await first.archive("archive").append(ALICE, item) is False
    # A retry through another connection (as after a failover) finds the id too.
    assert await other_process.archive("archive").append(ALICE, item) is False
    bucket = first.archive("archive").bucket_of(item.when)
    key = ("archive", ALICE, bucket)
    rows = "SELECT COUNT(*) FROM archive_items WHERE name = ? AND owner = ? AND bucket = ?"
    assert await scalar(first, rows, key) == 1

    # A retry after the first attempt died before its last write (the id row): the
    # data rows have deterministic keys, so writing them again overwrites, never adds.
    await first.cql.execute(
        "DELETE FROM archive_ids WHERE name = ? AND owner = ? AND id = ?", ("archive", ALICE, item.id)
    )
    assert await other_process.archive("archive").append(ALICE, item) is True
    assert await scalar(first, rows, key) == 1
    assert (
        await scalar(
            first,
            "SELECT COUNT(*) FROM archive_items_by_with WHERE name = ? AND owner = ? AND with_jid = ? AND bucket = ?",
            ("archive", ALICE, item.with_, bucket),
        )
        == 1
    )
    assert (await first.archive("archive").query(ALICE, ArchiveQuery())).items == [item]


async def test_cassandra_concurrent_account_creation_has_one_winner(make):
    """Accounts are created with a lightweight transaction: two nodes racing for one
    JID cannot both succeed."""
    first, second = await make(), await make()
    results = await asyncio.gather(
        *(backend.accounts.create(account(ALICE, seed=n)) for n in range(6) for backend in (first, second))
    )
    assert sorted(results) == [False] * 11 + [True]


async def test_cassandra_concurrent_roster_changes_get_distinct_versions(make):
    """The roster version moves by compare-and-set: concurrent changes from two nodes
    each get their own version, none is lost."""
    first, second = await make(), await make()
    contacts = [f"c{n}@example.net" for n in range(8)]
    versions = await asyncio.gather(
        *(
            (first if n % 2 else second).rosters.put_item(ALICE, RosterItem(jid=contact))
            for n, contact in enumerate(contacts)
        )
    )
    assert sorted(versions) == list(range(1, 9))
    version, items = await first.rosters.get(ALICE)
    assert version == 8 and sorted(items) == sorted(contacts)


# ---------------------------------------------------------------- schema


async def test_cassandra_schema_applied_twice_is_a_noop(make):
    from xmppd.storage.cassandra import init_schema
    from xmppd.storage.cassandra.migrations import applied_versions, apply_schema, schema_files

    backend = await make()
    cql = backend.cql
    shipped = {schema_file.version for schema_file in schema_files()}
    assert shipped and await applied_versions(cql) == shipped

    async def tables():
        return sorted(
            await cql.rows(
                "SELECT table_name, id FROM system_schema.tables WHERE keyspace_name = ?", (backend.options.keyspace,)
            )
        )

    before = await tables()
    recorded = await cql.rows("SELECT version, applied FROM schema_version WHERE component = ?", ("xmppd",))
    assert await apply_schema(cql) == []
    assert await init_schema(backend.options) == []  # what `xmppctl storage init` calls
    # Every statement is IF NOT EXISTS: running a whole file again changes nothing either.
    for schema_file in schema_files():
        for statement in schema_file.statements():
            await cql.execute_ddl(statement)
    assert await tables() == before  # same tables, same table ids
    assert await cql.rows("SELECT version, applied FROM schema_version WHERE component = ?", ("xmppd",)) == recorded


def test_cassandra_schema_files_are_numbered_and_split():
    from xmppd.storage.cassandra.migrations import schema_files, split_statements

    files = schema_files()
    assert [schema_file.version for schema_file in files] == list(range(1, len(files) + 1))
    for schema_file in files:
        for statement in schema_file.statements():
            assert statement.upper().startswith(("CREATE TABLE IF NOT EXISTS", "CREATE TYPE IF NOT EXISTS")), statement
    assert split_statements("a 'x;--y'; -- c; d\nb;") == ["a 'x;--y'", "b"]


# ---------------------------------------------------------------- queries

FORBIDDEN = re.compile(r"allow\s+filtering|create\s+(custom\s+)?index|materialized\s+view", re.IGNORECASE)


def test_cassandra_source_has_no_allow_filtering():
    """grep: no CQL in the package filters on the server or adds an index or a view."""
    from xmppd.storage.cassandra.migrations import split_statements

    sources = sorted(PACKAGE.rglob("*.py")) + sorted(PACKAGE.rglob("*.cql"))
    assert len(sources) >= 5
    for source in sources:
        text = source.read_text()
        if source.suffix == ".cql":  # the statements, not the comments
            text = "\n".join(split_statements(text))
        match = FORBIDDEN.search(text)
        assert match is None, f"{source}: {match.group()}"


async def test_cassandra_statements_name_their_partition(make, monkeypatch):
    """Every statement the stores run (recorded while all of them work) is free of
    ALLOW FILTERING, and every SELECT restricts a partition with WHERE."""
    backend = await make()
    seen: set[str] = set()
    prepare = backend.cql.prepare

    async def recording_prepare(cql, **kwargs):
        seen.add(cql)
        return await prepare(cql, **kwargs)

    monkeypatch.setattr(backend.cql, "prepare", recording_prepare)

    await backend.accounts.create(account(ALICE))
    await backend.accounts.set_secrets(ALICE, account(ALICE, seed=4).secrets)
    await backend.accounts.list("example.org")
    await backend.accounts.delete(ALICE)
    await backend.rosters.put_item(ALICE, RosterItem(jid=BOB))
    await backend.rosters.remove_item(ALICE, BOB)
    await backend.rosters.get(ALICE)
    await backend.rosters.delete(ALICE)
    store = backend.archive("archive")
    await asyncio.gather(*(store.append(ALICE, stanza(i)) for i in range(12)))
    for query in [
        ArchiveQuery(max=3),
        ArchiveQuery(before="", max=3),
        ArchiveQuery(with_="peer1@example.org", start=T0 + 2, end=T0 + 9, max=2),
        ArchiveQuery(after_id="m00001", before_id="m00009", after="m00003"),
        ArchiveQuery(ids=("m00002", "m00005"), before="m00005"),
    ]:
        await store.query(ALICE, query)
    await store.delete(ALICE, ["m00001"])
    await store.delete_older_than(T0 + 3)
    [owner async for owner in store.owners()]
    await store.delete(ALICE)
    kv = backend.keyvalue("private")
    await kv.set(ALICE, "k", b"v")
    await kv.keys(ALICE)
    await kv.delete(ALICE, "k")
    [owner async for owner in kv.owners()]
    await backend.rooms.save("room@muc.example.org", {})
    await backend.rooms.list("muc.example.org")
    await backend.rooms.delete("room@muc.example.org")
    node = "urn:xmpp:microblog:0"
    await backend.pubsub.set_node(ALICE, node, {})
    for n in range(3):
        await backend.pubsub.publish(ALICE, node, PubSubItem(f"i{n}", b"<x/>", ALICE, T0), 2)
    await backend.pubsub.get_items(ALICE, node, max_items=1)
    await backend.pubsub.get_items(ALICE, node, ids=["i1"])
    await backend.pubsub.retract(ALICE, node, "i2")
    [service async for service in backend.pubsub.services()]
    await backend.pubsub.delete_node(ALICE, node)
    await backend.uploads.add(Upload("u", ALICE, "f", 1, "text/plain", T0, T0 + 1))
    await backend.uploads.mark_completed("u")
    await backend.uploads.list(ALICE)
    await backend.uploads.expired(T0 + 5)
    await backend.uploads.remove("u")

    assert len(seen) > 60
    for cql in seen:
        assert not FORBIDDEN.search(cql), cql
        if cql.lstrip().upper().startswith("SELECT"):
            assert " WHERE " in cql, f"not restricted to a partition: {cql}"


async def test_cassandra_large_archive_pages_across_buckets(make, monkeypatch):
    """600 items in one-minute buckets (about 80 of them, with empty hours between):
    paging forward and backward, filters and cursors all cross bucket boundaries."""
    backend = await make(archive_bucket_seconds=60)
    store = backend.archive("archive")
    # Every 7 s, and an hour's gap after every 100 items: buckets hold 8 or 9 items.
    items = [stanza(i, when=T0 + 7 * i + 3600 * (i // 100)) for i in range(600)]
    for start in range(0, len(items), 200):
        assert all(await asyncio.gather(*(store.append(ALICE, item) for item in items[start : start + 200])))
    buckets = await backend.cql.rows(
        "SELECT bucket FROM archive_buckets WHERE name = ? AND owner = ? AND with_jid = ?", ("archive", ALICE, "")
    )
    assert len(buckets) == len({store.bucket_of(item.when) for item in items}) > 60
    assert await store.count(ALICE) == 600

    # Forward in pages of 37 (which never line up with a bucket).
    seen, after = [], None
    while True:
        page = await store.query(ALICE, ArchiveQuery(after=after, max=37))
        assert page.count == 600
        seen += page.items
        if page.complete:
            break
        after = page.items[-1].id
    assert seen == items

    # Backward in pages of 41, from the end.
    seen, before = [], ""
    while True:
        page = await store.query(ALICE, ArchiveQuery(before=before, max=41))
        seen = page.items + seen
        if page.complete:
            break
        before = page.items[0].id
    assert seen == items

    # A party's items (every third), a time window across a gap, and id cursors.
    party = [item for item in items if item.with_ == "peer1@example.org"]
    seen, after = [], None
    while True:
        page = await store.query(ALICE, ArchiveQuery(with_="peer1@example.org", after=after, max=13))
        assert page.count == len(party)
        seen += page.items
        if page.complete:
            break
        after = page.items[-1].id
    assert seen == party
    start, end = items[95].when, items[104].when + 1
    page = await store.query(ALICE, ArchiveQuery(start=start, end=end))
    assert numbers(page) == list(range(95, 105)) and page.count == 10
    page = await store.query(ALICE, ArchiveQuery(after_id="m00150", before_id="m00420", before="", max=20))
    assert numbers(page) == list(range(400, 420)) and page.count == 269

    # A small page reads one or two bucket slices, not the archive.
    slices = []
    execute = backend.cql.execute

    async def counting(cql, *args, **kwargs):
        if isinstance(cql, str) and cql.startswith("SELECT id, at, with_jid, payload"):
            slices.append(cql)
        return await execute(cql, *args, **kwargs)

    monkeypatch.setattr(backend.cql, "execute", counting)
    page = await store.query(ALICE, ArchiveQuery(after="m00300", max=5))
    assert numbers(page) == list(range(301, 306))
    assert len(slices) <= 2
    monkeypatch.undo()

    # Retention sweep: whole buckets and part of the boundary bucket go.
    cut = items[250].when + 0.5
    assert await store.delete_older_than(cut) == 251
    remaining = await store.query(ALICE, ArchiveQuery())
    assert remaining.items == items[251:] and remaining.count == 349
    left = await backend.cql.rows(
        "SELECT bucket FROM archive_buckets WHERE name = ? AND owner = ? AND with_jid = ?", ("archive", ALICE, "")
    )
    assert min(bucket for (bucket,) in left) == store.bucket_of(cut)

    assert await store.delete(ALICE) == 349
    assert await store.count(ALICE) == 0
    assert [owner async for owner in store.owners()] == []
    assert (
        await backend.cql.rows("SELECT bucket FROM archive_buckets WHERE name = ? AND owner = ?", ("archive", ALICE))
        == []
    )


async def test_cassandra_retention_by_ttl(make):
    """With archive_ttl an item is written with a TTL counted from its time."""
    backend = await make(archive_ttl={"offline": 3600})
    store = backend.archive("offline")
    now = time.time()
    old = stanza(1, when=now - 3600 + 2)  # two seconds left to live
    fresh = stanza(2, when=now)
    assert await store.append(ALICE, old) and await store.append(ALICE, fresh)
    assert await backend.archive("archive").append(ALICE, fresh)

    async def ttl(name, item):
        return await scalar(
            backend,
            "SELECT TTL(payload) FROM archive_items WHERE name = ? AND owner = ? AND bucket = ? AND at = ? AND id = ?",
            (name, ALICE, store.bucket_of(item.when), item.when, item.id),
        )

    assert 0 < await ttl("offline", old) <= 2
    assert 3590 < await ttl("offline", fresh) <= 3600
    assert await ttl("archive", fresh) is None  # no retention configured there

    deadline = time.monotonic() + 20
    while (await store.query(ALICE, ArchiveQuery())).items != [fresh]:
        assert time.monotonic() < deadline, "the expired item is still there"
        await asyncio.sleep(0.25)
    assert await store.count(ALICE) == 1


# ---------------------------------------------------------------- the bridge and the node


def test_cassandra_backend_runs_on_uvloop(tmp_path):
    uvloop = pytest.importorskip("uvloop")

    async def work():
        backend = await contract_backend(tmp_path)
        await backend.start()
        try:
            store = backend.archive("archive")
            results = await asyncio.gather(*(store.append(ALICE, stanza(i)) for i in range(50)))
            page = await store.query(ALICE, ArchiveQuery(before="", max=10))
            return all(results), numbers(page), type(asyncio.get_running_loop()).__module__
        finally:
            await backend.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        stored, last, loop_module = runner.run(work())
    assert stored and last == list(range(40, 50)) and loop_module.startswith("uvloop")


def test_cassandra_node_that_cannot_start_is_an_error_with_its_reason(monkeypatch):
    monkeypatch.delenv("XMPPD_TEST_CASSANDRA", raising=False)
    monkeypatch.setenv("XMPPD_CASSANDRA_JVM_OPTS", "-XX:+NoSuchJvmOption")
    with pytest.raises(CassandraUnavailable, match="NoSuchJvmOption"):
        with cassandra_node():
            pass


def test_cassandra_options_are_checked():
    from xmppd.storage.cassandra import Options, open_backend
    from xmppd.storage.cassandra.migrations import replication_literal

    with pytest.raises(ValueError, match="consistency"):
        open_backend(Options(consistency="MOSTLY"))
    with pytest.raises(ValueError, match="keyspace"):
        open_backend(Options(keyspace="bad-name"))
    with pytest.raises(ValueError, match="archive_ttl.offline"):
        open_backend(Options(archive_ttl={"offline": -1}))
    assert Options().problems() == []
    assert (
        replication_literal({"class": "NetworkTopologyStrategy", "dc1": 3})
        == "{'class': 'NetworkTopologyStrategy', 'dc1': '3'}"
    )


def test_cassandra_options_from_the_config_file(tmp_path):
    """[storage.cassandra] is read strictly, like every other section."""
    from xmppd.config import ConfigError, parse

    config = parse(
        {
            "storage": {
                "default": "sqlite",
                "archive": "cassandra",
                "cassandra": {
                    "contact_points": ["10.0.0.1", "10.0.0.2"],
                    "keyspace": "chat",
                    "replication": {"class": "NetworkTopologyStrategy", "dc1": 3},
                    "archive_ttl": {"offline": 2592000},
                },
            }
        },
        "xmppd.toml",
    )
    options = config.backend_options["cassandra"]
    assert options.contact_points == ("10.0.0.1", "10.0.0.2") and options.keyspace == "chat"
    with pytest.raises(ConfigError, match="storage.cassandra.consistency"):
        parse({"storage": {"cassandra": {"consistency": "MOSTLY"}}}, "xmppd.toml")
    with pytest.raises(ConfigError, match="did you mean 'keyspace'"):
        parse({"storage": {"cassandra": {"keyspac": "chat"}}}, "xmppd.toml")
