"""Issue 20 item 2, end to end: a stanza that is not namespace-well-formed (here an attribute
with an unbound prefix) gets its sender the not-well-formed stream error (RFC 6120 4.9.3.13)
and never reaches a recipient, online, offline or in a room, whose strict client would drop
the connection on it; and one stored by an older version does not break its owner's login,
offline delivery or MAM queries."""

import sqlite3
import time

import pytest

from tests.support.inbox import IQ, MESSAGE, message, presence
from tests.support.muc import NS_MAM, create_room, new_user
from tests.support.raw import RawClient
from tests.support.server import XmppdProcess

NOT_WELL_FORMED = "<not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = XmppdProcess(tmp_path_factory.mktemp("nswf")).start()
    yield process
    process.stop()


def bad_message(to: str, type_: str = "chat") -> str:
    return f"<message to='{to}' type='{type_}' id='evil' foo:bar='x'><body>evil</body></message>"


async def refused(server, local: str, stanza: str, *, before: str = "") -> None:
    """`local` logs in over a raw socket, sends `before` then `stanza`, and gets the stream error."""
    raw = await RawClient().login(server.port, local, "secret")
    if before:
        await raw.send(before)
        await raw.expect(r"<subject")  # entered the room
    await raw.send(stanza)
    text = await raw.closed()
    assert NOT_WELL_FORMED in text and text.rstrip().endswith("</stream:stream>"), text


async def send_good(server, local: str, to: str) -> None:
    raw = await RawClient().login(server.port, local, "secret")
    await raw.send(
        f"<message to='{to}' type='chat' id='good'><body>good</body></message>"
        "<iq type='get' id='sync' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
    )
    await raw.expect(r"<iq(?=[^>]*id=.sync.)[^>]*>")
    await raw.close()


def unharmed(client, inbox) -> None:
    assert client.is_connected()
    assert not inbox.received(lambda s: s.get("id") == "evil" or s.findtext("{jabber:client}body") == "evil")


async def test_to_an_online_user(server, account_pool, connect):
    alice = account_pool.local()
    bob, bob_inbox = await connect()
    await refused(server, alice, bad_message(bob.boundjid.bare))
    await send_good(server, alice, bob.boundjid.bare)
    await bob_inbox.wait(message(body="good"))
    unharmed(bob, bob_inbox)


async def test_to_an_offline_user(server, account_pool, connect):
    alice, bob = account_pool.local(), next(account_pool)
    await refused(server, alice, bad_message(bob))
    await send_good(server, alice, bob)
    client, inbox = await connect(bob)
    await inbox.wait(message(body="good"))
    unharmed(client, inbox)


async def test_to_a_room(server, account_pool):
    owner = await new_user(server)
    room = await create_room(owner)
    attacker = account_pool.local()
    join = f"<presence to='{room}/mallory'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    await refused(server, attacker, bad_message(room, "groupchat"), before=join)
    await owner.say(room, "good")
    unharmed(owner.client, owner.inbox)
    later = await new_user(server)  # and the history is harmless too
    await later.join(room, "later")
    await later.subject(room)
    assert later.inbox.received(message(body="good"))
    unharmed(later.client, later.inbox)
    await later.logout()
    await owner.logout()


def database(server) -> sqlite3.Connection:
    return sqlite3.connect(server.directory / "data" / "xmppd.sqlite", timeout=10)


def archive_corrupt(server, store: str, owner: str, when: float, payload: bytes) -> None:
    """Straight into the SQLite store, as an older version stored such stanzas."""
    with database(server) as conn:
        conn.execute(
            'INSERT INTO archive (store, owner, id, "when", with_, payload) VALUES (?, ?, ?, ?, ?, ?)',
            (store, owner, "corrupt", when, "someone", payload),
        )


CORRUPT = b"<message xmlns='jabber:client' to='%s' id='evil' foo:bar='x'><body>evil</body></message>"


async def test_a_corrupt_stored_stanza_does_not_break_its_owner(server, account_pool, connect):
    alice, bob = account_pool.local(), next(account_pool)
    sender = f"{alice}@{server.domain}"
    for store in ("offline", "archive"):
        archive_corrupt(server, store, bob, time.time() - 60, CORRUPT % bob.encode())
    with database(server) as conn:  # a subscription request waiting for bob
        conn.execute(
            "INSERT INTO keyvalue (store, owner, key, value) VALUES (?, ?, ?, ?)",
            ("roster-pending", bob, sender, b"<presence xmlns='jabber:client' type='subscribe' a:b='1'/>"),
        )
    await send_good(server, alice, bob)

    client, inbox = await connect(bob)  # login, initial presence, offline delivery
    await inbox.wait(message(body="good"))
    client.send_raw(f"<iq type='set' id='mam'><query xmlns='{NS_MAM}' queryid='q'/></iq>")
    result = await inbox.wait(lambda s: s.tag == IQ and s.get("id") == "mam")
    assert result.get("type") == "result"
    archived = inbox.received(lambda s: s.tag == MESSAGE and s.find(f"{{{NS_MAM}}}result") is not None)
    assert [s.findtext(".//{jabber:client}body") for s in archived] == ["good"]
    assert not inbox.received(presence("subscribe"))
    unharmed(client, inbox)
    for where in (f"owner={bob} id=corrupt", f"archive={bob} id=corrupt", f"owner={bob} contact={sender}"):
        await server.wait_for_log(f"event=stored-stanza-unreadable {where} error=")
    with database(server) as conn:  # deleted: they no longer block the queue
        assert conn.execute(
            "SELECT count(*) FROM archive WHERE store = 'offline' AND owner = ?", (bob,)
        ).fetchone() == (0,)
        assert conn.execute(
            "SELECT count(*) FROM keyvalue WHERE store = 'roster-pending' AND owner = ?", (bob,)
        ).fetchone() == (0,)


async def test_a_corrupt_stored_room_message_does_not_break_history_or_archive(tmp_path):
    """Read back after a restart: the room's history for a joiner, and its archive."""
    server = XmppdProcess(tmp_path, server_section="graceful_shutdown_timeout = 1").start()
    try:
        owner = await new_user(server)
        room = await create_room(owner, persistentroom="1")
        await owner.say(room, "good")
        archive_corrupt(
            server,
            "muc",
            room,
            time.time() + 1,
            b"<message xmlns='jabber:client' type='groupchat' from='%s/owner' foo:bar='x'>"
            b"<body>evil</body></message>" % room.encode(),
        )
        await owner.logout()
        server.stop()
        server.start()

        joiner = await new_user(server)
        await joiner.join(room, "joiner")
        await joiner.subject(room)
        history = [s.findtext("{jabber:client}body") for s in joiner.inbox.received(message())]
        assert [body for body in history if body is not None] == ["good"]
        result = await joiner.iq("set", room, f"<query xmlns='{NS_MAM}' queryid='q'/>")
        assert result.get("type") == "result"
        archived = joiner.inbox.received(lambda s: s.tag == MESSAGE and s.find(f"{{{NS_MAM}}}result") is not None)
        assert [s.findtext(".//{jabber:client}body") for s in archived] == ["good"]
        unharmed(joiner.client, joiner.inbox)
        await server.wait_for_log(f"event=stored-stanza-unreadable room={room} id=corrupt error=")
        await server.wait_for_log(f"event=stored-stanza-unreadable archive={room} id=corrupt error=")
        await joiner.logout()
    finally:
        server.stop()
