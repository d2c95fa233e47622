"""End to end on Apache Cassandra: an xmppd whose every store is on the run's real node
(tests/support/cassandra.py), in a keyspace of its own that the server creates at
start-up: login, roster subscriptions, offline messages, the users' archive and a
room's archive with paging, and a persistent room across a restart. What the server
says is checked, and so is what it left in Cassandra."""

import asyncio

import pytest

from tests.support.cassandra import new_keyspace, open_keyspace, xmppd_storage_config
from tests.support.inbox import NS_ROSTER, message
from tests.support.messaging import archive, bare, bodies, connect, round_trip, rsm, send, subscribe_both, with_id
from tests.support.muc import NS_MUC, SERVICE, create_room
from tests.support.server import XmppdProcess

pytestmark = pytest.mark.cassandra

NS_DELAY = "urn:xmpp:delay"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
QUICK_STOP = "graceful_shutdown_timeout = 1"
SCHEMA_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def server(cassandra, tmp_path_factory):
    keyspace = new_keyspace("e2e")
    process = XmppdProcess(
        tmp_path_factory.mktemp("cassandra-e2e"), xmppd_storage_config(keyspace), server_section=QUICK_STOP
    )
    process.keyspace = keyspace
    # The first start creates the keyspace and its tables: seconds of schema changes.
    yield process.start(timeout=SCHEMA_TIMEOUT)
    process.stop()


@pytest.fixture
async def login(server):
    """Log users in (tests.support.messaging.connect); log them out after the test."""
    opened = []

    async def login(jid, resource="phone"):
        user = await connect(server, jid, resource)
        opened.append(user)
        return user

    yield login
    for user in opened:
        if user.client.is_connected():
            await user.logout()


@pytest.fixture
async def stored(server):
    """The server's keyspace, opened from the test: what the server committed."""
    backend = await open_keyspace(server.keyspace)
    yield backend
    await backend.close()


async def test_cassandra_login_and_roster_subscription_to_both(users, login, stored):
    alice, bob = users(2)
    a, b = await login(alice), await login(bob)
    await subscribe_both(a, b)

    for user, contact in ((a, bob), (b, alice)):
        result = await user.iq("get", bare(user.jid), f"<query xmlns='{NS_ROSTER}'/>")
        items = {item.get("jid"): item for item in result.iter(f"{{{NS_ROSTER}}}item")}
        assert items[contact].get("subscription") == "both" and items[contact].get("ask") is None
        version = result.find(f"{{{NS_ROSTER}}}query").get("ver")
        # XEP-0237: the version the client holds is current, so nothing is sent again.
        again = await user.iq("get", bare(user.jid), f"<query xmlns='{NS_ROSTER}' ver='{version}'/>")
        assert again.get("type") == "result" and len(again) == 0
        stored_version, stored_items = await stored.rosters.get(bare(user.jid))
        assert str(stored_version) == version and stored_items[contact].subscription == "both"


async def test_cassandra_offline_messages_are_delivered_in_order(users, login, stored):
    alice, bob = users(2)
    a = await login(alice)
    said = [f"while you were away {n}" for n in range(3)]
    for body in said:
        send(a, bob, body=body)
    await round_trip(a)
    assert await stored.archive("offline").count(bob) == 3

    b = await login(bob)
    received = [await b.inbox.wait(message(from_=a.jid, body=body)) for body in said]
    assert all(m.find(f"{{{NS_DELAY}}}delay") is not None for m in received)

    async def emptied():  # the delivered messages are deleted after they went out
        while await stored.archive("offline").count(bob):
            await asyncio.sleep(0.05)

    await asyncio.wait_for(emptied(), 10)


async def test_cassandra_user_archive_paging(users, login, stored):
    alice, bob = users(2)
    a, b = await login(alice), await login(bob)
    said = []
    for n in range(9):
        sender, receiver = (a, b) if n % 2 == 0 else (b, a)
        await receiver.inbox.wait(with_id(send(sender, bare(receiver.jid), body=f"chat {n}")))
        said.append(f"chat {n}")
    await round_trip(a)
    await round_trip(b)

    seen, after, complete = [], None, []
    while True:
        results, fin = await archive(a, rsm="<max>4</max>" + (f"<after>{after}</after>" if after else ""))
        assert rsm(fin, "count") == "9"
        seen += bodies(results)
        complete.append(fin.get("complete"))
        if fin.get("complete") == "true":
            break
        after = results[-1][0]
    assert seen == said and complete == [None, None, "true"]

    results, fin = await archive(a, rsm="<max>4</max><before/>")
    assert bodies(results) == said[5:] and fin.get("complete") is None
    results, fin = await archive(a, rsm=f"<max>10</max><before>{results[0][0]}</before>")
    assert bodies(results) == said[:5] and fin.get("complete") == "true"
    assert await stored.archive("archive").count(alice) == 9
    assert await stored.archive("archive").count(bob) == 9


async def test_cassandra_room_archive_paging_and_persistence_across_restart(server, users, login, stored):
    """The last test of the module: it restarts the server."""
    owner_jid, reader_jid = users(2)
    owner = await login(owner_jid)
    room = await create_room(owner, persistentroom="1", roomname="Kept on Cassandra")
    reflections = [await owner.say(room, f"room {n}") for n in range(5)]
    ids = [r.find("{urn:xmpp:sid:0}stanza-id").get("id") for r in reflections]

    results, fin = await archive(owner, rsm="<max>2</max>", to=room)
    assert bodies(results) == ["room 0", "room 1"] and rsm(fin, "count") == "5"
    results, fin = await archive(owner, rsm=f"<max>2</max><after>{results[-1][0]}</after>", to=room)
    assert bodies(results) == ["room 2", "room 3"] and fin.get("complete") is None
    results, fin = await archive(owner, rsm=f"<max>2</max><after>{results[-1][0]}</after>", to=room)
    assert bodies(results) == ["room 4"] and fin.get("complete") == "true"
    assert room in await stored.rooms.list(SERVICE)
    await owner.logout()

    server.stop()
    server.start()

    reader = await login(reader_jid)
    await reader.join(room, "reader")
    info = await reader.iq("get", room, f"<query xmlns='{NS_DISCO_INFO}'/>")
    assert info.find(f"{{{NS_DISCO_INFO}}}query/{{{NS_DISCO_INFO}}}identity").get("name") == "Kept on Cassandra"
    assert NS_MUC in {f.get("var") for f in info.iter(f"{{{NS_DISCO_INFO}}}feature")}
    results, fin = await archive(reader, to=room)
    assert bodies(results) == [f"room {n}" for n in range(5)] and [r[0] for r in results] == ids
