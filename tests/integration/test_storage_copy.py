"""`xmppctl storage init` and `xmppctl storage copy` between SQLite and Cassandra.

The story of a migration, on the run's real Cassandra node: a server's SQLite data (every
kind of store, archives over several pages and days) is copied into a keyspace that an
xmppd set to create_schema = false refuses until `xmppctl storage init` made it; the
counts printed match, everything reads back equal through the interfaces, a rerun adds
nothing, xmppd then runs on the copy, and the copy back to SQLite gives the same data.
"""

import asyncio
import subprocess
import sys
import time

import pytest

from tests.support.cassandra import cassandra_section, new_keyspace
from tests.support.messaging import archive, bodies, connect
from tests.support.server import XmppdProcess
from xmppd import config
from xmppd.accounts import HASHES
from xmppd.protocol.sasl import derive_scram_credentials
from xmppd.storage import open_backend
from xmppd.storage.interfaces import Account, ArchivedStanza, ArchiveQuery, PubSubItem, RosterItem, Upload
from xmppd.storage.sqlite import Options as SqliteOptions

pytestmark = pytest.mark.cassandra

DOMAIN = "localhost"
ALICE, BOB, CAROL = (f"{name}@{DOMAIN}" for name in ("alice", "bob", "carol"))
ROOM = f"lounge@conference.{DOMAIN}"
T0 = 1_700_000_000.0
DAY = 86400.0
ARCHIVED = 1234  # over two pages of the copy, over several days
EXPECTED = {
    "accounts": 3,
    "rosters": 2,
    "roster items": 3,
    "roster versions (sum)": 8,
    "archive archive": ARCHIVED + 2,
    "archive muc": 12,
    "archive offline": 3,
    "archive x-custom": 1,
    "keyvalue bookmarks": 1,
    "keyvalue private": 2,
    "keyvalue vcard": 2,
    "rooms": 3,
    "pubsub nodes": 3,
    "pubsub items": 5,
    "uploads": 2,
}


def message(n: int, with_: str) -> ArchivedStanza:
    return ArchivedStanza(
        id=f"{n:08d}",
        when=T0 + n * 600.5,
        with_=with_,
        payload=f"<message xmlns='jabber:client' type='chat'><body>b{n} ✓</body></message>".encode(),
    )


async def populate(backend) -> None:
    """A little of everything a server keeps, through the interfaces."""
    secrets = {name: derive_scram_credentials("secret", name) for name in HASHES}
    for jid in (ALICE, BOB, CAROL):
        assert await backend.accounts.create(Account(jid, secrets, T0))
    # Versions beyond the item counts: items changed and removed on the way.
    for item in (RosterItem(BOB, "Bob", "to", ask=True), RosterItem(CAROL), RosterItem("gone@example.net")):
        await backend.rosters.put_item(ALICE, item)
    await backend.rosters.put_item(ALICE, RosterItem(BOB, "Bob", "both", groups=("Friends", "Ünï")))
    await backend.rosters.remove_item(ALICE, "gone@example.net")
    for item in (
        RosterItem(ALICE, subscription="both"),
        RosterItem(ALICE, subscription="both", approved=True),
        RosterItem(ALICE, subscription="both", pending_in=True, approved=True),
    ):
        await backend.rosters.put_item(BOB, item)

    archived = backend.archive("archive")
    await asyncio.gather(*(archived.append(ALICE, message(n, BOB if n % 3 else CAROL)) for n in range(ARCHIVED)))
    await archived.append(BOB, message(0, ALICE))
    await archived.append(CAROL, message(1, ALICE))
    for n in range(3):
        await backend.archive("offline").append(CAROL, message(n, ALICE))
    for n in range(12):
        await backend.archive("muc").append(ROOM, message(n, f"{ROOM}/nick{n % 2}"))
    await backend.archive("x-custom").append(ALICE, message(7, BOB))

    await backend.keyvalue("vcard").set(ALICE, "vcard", b"<vCard xmlns='vcard-temp'/>")
    await backend.keyvalue("vcard").set(BOB, "vcard", bytes(range(256)))
    await backend.keyvalue("private").set(ALICE, "{x}y", b"<y xmlns='x'/>")
    await backend.keyvalue("private").set(ALICE, "{x}z", b"<z xmlns='x'/>")
    await backend.keyvalue("bookmarks").set(BOB, "list", b"[]")

    await backend.rooms.save(
        ROOM, {"config": {"persistent": True, "name": "Lounge ☕"}, "affiliations": {ALICE: "owner"}}
    )
    await backend.rooms.save(f"attic@conference.{DOMAIN}", {"config": {"persistent": True}})
    await backend.rooms.save("elsewhere@muc.example.net", {"config": {}})

    for node, count in (("urn:xmpp:avatar:data", 1), ("urn:xmpp:bookmarks:1", 3)):
        await backend.pubsub.set_node(ALICE, node, {"max_items": 10, "access_model": "presence"})
        for n in range(count):
            await backend.pubsub.publish(
                ALICE, node, PubSubItem(f"item{n}", f"<x n='{n}'/>".encode(), ALICE, T0 + n), max_items=None
            )
    # Republished: now the newest; the copy must keep that order.
    await backend.pubsub.publish(
        ALICE, "urn:xmpp:bookmarks:1", PubSubItem("item0", b"<x n='again'/>", ALICE, T0 + 9), max_items=None
    )
    await backend.pubsub.set_node(f"pubsub.{DOMAIN}", "news", {"title": "News"})
    await backend.pubsub.publish(f"pubsub.{DOMAIN}", "news", PubSubItem("n1", b"<entry/>", BOB, T0), max_items=None)

    # Not expired yet, or the server on the copy would sweep them away.
    now = time.time()
    await backend.uploads.add(Upload("slot-a", ALICE, "cat.jpg", 1234, "image/jpeg", now, now + 30 * DAY, True))
    await backend.uploads.add(Upload("slot-b", BOB, "notes.txt", 10, "text/plain", now, now + DAY))


async def snapshot(backend) -> dict:
    """Everything the backend holds, read through the interfaces, for comparing."""
    users = await backend.accounts.list(DOMAIN)
    data = {
        "accounts": {jid: await backend.accounts.get(jid) for jid in users},
        "rosters": {jid: await backend.rosters.get(jid) for jid in users},
        "uploads": {jid: await backend.uploads.list(jid) for jid in users},
    }
    for name in await backend.archive_names():
        store = backend.archive(name)
        data[f"archive {name}"] = {
            owner: (await store.query(owner, ArchiveQuery())).items async for owner in store.owners()
        }
    for name in await backend.keyvalue_names():
        store = backend.keyvalue(name)
        data[f"keyvalue {name}"] = {
            owner: {key: await store.get(owner, key) for key in await store.keys(owner)}
            async for owner in store.owners()
        }
    data["rooms"] = {
        room: await backend.rooms.get(room)
        async for service in backend.rooms.services()
        for room in await backend.rooms.list(service)
    }
    data["pubsub"] = {
        (service, node): (await backend.pubsub.get_node(service, node), await backend.pubsub.get_items(service, node))
        async for service in backend.pubsub.services()
        for node in await backend.pubsub.list_nodes(service)
    }
    return data


async def read(kind: str, options, directory) -> dict:
    backend = open_backend(kind, options, str(directory))
    await backend.start()
    try:
        return await snapshot(backend)
    finally:
        await backend.close()


def counts(output: str) -> dict[str, tuple[int, int]]:
    """The table `storage copy` prints: {store: (from, to)}."""
    table = {}
    for line in output.splitlines()[1:]:
        name, source, target = line.replace("  DIFFERS", "").rsplit(None, 2)
        table[name.strip()] = (int(source), int(target))
    return table


def options(process: XmppdProcess, kind: str):
    """The backend options of [storage.<kind>] in the config of `process`."""
    return config.load(process.config_path).backend_options[kind]


@pytest.fixture(scope="module")
def migration(cassandra, tmp_path_factory):
    """SQLite data; an xmppd refused on the empty keyspace; `storage init`; the copy."""
    directory = tmp_path_factory.mktemp("copy")
    keyspace = new_keyspace("copy")
    section = cassandra_section(keyspace, create_schema=False)
    for name in ("sqlite", "cassandra"):
        (directory / name / "data").mkdir(parents=True)
    # The config of the copy names both backends: SQLite the default, Cassandra a section.
    on_sqlite = XmppdProcess(directory / "sqlite", section)
    on_cassandra = XmppdProcess(
        directory / "cassandra",
        '[storage]\ndefault = "cassandra"\n' + section,
        server_section="graceful_shutdown_timeout = 1",
    )

    async def fill():
        backend = open_backend("sqlite", SqliteOptions(), str(directory / "sqlite" / "data"))
        await backend.start()
        try:
            await populate(backend)
        finally:
            await backend.close()

    asyncio.run(fill())

    refused = subprocess.run(
        [sys.executable, "-m", "xmppd.cli", "--config", str(on_cassandra.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    init = [on_sqlite.ctl("storage", "init", "--backend", "cassandra").stdout for _ in range(2)]
    copied = on_sqlite.ctl("storage", "copy", "--from", "sqlite", "--to", "cassandra", check=False)
    return dict(
        on_sqlite=on_sqlite,
        on_cassandra=on_cassandra,
        keyspace=keyspace,
        section=section,
        refused=refused,
        init=init,
        copied=copied,
    )


def test_cassandra_keyspace_is_made_by_storage_init_when_the_server_may_not(migration):
    refused = migration["refused"]
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"the Cassandra keyspace {migration['keyspace']} lacks schema versions [1]" in refused.stderr
    assert "xmppctl storage init" in refused.stderr and "Traceback" not in refused.stderr
    assert migration["init"] == ["cassandra: schema versions [1] applied\n", "cassandra: schema up to date\n"]


async def test_copy_sqlite_to_cassandra_counts_match_and_data_reads_back_equal(migration):
    copied = migration["copied"]
    assert copied.returncode == 0, copied.stdout + copied.stderr
    assert counts(copied.stdout) == {name: (count, count) for name, count in EXPECTED.items()}
    original = await read("sqlite", SqliteOptions(), migration["on_sqlite"].directory / "data")
    assert await read("cassandra", options(migration["on_sqlite"], "cassandra"), None) == original
    assert [item.id for item in original["pubsub"][(ALICE, "urn:xmpp:bookmarks:1")][1]] == ["item0", "item2", "item1"]


async def test_copy_to_cassandra_again_duplicates_nothing(migration):
    again = migration["on_sqlite"].ctl("storage", "copy", "--from", "sqlite", "--to", "cassandra", check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert counts(again.stdout) == counts(migration["copied"].stdout)


async def test_xmppd_runs_on_the_cassandra_copy(migration):
    server = migration["on_cassandra"].start()
    try:
        alice = await connect(server, ALICE, "phone")  # the copied SCRAM secrets
        roster = await alice.iq("get", ALICE, "<query xmlns='jabber:iq:roster'/>")
        items = {item.get("jid"): item.get("subscription") for item in roster.iter("{jabber:iq:roster}item")}
        assert items == {BOB: "both", CAROL: "none"}
        assert roster.find("{jabber:iq:roster}query").get("ver") == "5"
        results, _ = await archive(alice, rsm="<max>3</max><before/>")
        assert bodies(results) == [f"b{n} ✓" for n in range(ARCHIVED - 3, ARCHIVED)]
        await alice.logout()
    finally:
        server.stop()


async def test_copy_cassandra_back_to_sqlite_gives_the_same_data(migration, tmp_path):
    back = XmppdProcess(tmp_path, '[storage.sqlite]\npath = "back.sqlite"\n\n' + migration["section"])
    copied = back.ctl("storage", "copy", "--from", "cassandra", "--to", "sqlite", check=False)
    assert copied.returncode == 0, copied.stdout + copied.stderr
    assert counts(copied.stdout) == {name: (count, count) for name, count in EXPECTED.items()}
    original = await read("sqlite", SqliteOptions(), migration["on_sqlite"].directory / "data")
    assert await read("sqlite", SqliteOptions(path="back.sqlite"), back.directory / "data") == original


async def test_cassandra_copy_exits_non_zero_when_counts_differ(migration):
    """The target holds one message the source does not: the copy says so and fails."""
    extra = open_backend("cassandra", options(migration["on_sqlite"], "cassandra"), None)
    await extra.start()
    try:
        await extra.archive("offline").append(BOB, message(99, ALICE))
    finally:
        await extra.close()
    copied = migration["on_sqlite"].ctl("storage", "copy", "--from", "sqlite", "--to", "cassandra", check=False)
    assert copied.returncode == 1
    table = counts(copied.stdout)
    assert table["archive offline"] == (3, 4)
    assert [line for line in copied.stdout.splitlines() if line.endswith("DIFFERS")] == [
        line for line in copied.stdout.splitlines() if line.startswith("archive offline")
    ]
    assert "the counts differ in archive offline" in copied.stderr


def test_storage_copy_bad_arguments(migration):
    same = migration["on_sqlite"].ctl("storage", "copy", "--from", "sqlite", "--to", "sqlite", check=False)
    assert same.returncode == 2 and "the same backend" in same.stderr
    unknown = migration["on_sqlite"].ctl("storage", "copy", "--from", "sqlite", "--to", "mongo", check=False)
    assert unknown.returncode == 2 and "unknown storage backend 'mongo'" in unknown.stderr
