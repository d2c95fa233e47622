"""Offline storage writes (extensions/offline.py) commit in the background: on an
in-process server whose offline store is stalled on purpose, the sender's next stanza is
routed meanwhile, yet its XEP-0198 count (Session.handled) waits for the commit, in
order; delivery of the queue waits for it too; a failed write is bounced to the sender."""

import asyncio

import pytest

from tests.support.in_process import StalledStore, chat, online, running_server
from xmppd.accounts import create_user


@pytest.fixture
async def server(tmp_path):
    async with running_server(tmp_path, ["offline"]) as server:
        for user in ("alice", "bob", "carol"):
            await create_user(server.hosts["localhost"], user, "secret")
        yield server


def bodies(session, kind="chat") -> list[str]:
    return [m.findtext("{jabber:client}body") for m in session.connection.out if m.get("type") == kind]


async def test_the_next_stanza_goes_on_while_the_offline_write_commits(server):
    host = server.hosts["localhost"]
    offline = host.extensions["offline"]
    offline.store = stalled = StalledStore(offline.store)
    alice, carol = online(host, "alice@localhost/a"), online(host, "carol@localhost/c")

    writes = await asyncio.wait_for(server.router.from_client(alice, chat("bob@localhost", "kept")), 5)
    alice.handled(writes)
    live = await asyncio.wait_for(server.router.from_client(alice, chat("carol@localhost", "live")), 5)
    alice.handled(live)
    assert bodies(carol) == ["live"]  # routed while the first one's commit waits
    assert len(writes) == 1 and not live
    await asyncio.sleep(0.05)
    assert alice.stanzas_handled == 0  # nothing counted before the commit, not even "live"

    stalled.release()
    await asyncio.wait_for(alice.settled(), 5)
    assert alice.stanzas_handled == 2
    bob = online(host, "bob@localhost/b")
    await host.bus.fire("message/offline/deliver", bob)
    assert bodies(bob) == ["kept"]


async def test_delivery_of_the_queue_waits_for_the_writes_under_way(server):
    host = server.hosts["localhost"]
    offline = host.extensions["offline"]
    offline.store = stalled = StalledStore(offline.store)
    alice = online(host, "alice@localhost/a")
    for body in ("one", "two", "three"):
        alice.handled(await server.router.from_client(alice, chat("bob@localhost", body)))
    bob = online(host, "bob@localhost/b")
    delivering = asyncio.ensure_future(host.bus.fire("message/offline/deliver", bob))
    await asyncio.sleep(0.05)
    assert not delivering.done() and bodies(bob) == []
    stalled.release()
    await asyncio.wait_for(delivering, 5)
    assert bodies(bob) == ["one", "two", "three"]
    assert await offline.store.count("bob@localhost") == 0


async def test_a_failed_offline_write_is_bounced_to_the_sender(server):
    host = server.hosts["localhost"]
    offline = host.extensions["offline"]
    offline.store = stalled = StalledStore(offline.store, failures=1)
    stalled.release()
    alice = online(host, "alice@localhost/a")
    alice.handled(await server.router.from_client(alice, chat("bob@localhost", "lost?")))
    await asyncio.wait_for(alice.settled(), 5)  # the bounce comes before the count
    errors = [m for m in alice.connection.out if m.get("type") == "error"]
    assert errors[0].get("id") == "lost?"
    assert errors[0].find(".//{urn:ietf:params:xml:ns:xmpp-stanzas}internal-server-error") is not None
    assert alice.stanzas_handled == 1


async def test_handled_counts_in_the_order_stanzas_were_read(server):
    host = server.hosts["localhost"]
    alice = online(host, "alice@localhost/a")
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    alice.handled([first])
    alice.handled([second])
    alice.handled()
    second.set_result(None)
    await asyncio.sleep(0)
    assert alice.stanzas_handled == 0
    first.set_exception(OSError("reported by its writer"))
    await asyncio.wait_for(alice.settled(), 5)
    assert alice.stanzas_handled == 3 and not alice.unsettled
