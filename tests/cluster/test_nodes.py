"""Several xmppd nodes serving one domain (issue 15): real xmppd processes on their own
ports sharing the run's Redis (tests/support/engines.py) and one Cassandra keyspace
(tests/support/cassandra.py). A client on either node reaches users on the other: chat,
presence and probes, iq to full JIDs, carbons; a message to a user who moves between
nodes arrives once; and when a node is SIGKILLed, every message whose XEP-0198 ack the
sender got reaches the recipient after the node was found dead.

A node learns the other's sessions asynchronously (Redis pub/sub): a test first waits
until a ping to the other user's full JID is answered (`reachable`), a bounded loop of
round trips, never a sleep.
"""

import asyncio
import json

import pytest

from tests.conftest import AccountPool
from tests.support.accounts import create_accounts
from tests.support.cassandra import new_keyspace, xmppd_storage_config
from tests.support.engines import EngineProcess
from tests.support.inbox import TIMEOUT, presence
from tests.support.messaging import bare, carbon, connect, error_to, round_trip, send, subscribe_both, with_id
from tests.support.server import XmppdProcess, free_port
from tests.support.smacks import NS_SM, coming_online, managed_login, send_message

pytestmark = pytest.mark.cassandra

HEARTBEAT, NODE_TIMEOUT = 0.5, 3.0
SCHEMA_TIMEOUT = 120.0
REACHABLE_TRIES = 100
QUICK_STOP = "graceful_shutdown_timeout = 1"
NS_PING = "urn:xmpp:ping"


class Nodes(list):
    @property
    def started(self):  # tests/conftest.py shows their logs when a test fails
        return self


def node_config(redis_url: str, keyspace: str, name: str) -> str:
    return (
        xmppd_storage_config(keyspace)
        + f"""
[cluster]
engine = "{redis_url}"
node = "{name}"
heartbeat = {HEARTBEAT}
node_timeout = {NODE_TIMEOUT}

[extensions.offline]
max_messages_per_stranger = 1000
"""
    )


@pytest.fixture(scope="module")
def keyspace(cassandra):
    return new_keyspace("cluster")


@pytest.fixture(scope="module")
def nodes(redis_engine, keyspace, tmp_path_factory):
    started = Nodes()
    try:
        for name in ("node1", "node2"):  # the first creates the keyspace's tables
            process = XmppdProcess(
                tmp_path_factory.mktemp(name), node_config(redis_engine, keyspace, name), server_section=QUICK_STOP
            )
            started.append(process.start(timeout=SCHEMA_TIMEOUT))
        yield started
    finally:
        for process in started:
            process.stop()


@pytest.fixture(scope="module")
def account_pool(nodes):
    return AccountPool(nodes[0])  # the accounts are in the storage every node shares


@pytest.fixture
async def login():
    """`await login(node, jid, resource, **options)`: tests.support.messaging.connect on
    that node; logged out after the test."""
    opened = []

    async def login(node, jid, resource, **options):
        user = await connect(node, jid, resource, **options)
        opened.append(user)
        return user

    yield login
    for user in opened:
        if user.client.is_connected():
            await user.client.logout()


@pytest.fixture
def restartable(keyspace, tmp_path):
    """Nodes r1 and r2 on a Redis server of their own (`.engine`), which a test may kill
    and start again on the same port."""
    started = Nodes()
    started.engine = EngineProcess("redis", tmp_path / "redis").start()
    try:
        for name in ("r1", "r2"):
            directory = tmp_path / name
            directory.mkdir()
            process = XmppdProcess(
                directory, node_config(started.engine.url, keyspace, name), server_section=QUICK_STOP
            )
            started.append(process.start(timeout=SCHEMA_TIMEOUT))
        yield started
    finally:
        for process in started:
            process.stop()
        started.engine.stop()


async def handled(client) -> int:
    """The XEP-0198 'h' of a raw client's stream, asked for with <r/>."""
    await client.send(f"<r xmlns='{NS_SM}'/>")
    return int((await client.expect(r"<a [^>]*h=[\"'](\d+)[\"']")).group(1))


async def reachable(user, jid: str) -> None:
    """Wait until `user`'s node routes to `jid` (on another node): a ping to it is
    answered by its client."""
    for _ in range(REACHABLE_TRIES):
        answer = await user.iq("get", jid, f"<ping xmlns='{NS_PING}'/>")
        if answer.get("type") == "result":
            return
    raise AssertionError(f"{jid} never became reachable from {user.jid}: {answer.get('type')}")


def ids_of(user, prefix: str) -> list[str]:
    return [
        s.get("id")
        for s in user.inbox.stanzas
        if s.tag.endswith("message") and (s.get("id") or "").startswith(prefix) and s.get("type") != "error"
    ]


def test_a_node_without_its_engine_does_not_start(keyspace, tmp_path):
    process = XmppdProcess(
        tmp_path, node_config(f"redis://127.0.0.1:{free_port()}", keyspace, "lonely"), server_section=QUICK_STOP
    )
    with pytest.raises(RuntimeError, match="did not start"):
        process.start(timeout=SCHEMA_TIMEOUT)
    assert "cluster.engine: cannot reach redis://127.0.0.1:" in process.log


async def test_chat_presence_probe_and_iq_across_nodes(nodes, users, login):
    alice, bob = users(2)
    a = await login(nodes[0], alice, "phone")
    b = await login(nodes[1], bob, "laptop")
    await reachable(a, b.jid)  # an iq to a full JID on the other node, answered back
    await reachable(b, a.jid)
    await subscribe_both(a, b)  # presence both ways after the subscription

    for sender, receiver, to in ((a, b, b.jid), (b, a, a.jid), (a, b, bare(b.jid)), (b, a, bare(a.jid))):
        msg_id = send(sender, to, body=f"to {to}")
        received = await receiver.inbox.wait(with_id(msg_id))
        assert received.get("from") == sender.jid

    # A second resource of alice's logs in on node 1: its probe of bob (whose session is
    # on node 2) is answered there with bob's last presence, and bob gets its presence.
    tablet = await login(nodes[0], alice, "tablet")
    await tablet.inbox.wait(presence(None, from_=b.jid))
    await b.inbox.wait(presence(None, from_=tablet.jid))
    # An iq to a resource that is on no node is refused.
    answer = await b.iq("get", f"{alice}/nowhere", f"<ping xmlns='{NS_PING}'/>")
    assert (
        answer.get("type") == "error"
        and answer.find("{jabber:client}error/{urn:ietf:params:xml:ns:xmpp-stanzas}service-unavailable") is not None
    )


async def test_carbons_reach_a_resource_on_the_other_node(nodes, users, login):
    alice, bob = users(2)
    a1 = await login(nodes[0], alice, "one", carbons=True)
    a2 = await login(nodes[1], alice, "two", carbons=True)
    b = await login(nodes[0], bob, "desk")
    for user, other in ((a1, a2), (a2, a1), (a2, b)):
        await reachable(user, other.jid)
    # A stanza forwarded from a node comes after that node's earlier registry changes
    # (carbons enabled): once each resource got one from the other, both nodes know.
    for sender, receiver in ((a1, a2), (a2, a1)):
        await receiver.inbox.wait(with_id(send(sender, receiver.jid, body="sync")))

    received = send(b, a1.jid, body="to one")  # routed on node 1, copied to node 2
    await a1.inbox.wait(with_id(received))
    await a2.inbox.wait(carbon("received", received))
    sent = send(a2, b.jid, body="from two")  # routed on node 2, copied to node 1
    await b.inbox.wait(with_id(sent))
    await a1.inbox.wait(carbon("sent", sent))


async def test_message_to_a_user_moving_between_nodes_arrives_once(nodes, users, login):
    alice, bob = users(2)
    a = await login(nodes[0], alice, "phone")
    b = await login(nodes[1], bob, "phone")
    await reachable(a, b.jid)
    await b.client.logout()
    msg_id = send(a, bob, body="where are you")  # node 1 may not have seen bob go yet
    moved = await login(nodes[0], bob, "phone")
    await moved.inbox.wait(with_id(msg_id))
    await round_trip(moved)  # nothing more comes
    assert ids_of(moved, msg_id) == [msg_id]
    assert ids_of(b, msg_id) == []


async def test_a_message_for_a_resource_that_just_left_reaches_the_other_node(nodes, users, login):
    """bob's top resource leaves node 2 as alice's message to bob goes: whether node 1
    still forwards it there (node 2 then stores it offline and asks node 1 to deliver
    what is stored) or already knows, bob's resource on node 1 gets it at once."""
    alice, bob = users(2)
    a = await login(nodes[0], alice, "phone")
    top = await login(nodes[1], bob, "top", priority=5)
    other = await login(nodes[0], bob, "other")
    await reachable(a, top.jid)
    closing = top.client.disconnect()  # the stream closes as the message goes
    msg_id = send(a, bob, body="to whoever is there")
    await closing
    await other.inbox.wait(with_id(msg_id))
    await round_trip(other)
    assert ids_of(other, msg_id) == [msg_id]


async def test_a_block_made_on_one_node_holds_on_the_other(nodes, users, login):
    """XEP-0191 across nodes: node 2 has read alice's (empty) block list; alice blocks bob
    on node 1, and bob's next message through node 2 is refused, not delivered."""
    alice, bob = users(2)
    a = await login(nodes[0], alice, "phone")
    b = await login(nodes[1], bob, "phone")
    await reachable(b, a.jid)
    before = send(b, a.jid, body="before")  # node 2 reads alice's list
    await a.inbox.wait(with_id(before))
    result = await a.iq("set", alice, f"<block xmlns='urn:xmpp:blocking'><item jid='{bob}'/></block>")
    assert result.get("type") == "result"
    after = send(b, a.jid, body="after")
    await b.inbox.wait(error_to(after))
    await round_trip(a)
    assert ids_of(a, after) == []


async def test_an_announcement_reaches_the_users_of_every_node(nodes, users, login):
    """XEP-0133 announce, sent through node 1, reaches a session on node 2."""
    from tests.integration.test_adhoc import run

    (listener,) = users(1)
    admin = await login(nodes[0], create_accounts(nodes[0], ["admin"])[0], "console")  # the configured admin
    b = await login(nodes[1], listener, "phone")
    await reachable(admin, b.jid)
    _, last = await run(admin.client, nodes[0], "announce", {"announcement": ["Maintenance at noon."]})
    assert last["command"]["status"] == "completed"
    headline = await b.inbox.wait(lambda s: s.get("type") == "headline" and s.get("from") == nodes[0].domain)
    assert headline.findtext("{jabber:client}body") == "Maintenance at noon."


async def test_binding_a_resource_bound_on_the_other_node_replaces_it(nodes, users, login):
    """RFC 6120 7.7.2.2 across nodes: the new session wins, the old stream gets <conflict/>."""
    alice, bob = users(2)
    old = await login(nodes[1], alice, "phone")
    watcher = await login(nodes[0], bob, "watch")
    b = await login(nodes[1], bob, "desk")
    await reachable(watcher, old.jid)  # node 1 knows alice/phone on node 2
    errors = asyncio.Queue()
    old.client.add_event_handler("stream_error", errors.put_nowait)
    new = await login(nodes[0], alice, "phone")
    error = await asyncio.wait_for(errors.get(), TIMEOUT)
    assert error["condition"] == "conflict"
    await reachable(b, new.jid)  # node 2 routes alice/phone to node 1 now
    msg_id = send(b, new.jid, body="which one")
    await new.inbox.wait(with_id(msg_id))
    assert ids_of(old, msg_id) == []


async def test_acked_messages_survive_a_killed_node(nodes, users, login, redis_engine, keyspace, tmp_path):
    """alice (node 1, XEP-0198) sends 200 messages to bob on node 3, SIGKILLed midway:
    alice's other resource gets bob's unavailable presence once node 3 is dropped; bob
    logs in on node 1 and has every message alice was acked for, none twice in one
    session, in the order alice sent them."""
    count = 200
    alice, bob = users(2)
    user_a = await login(nodes[0], alice, "sync")  # bound before node 3 starts
    node3 = XmppdProcess(tmp_path, node_config(redis_engine, keyspace, "node3"), server_section=QUICK_STOP)
    nodes.append(node3)  # stopped with the others; its log shown on failure
    node3.start(timeout=SCHEMA_TIMEOUT)
    b = await login(node3, bob, "phone")
    await reachable(b, user_a.jid)  # node 3 read it from node 1's hash at start
    await reachable(user_a, b.jid)
    await subscribe_both(user_a, b)
    sender, _ = await managed_login(nodes[0], alice.split("@")[0], "phone")

    before = await handled(sender)
    ids = [f"kill{index}" for index in range(count)]
    for index, msg_id in enumerate(ids):
        if index == count // 2:
            await b.inbox.wait(with_id(ids[count // 4]))  # node 3 is delivering: kill it midway
            node3.kill()
        await send_message(sender, bob, f"message {index}", msg_id)
    await nodes[0].wait_for_log("event=cluster-node-dropped node=node3", timeout=NODE_TIMEOUT * 4)
    await user_a.inbox.wait(presence("unavailable", from_=b.jid))
    acked = 0
    for _ in range(50):  # 'h' grows as node 1 stores what node 3 never confirmed
        acked = await handled(sender) - before
        if acked == count:
            break
    assert acked > 0
    acked_ids = ids[:acked]

    on_node3 = set(ids_of(b, "kill"))
    moved = await login(nodes[0], bob, "laptop")
    for msg_id in acked_ids:
        if msg_id not in on_node3:
            await moved.inbox.wait(with_id(msg_id))
    await round_trip(moved)  # a round trip after the queue
    on_node1 = ids_of(moved, "kill")
    assert len(on_node1) == len(set(on_node1)), "a message arrived twice on node 1"
    order = [int(msg_id.removeprefix("kill")) for msg_id in on_node1]
    assert order == sorted(order), "node 1 delivered alice's messages out of order"
    missing = [msg_id for msg_id in acked_ids if msg_id not in on_node3 and msg_id not in on_node1]
    assert not missing
    assert acked == count, f"only {acked} of {count} messages were acked"


async def test_acked_messages_survive_an_engine_restart(restartable, users, login):
    """The Redis server SIGKILLed and started again (its append-only file, the same port)
    while alice (r1, XEP-0198) sends 100 messages to bob on r2: the nodes carry on, every
    message is acked and reaches bob's session once, in order."""
    count = 100
    r1, r2 = restartable
    alice, bob = users(2)
    b = await login(r2, bob, "phone")
    user_a = await login(r1, alice, "sync")
    await reachable(user_a, b.jid)
    await user_a.client.logout()
    sender, _ = await managed_login(r1, alice.split("@")[0], "phone")
    before = await handled(sender)
    ids = [f"restart{index}" for index in range(count)]
    for index, msg_id in enumerate(ids):
        if index == count // 2:
            await b.inbox.wait(with_id(ids[count // 4]))
            restartable.engine.kill()
            restartable.engine.start()
        await send_message(sender, bob, f"message {index}", msg_id)
    acked = 0
    for _ in range(50):  # 'h' grows as the nodes write to the engine again
        acked = await handled(sender) - before
        if acked == count:
            break
    assert acked == count, f"only {acked} of {count} messages were acked"
    for msg_id in ids[count // 4 + 1 :]:  # the first ones were waited for above
        await b.inbox.wait(with_id(msg_id))
    await round_trip(b)
    assert ids_of(b, "restart") == ids


async def test_xmppctl_sessions_and_kick_cover_every_node(nodes, users, login):
    """`xmppctl sessions` on one node lists the sessions of the other with that node's
    name; `kick` given there closes the session on the node that holds it."""
    alice, bob = users(2)
    watcher = await login(nodes[0], alice, "watch")
    far = await login(nodes[1], bob, "far")
    await reachable(watcher, far.jid)  # node 1 knows bob/far on node 2
    lines = [line.split("\t") for line in nodes[0].ctl("sessions").stdout.splitlines()]
    assert [line[4] for line in lines if line[0] == far.jid] == ["node2"]
    assert [line[4] for line in lines if line[0] == watcher.jid] == ["node1"]
    status = json.loads(nodes[0].ctl("status").stdout)
    assert status["node"] == "node1" and status["sessions"] > status["sessions_here"]
    errors = asyncio.Queue()
    far.client.add_event_handler("stream_error", errors.put_nowait)
    assert nodes[0].ctl("kick", far.jid).stdout.split() == [far.jid]
    error = await asyncio.wait_for(errors.get(), TIMEOUT)
    assert error["condition"] == "policy-violation"


async def test_a_slow_reader_on_the_other_node_gets_every_acked_message(nodes, users):
    """Messages routed on node 1 for a session on node 2 that reads slowly wait in that
    session's durable backlog on node 2 (in memory they would be dropped past
    c2s.max_held_bytes): bob gets all 600 large messages alice was acked for, once, in order."""
    count, padding = 600, "y" * 3000  # 1.8 MB, beyond the output buffer and max_held_bytes
    alice, bob = users(2)
    reader, _ = await coming_online(nodes[1], bob.split("@")[0], "slow", chunk=8192, pace=0.01)
    for _ in range(REACHABLE_TRIES):  # node 1 lists bob/slow: it routes to node 2
        if f"{bob}/slow\t" in nodes[0].ctl("sessions").stdout:
            break
    else:
        raise AssertionError("node 1 never learnt of bob's session on node 2")
    sender, _ = await managed_login(nodes[0], alice.split("@")[0], "fast")
    await sender.send(
        "".join(f"<message to='{bob}' type='chat' id='s{n}'><body>{padding}</body></message>" for n in range(count))
    )
    for _ in range(REACHABLE_TRIES):  # every message acked (after the initial presence)
        if await handled(sender) >= count + 1:
            break
    else:
        raise AssertionError("alice's messages were never all acked")
    await reader.until(lambda: len([i for i in reader.message_ids if i.startswith("s")]) >= count, timeout=120)
    await reader.ping("done")
    mine = [i for i in reader.message_ids if i.startswith("s")]
    assert mine == [f"s{n}" for n in range(count)]
    assert "event=held-stanza-dropped" not in nodes[1].log
    await reader.client.close()
    await sender.close()
