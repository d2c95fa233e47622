"""What only the SQLite backend promises: group commit, reads beside a busy writer,
durability across a SIGKILL, schema versions, paths, and index-only query plans."""

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading

import pytest

from xmppd.storage.interfaces import ArchivedStanza, ArchiveQuery, Upload
from xmppd.storage.sqlite import DatabaseClosed, Options, open_backend

ALICE = "alice@example.org"
T0 = 1_700_000_000.0


def stanza(i: int) -> ArchivedStanza:
    return ArchivedStanza(
        id=f"id{i:06d}",
        when=T0 + i,
        with_="a@example.org" if i % 2 == 0 else "b@example.org",
        payload=b"<message><body>%d</body></message>" % i,
    )


@pytest.fixture
async def sqlite_backend(tmp_path):
    backend = open_backend(Options(), str(tmp_path))
    await backend.start()
    yield backend
    await backend.close()


@contextlib.contextmanager
def write_locked(path):
    """Hold the database's write lock from another connection, as another process
    would: the backend's writer must wait for it without stopping the event loop."""
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


async def spin(iterations=40):
    """Let the event loop run for a while (it can only if nothing blocks it)."""
    for _ in range(iterations):
        await asyncio.sleep(0.002)


async def test_writes_wait_off_the_loop_and_commit_in_groups(sqlite_backend):
    store = sqlite_backend.archive("archive")
    assert await store.append(ALICE, stanza(0))
    transactions, writes = sqlite_backend.transactions, sqlite_backend.writes
    with write_locked(sqlite_backend.path):
        tasks = [asyncio.create_task(store.append(ALICE, stanza(i))) for i in range(1, 2001)]
        await spin()  # the loop runs while 2,000 appends wait
        assert not any(task.done() for task in tasks)
        # Reads have their own connection: they go on while the writer waits.
        assert await store.count(ALICE) == 1
    assert all(await asyncio.gather(*tasks))
    assert sqlite_backend.writes - writes == 2000
    # 2,000 appends queued behind the lock commit in batches of up to batch_max (256).
    assert sqlite_backend.transactions - transactions <= 2000 // 256 + 3
    assert await store.count(ALICE) == 2001


async def test_concurrent_appends_share_transactions(sqlite_backend):
    store = sqlite_backend.archive("archive")
    transactions = sqlite_backend.transactions
    results = await asyncio.gather(*(store.append(ALICE, stanza(i)) for i in range(1000)))
    assert all(results)
    assert sqlite_backend.transactions - transactions <= 100


async def test_batch_max_bounds_a_transaction(tmp_path):
    backend = open_backend(Options(batch_max=4), str(tmp_path))
    await backend.start()
    try:
        store = backend.archive("archive")
        transactions = backend.transactions
        with write_locked(backend.path):
            tasks = [asyncio.create_task(store.append(ALICE, stanza(i))) for i in range(40)]
            await spin(5)
        assert all(await asyncio.gather(*tasks))
        assert backend.transactions - transactions >= 10
    finally:
        await backend.close()


async def test_a_failing_write_does_not_undo_the_others_in_its_batch(sqlite_backend):
    store = sqlite_backend.archive("archive")
    upload = Upload(
        id="slot", owner=ALICE, filename="a.txt", size=1, content_type="text/plain", created=T0, expires=T0 + 1
    )
    await sqlite_backend.uploads.add(upload)
    transactions = sqlite_backend.transactions
    with write_locked(sqlite_backend.path):
        appends = [asyncio.create_task(store.append(ALICE, stanza(i))) for i in range(20)]
        duplicate = asyncio.create_task(sqlite_backend.uploads.add(upload))
        more = [asyncio.create_task(store.append(ALICE, stanza(i))) for i in range(20, 40)]
        await spin(5)
    assert all(await asyncio.gather(*appends, *more))
    with pytest.raises(sqlite3.IntegrityError):
        await duplicate
    assert sqlite_backend.transactions - transactions <= 3
    assert await store.count(ALICE) == 40


async def test_schema_version_and_wal(sqlite_backend):
    conn = sqlite3.connect(sqlite_backend.path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


@pytest.mark.parametrize("synchronous,level", [("full", 2), ("normal", 1)])
async def test_synchronous_option_sets_the_writer_pragma(tmp_path, synchronous, level):
    backend = open_backend(Options(synchronous=synchronous), str(tmp_path))
    await backend.start()
    try:
        assert await backend.db.write(lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0]) == level
    finally:
        await backend.close()


def test_synchronous_option_is_checked(tmp_path):
    from xmppd import config

    path = tmp_path / "bad.toml"
    path.write_text("[storage.sqlite]\nsynchronous = 'sometimes'\n")
    with pytest.raises(config.ConfigError, match="storage.sqlite.synchronous: must be one of"):
        config.load(path)


async def test_a_newer_schema_is_refused(tmp_path):
    backend = open_backend(Options(), str(tmp_path))
    await backend.start()
    await backend.close()
    conn = sqlite3.connect(backend.path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    again = open_backend(Options(), str(tmp_path))
    with pytest.raises(RuntimeError, match="newer"):
        await again.start()
    assert not [thread for thread in threading.enumerate() if thread.name.endswith(backend.path)]
    with pytest.raises(DatabaseClosed):
        await again.accounts.get(ALICE)


def with_schema(monkeypatch, sql: str):
    """Pretend this xmppd ships a 002 schema file with `sql` in it."""
    from xmppd.storage.sqlite import database

    shipped = database.schema_files()
    monkeypatch.setattr(database, "schema_files", lambda: shipped + [(2, "002_test.sql", sql)])


UPGRADE = """
-- a comment; and a trigger, whose body has semicolons
ALTER TABLE rooms ADD COLUMN hidden INTEGER NOT NULL DEFAULT 0;
CREATE TABLE upgrade_log (what TEXT);
CREATE TRIGGER rooms_logged AFTER INSERT ON rooms BEGIN
    INSERT INTO upgrade_log (what) VALUES (new.jid);
END;
"""


async def test_a_new_schema_file_upgrades_an_existing_database(tmp_path, monkeypatch):
    backend = open_backend(Options(), str(tmp_path))
    await backend.start()
    await backend.rooms.save("a@muc.example.org", {"x": 1})
    await backend.close()

    with_schema(monkeypatch, UPGRADE)
    backend = open_backend(Options(), str(tmp_path))
    await backend.start()
    try:
        assert await backend.rooms.get("a@muc.example.org") == {"x": 1}
        await backend.rooms.save("b@muc.example.org", {})
    finally:
        await backend.close()
    conn = sqlite3.connect(backend.path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        assert conn.execute("SELECT what FROM upgrade_log").fetchall() == [("b@muc.example.org",)]
    finally:
        conn.close()


async def test_a_failing_upgrade_changes_nothing(tmp_path, monkeypatch):
    backend = open_backend(Options(), str(tmp_path))
    await backend.start()
    await backend.keyvalue("k").set(ALICE, "k", b"v")
    await backend.close()

    with_schema(monkeypatch, "CREATE TABLE half_done (x);\nTHIS IS NOT SQL;\n")
    failing = open_backend(Options(), str(tmp_path))
    with pytest.raises(sqlite3.OperationalError):
        await failing.start()
    conn = sqlite3.connect(backend.path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'half_done'").fetchall() == []
    finally:
        conn.close()

    monkeypatch.undo()
    backend = open_backend(Options(), str(tmp_path))
    await backend.start()
    try:
        assert await backend.keyvalue("k").get(ALICE, "k") == b"v"
    finally:
        await backend.close()


async def test_start_twice_and_close_twice_are_harmless(tmp_path):
    backend = open_backend(Options(), str(tmp_path))
    await backend.start()
    await backend.start()
    await backend.keyvalue("k").set(ALICE, "k", b"v")
    await backend.close()
    await backend.close()


async def test_use_before_start_or_after_close_raises(tmp_path):
    backend = open_backend(Options(), str(tmp_path))
    with pytest.raises(DatabaseClosed):
        await backend.archive("archive").count(ALICE)
    await backend.start()
    await backend.close()
    with pytest.raises(DatabaseClosed):
        await backend.archive("archive").append(ALICE, stanza(1))
    with pytest.raises(DatabaseClosed):
        await backend.rooms.get("room@muc.example.org")


async def test_close_commits_the_writes_already_queued(tmp_path):
    backend = open_backend(Options(), str(tmp_path))
    await backend.start()
    store = backend.archive("archive")
    tasks = [asyncio.create_task(store.append(ALICE, stanza(i))) for i in range(100)]
    await asyncio.sleep(0)  # every append is queued
    await backend.close()
    assert all(await asyncio.gather(*tasks))
    again = open_backend(Options(), str(tmp_path))
    await again.start()
    try:
        assert await again.archive("archive").count(ALICE) == 100
    finally:
        await again.close()


async def test_path_is_relative_to_the_data_dir_unless_absolute(tmp_path):
    relative = open_backend(Options(path="db/xmppd.db"), str(tmp_path / "data"))
    await relative.start()
    await relative.close()
    assert (tmp_path / "data" / "db" / "xmppd.db").is_file()

    absolute = open_backend(Options(path=str(tmp_path / "abs.db")), str(tmp_path / "other"))
    await absolute.start()
    await absolute.close()
    assert (tmp_path / "abs.db").is_file()
    assert not (tmp_path / "other").exists()

    assert Options() == Options(path="xmppd.sqlite", busy_timeout=5.0, batch_max=256)


CHILD = r"""
import asyncio, sys
from xmppd.storage.interfaces import ArchivedStanza
from xmppd.storage.sqlite import Options, open_backend

async def main():
    backend = open_backend(Options(), sys.argv[1])
    await backend.start()
    store = backend.archive("archive")
    i = 0
    while True:                                # until killed
        await store.append("alice@example.org", ArchivedStanza(
            id=f"id{i:06d}", when=float(i), with_="b@example.org", payload=b"<m/>"))
        print(i, flush=True)                   # acked: it must survive the kill
        i += 1

asyncio.run(main())
"""


def test_an_acked_append_survives_sigkill(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        acked = -1
        while acked < 200:
            line = child.stdout.readline()
            assert line, "the child process died"
            acked = int(line)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()

    async def count():
        backend = open_backend(Options(), str(tmp_path))
        await backend.start()
        try:
            store = backend.archive("archive")
            page = await store.query(ALICE, ArchiveQuery(before="", max=1))
            return await store.count(ALICE), page.items[0].id
        finally:
            await backend.close()

    total, last = asyncio.run(count())
    assert total >= acked + 1
    assert last >= f"id{acked:06d}"


class RecordingConnection:
    """Stands in for a reader connection and keeps every statement run through it."""

    def __init__(self, conn):
        self.conn = conn
        self.statements = []

    def execute(self, sql, params=()):
        self.statements.append((sql, list(params)))
        return self.conn.execute(sql, params)


QUERIES = [
    ArchiveQuery(),
    ArchiveQuery(max=10),
    ArchiveQuery(after="id000010", max=10),
    ArchiveQuery(before="", max=10),
    ArchiveQuery(before="id000030", max=10),
    ArchiveQuery(with_="a@example.org", after="id000010", max=10),
    ArchiveQuery(with_="b@example.org", before="", max=10),
    ArchiveQuery(start=T0 + 5, end=T0 + 40, after="id000010", max=5),
    ArchiveQuery(start=T0 + 5, end=T0 + 40, before="id000030", max=5),
    ArchiveQuery(after_id="id000003", before_id="id000040", before="", max=5),
    ArchiveQuery(ids=("id000004", "id000007"), max=5),
    ArchiveQuery(with_="a@example.org", ids=("id000004", "id000008")),
]


@pytest.mark.parametrize("query", QUERIES)
async def test_archive_queries_are_index_searches(sqlite_backend, query):
    store = sqlite_backend.archive("archive")
    await asyncio.gather(*(store.append(ALICE, stanza(i)) for i in range(50)))
    conn = sqlite3.connect(sqlite_backend.path)
    try:
        recording = RecordingConnection(conn)
        store._query(recording, ALICE, query)
        for sql, params in recording.statements:
            plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
            assert plan and all(step.startswith(("SEARCH", "USE TEMP B-TREE FOR ORDER BY")) for step in plan), (
                sql,
                plan,
            )
            if "INDEXED BY" not in sql:  # a few ids may be sorted; a range never
                assert not any("TEMP B-TREE" in step for step in plan), (sql, plan)
    finally:
        conn.close()
