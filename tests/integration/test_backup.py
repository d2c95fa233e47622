"""`xmppctl backup` and `xmppctl restore` of a whole server (issue 19).

A real xmppd on SQLite gets users, a roster, offline messages, MAM, a room with its
archive, a PEP item and an upload; it is backed up while a client keeps sending to it;
the backup is restored into a fresh SQLite data dir and into a PostgreSQL database, an
xmppd starts on each, and clients find everything there, compared by id (the archive
restored is a prefix of the running server's: one snapshot, nothing torn). The server
on PostgreSQL is backed up in turn (through the driver) and restored into SQLite. A corrupted
or unknown-version manifest, a damaged data file and a non-empty target are refused.
"""

import asyncio
import json
import shutil

import pytest

from tests.support.accounts import create_accounts
from tests.support.inbox import message
from tests.support.messaging import NS_MAM, NS_RSM, bare, connect, round_trip, send, subscribe_both
from tests.support.muc import create_room
from tests.support.pep import item_ids, items_request, publish
from tests.support.postgresql import new_database, storage_config
from tests.support.server import XmppdProcess
from tests.support.upload import KiB, download, http, payload, upload

QUICK_STOP = "graceful_shutdown_timeout = 1"
DOMAIN = "localhost"
ALICE, BOB, CAROL = (f"{name}@{DOMAIN}" for name in ("alice", "bob", "carol"))
NODE = "urn:example:backup:0"
BEFORE = 10  # chat messages archived before the backup
OFFLINE = 3  # messages waiting for carol
SAID = 4  # groupchat messages in the room's archive
DURING = 300  # at most this many messages sent while the backup runs
FILE = payload(64 * KiB, seed=19)
_queries = iter(range(10**6))


async def archive_ids(user, to: str | None = None) -> list[str]:
    """Every id of an archive (the user's own, or `to`'s), oldest first, page by page."""
    ids, after = [], ""
    while True:
        query_id = f"b{next(_queries)}"
        answer = await user.iq(
            "set",
            to or bare(user.jid),
            f"<query xmlns='{NS_MAM}' queryid='{query_id}'><set xmlns='{NS_RSM}'><max>100</max>{after}</set></query>",
        )
        assert answer.get("type") == "result"
        results = [
            s.find(f"{{{NS_MAM}}}result")
            for s in user.inbox.received(lambda s: s.find(f"{{{NS_MAM}}}result") is not None)
        ]
        page = [result.get("id") for result in results if result.get("queryid") == query_id]
        ids += page
        if answer.find(f"{{{NS_MAM}}}fin").get("complete") == "true" or not page:
            return ids
        after = f"<after>{page[-1]}</after>"


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    """The running server, filled, and its backup made while bob keeps sending."""
    server = XmppdProcess(tmp_path_factory.mktemp("origin"), server_section=QUICK_STOP).start()
    directory = tmp_path_factory.mktemp("backups") / "full"
    state = {"server": server, "directory": directory}

    async def scenario():
        create_accounts(server, ["alice", "bob", "carol"])
        alice, bob = await connect(server, ALICE, "phone"), await connect(server, BOB, "phone")
        await subscribe_both(alice, bob)
        for n in range(BEFORE):
            send(alice, BOB, body=f"before {n}")
        await bob.inbox.wait(message(body=f"before {BEFORE - 1}"))
        for n in range(OFFLINE):
            send(alice, CAROL, body=f"offline {n}")
        room = await create_room(alice, persistentroom="1")
        for n in range(SAID):
            await alice.say(room, f"said {n}")
        published = await alice.iq("set", ALICE, publish(NODE, "<x xmlns='urn:example'/>", "item-1"))
        assert published.get("type") == "result"
        async with http() as session:
            slot = await upload(alice.client, f"upload.{DOMAIN}", session, FILE, "photo.bin")
        await round_trip(alice)
        state["before"] = await archive_ids(alice)

        sent, done = [], asyncio.Event()

        async def keep_sending():
            for n in range(DURING):
                if done.is_set():
                    return
                sent.append(send(bob, ALICE, body=f"during {n}"))
                await round_trip(bob)  # paced by the server, not by a clock

        sender = asyncio.create_task(keep_sending())
        state["backup"] = await asyncio.to_thread(server.ctl, "backup", str(directory), check=False)
        done.set()
        await sender
        state.update(
            sent=sent,
            room=room,
            url=slot.get_url,
            after=await archive_ids(alice),
            room_ids=await archive_ids(alice, room),
        )
        await alice.logout()
        await bob.logout()

    asyncio.run(scenario())
    yield state
    server.stop()


def restored(origin, directory, extra_config: str = "", backup=None) -> XmppdProcess:
    """A fresh xmppd restored from the backup (the origin's, or `backup`) and started."""
    server = XmppdProcess(directory, extra_config, server_section=QUICK_STOP)
    done = server.ctl("restore", str(backup or origin["directory"]), check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return server.start()


async def check_everything_is_there(origin, server: XmppdProcess, backup=None) -> None:
    manifest = json.loads(((backup or origin["directory"]) / "manifest.json").read_text())
    alice = await connect(server, ALICE, "laptop")  # the restored SCRAM secrets
    roster = await alice.iq("get", ALICE, "<query xmlns='jabber:iq:roster'/>")
    assert {(item.get("jid"), item.get("subscription")) for item in roster.iter("{jabber:iq:roster}item")} == {
        (BOB, "both")
    }
    ids = await archive_ids(alice)
    # Everything archived before the backup; then a prefix of what the server went on
    # archiving: a snapshot of one moment, no message missing in the middle.
    assert ids[: len(origin["before"])] == origin["before"]
    assert ids == origin["after"][: len(ids)]
    assert await archive_ids(alice, origin["room"]) == origin["room_ids"] and len(origin["room_ids"]) == SAID
    items = await alice.iq("get", ALICE, items_request(NODE))
    assert item_ids(items) == ["item-1"]
    async with http() as session:
        url = origin["url"].replace(f":{origin['server'].https_port}/", f":{server.https_port}/")
        response, body = await download(session, url)
        assert response.status == 200 and body == FILE
    carol = await connect(server, CAROL, "phone")
    for n in range(OFFLINE):
        await carol.inbox.wait(message(from_=f"{ALICE}/phone", body=f"offline {n}"))
    await alice.logout()
    await carol.logout()
    # Alice's and bob's archives as they were in the backup's counts.
    assert manifest["counts"]["archive archive"] == len(ids) * 2
    assert manifest["counts"]["archive offline"] == OFFLINE and manifest["counts"]["accounts"] == 3


def test_backup_while_the_server_runs_and_a_client_sends(origin):
    backup = origin["backup"]
    assert backup.returncode == 0, backup.stdout + backup.stderr
    assert origin["sent"], "the client sent nothing while the backup ran"
    manifest = json.loads((origin["directory"] / "manifest.json").read_text())
    assert manifest["version"] == 1 and manifest["format"] == "xmppd-backup"
    assert manifest["source"] == {"default": "sqlite", "archive": "sqlite", "media": "filesystem"}
    assert manifest["media"] == {"files": 1, "bytes": len(FILE)}
    counts = manifest["counts"]
    assert (counts["accounts"], counts["rosters"], counts["roster items"], counts["rooms"]) == (3, 2, 2, 1)
    assert counts["archive offline"] == OFFLINE and counts["archive muc"] == SAID and counts["uploads"] == 1
    assert 2 * (len(origin["before"])) <= counts["archive archive"] <= 2 * len(origin["after"])
    assert counts["pubsub items"] >= 1
    assert (origin["directory"] / "media").stat().st_mode & 0o077 == 0


async def test_restore_into_fresh_sqlite_and_again_refused_as_not_empty(origin, tmp_path):
    server = restored(origin, tmp_path)
    try:
        await check_everything_is_there(origin, server)
    finally:
        server.stop()
    refused = server.ctl("restore", str(origin["directory"]), check=False)
    assert refused.returncode == 1
    assert "restore: the target storage is not empty (3 accounts" in refused.stderr
    assert "--force" in refused.stderr and "Traceback" not in refused.stderr


async def test_restore_into_postgresql_and_from_there_into_sqlite(origin, postgresql, tmp_path):
    (tmp_path / "postgresql").mkdir()
    server = restored(origin, tmp_path / "postgresql", storage_config(new_database("restore"), pool_size=4))
    try:
        again = tmp_path / "backup-of-postgresql"  # read through the driver, running; before carol
        done = await asyncio.to_thread(server.ctl, "backup", str(again), check=False)  # takes her messages
        assert done.returncode == 0, done.stdout + done.stderr
        await check_everything_is_there(origin, server)
    finally:
        server.stop()
    manifest = json.loads((again / "manifest.json").read_text())
    assert manifest["source"]["default"] == "postgresql"
    assert manifest["counts"] == json.loads((origin["directory"] / "manifest.json").read_text())["counts"]
    (tmp_path / "sqlite").mkdir()
    server = restored(origin, tmp_path / "sqlite", backup=again)
    try:
        await check_everything_is_there(origin, server, again)
    finally:
        server.stop()


def test_restore_under_a_running_server_is_refused(origin):
    refused = origin["server"].ctl("restore", "--force", str(origin["directory"]), check=False)
    assert refused.returncode == 2
    assert "restore: the server of" in refused.stderr and "is running" in refused.stderr


@pytest.mark.parametrize(
    "damage, complaint",
    [
        (lambda d: (d / "manifest.json").write_text('{"format": "xmppd-backup", "vers'), "manifest.json is corrupted"),
        (
            lambda d: (d / "manifest.json").write_text(
                (d / "manifest.json").read_text().replace('"version": 1', '"version": 2')
            ),
            "backup format version 2 is unknown to this xmppd (it reads version 1)",
        ),
        (lambda d: (d / "manifest.json").unlink(), "not an xmppd backup, or an unfinished one"),
        (lambda d: (d / "data.sqlite").open("r+b").write(b"garbage!"), "does not match the checksum of the manifest"),
    ],
)
def test_a_damaged_backup_is_refused(origin, tmp_path, damage, complaint):
    copy = tmp_path / "backup"
    shutil.copytree(origin["directory"], copy)
    damage(copy)
    target = XmppdProcess(tmp_path)
    refused = target.ctl("restore", str(copy), check=False)
    assert refused.returncode == 1 and complaint in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    assert target.ctl("users").stdout == ""  # nothing was written
