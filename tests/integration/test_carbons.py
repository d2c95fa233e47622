"""End to end: XEP-0280 message carbons, with <private/> and the XEP-0334 <no-copy/> hint."""

import asyncio

import pytest

from tests.support.messaging import (
    BODY,
    NS_CARBONS,
    NS_HINTS,
    carbon,
    carbons_of,
    connect,
    error_to,
    forwarded,
    round_trip,
    send,
    stanza_id,
    with_id,
)
from tests.support.muc import codes, create_room, new_account, new_user
from tests.support.server import XmppdProcess
from xmppd.client import DEFAULT_PLUGINS, Client

NS_CHATSTATES = "http://jabber.org/protocol/chatstates"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = XmppdProcess(tmp_path_factory.mktemp("carbons"), server_section="graceful_shutdown_timeout = 1").start()
    yield process
    process.stop()


async def test_carbons_both_ways_with_two_resources_each(server):
    alice, bob = await new_account(server), await new_account(server)
    a1 = await connect(server, alice, "a1", carbons=True)
    a2 = await connect(server, alice, "a2", carbons=True)
    b1 = await connect(server, bob, "b1", priority=5, carbons=True)
    b2 = await connect(server, bob, "b2", priority=1, carbons=True)

    # a1 -> bob's bare JID: b1 (highest priority) gets it, b2 a <received/> copy, a2 a <sent/> copy.
    msg = send(a1, bob, body="hello bob")
    original = await b1.inbox.wait(with_id(msg))
    assert original.get("from") == a1.jid and original.findtext(BODY) == "hello bob"
    received = await b2.inbox.wait(carbon("received", msg))
    assert (received.get("from"), received.get("to"), received.get("type")) == (bob, b2.jid, "chat")
    inner = forwarded(received)
    assert (inner.get("from"), inner.get("to"), inner.findtext(BODY)) == (a1.jid, bob, "hello bob")
    sent = await a2.inbox.wait(carbon("sent", msg))
    assert (sent.get("from"), sent.get("to"), sent.get("type")) == (alice, a2.jid, "chat")
    assert (forwarded(sent).get("from"), forwarded(sent).get("to")) == (a1.jid, bob)
    # XEP-0313 3.4: the archive ids travel with the copies, the sender's never to the contact.
    assert stanza_id(inner, by=bob) == stanza_id(original, by=bob) is not None
    assert stanza_id(forwarded(sent), by=alice) is not None and stanza_id(original, by=alice) is None

    # b2 -> a1's full JID: a1 gets it, a2 a <received/> copy, b1 a <sent/> copy.
    reply = send(b2, a1.jid, body="hello alice")
    await a1.inbox.wait(with_id(reply))
    assert forwarded(await a2.inbox.wait(carbon("received", reply))).get("from") == b2.jid
    assert forwarded(await b1.inbox.wait(carbon("sent", reply))).get("to") == a1.jid

    # Nobody gets a copy of what it sent or received itself, nor a second one.
    for user in (a1, a2, b1, b2):
        await round_trip(user)
    assert [len(carbons_of(u)) for u in (a1, a2, b1, b2)] == [0, 2, 1, 1]
    for user in (a1, a2, b1, b2):
        await user.logout()


async def test_only_resources_that_enabled_carbons_get_copies(server):
    alice, bob = await new_account(server), await new_account(server)
    a1 = await connect(server, alice, "a1")
    silent = await connect(server, alice, "silent")
    switched = await connect(server, alice, "switched", carbons=True)
    b = await connect(server, bob, "b")
    assert (await switched.iq("set", alice, f"<disable xmlns='{NS_CARBONS}'/>")).get("type") == "result"
    # Enabling or disabling twice is no error (XEP-0280 9.1).
    assert (await switched.iq("set", alice, f"<disable xmlns='{NS_CARBONS}'/>")).get("type") == "result"
    send(a1, bob, body="one")
    send(b, a1.jid, body="two")
    await a1.inbox.wait(lambda s: s.findtext(BODY) == "two")
    for user in (silent, switched):
        await round_trip(user)
        assert carbons_of(user) == []
    for user in (a1, silent, switched, b):
        await user.logout()


async def test_private_and_no_copy_messages_are_not_copied(server):
    alice, bob = await new_account(server), await new_account(server)
    a1 = await connect(server, alice, "a1", carbons=True)
    a2 = await connect(server, alice, "a2", carbons=True)
    b1 = await connect(server, bob, "b1", priority=5, carbons=True)
    b2 = await connect(server, bob, "b2", carbons=True)
    private = send(a1, bob, f"<private xmlns='{NS_CARBONS}'/>", body="just for b1")
    delivered = await b1.inbox.wait(with_id(private))
    assert delivered.find(f"{{{NS_CARBONS}}}private") is None  # XEP-0280 7: removed on delivery
    no_copy = send(a1, bob, f"<no-copy xmlns='{NS_HINTS}'/>", body="no copies")
    await b1.inbox.wait(with_id(no_copy))
    copied = send(a1, bob, body="copied")
    await b2.inbox.wait(carbon("received", copied))
    await a2.inbox.wait(carbon("sent", copied))
    assert [forwarded(c).get("id") for c in carbons_of(a2) + carbons_of(b2)] == [copied, copied]
    for user in (a1, a2, b1, b2):
        await user.logout()


async def test_a_message_to_another_own_resource_is_copied_once(server):
    alice = await new_account(server)
    a1, a2, a3 = [await connect(server, alice, name, carbons=True) for name in ("a1", "a2", "a3")]
    msg = send(a1, a2.jid, body="note to self")
    await a2.inbox.wait(with_id(msg))
    await a3.inbox.wait(carbon("sent", msg))
    for user in (a1, a2, a3):
        await round_trip(user)
    assert [len(carbons_of(u)) for u in (a1, a2, a3)] == [0, 0, 1]
    for user in (a1, a2, a3):
        await user.logout()


# XEP-0280 section 6.1, the rules that 'urn:xmpp:carbons:rules:0' stands for.
@pytest.mark.parametrize(
    "type_,payload,copied",
    [
        ("chat", f"<active xmlns='{NS_CHATSTATES}'/>", True),  # XEP-0280 9.2: on purpose
        ("normal", "<body>a note</body>", True),
        ("normal", f"<composing xmlns='{NS_CHATSTATES}'/>", True),  # XEP-0085 payload
        ("normal", "<received xmlns='urn:xmpp:receipts' id='r1'/>", True),  # XEP-0184 payload
        ("normal", "<displayed xmlns='urn:xmpp:chat-markers:0' id='r1'/>", True),
        ("normal", "<x xmlns='jabber:x:conference' jid='room@conference.localhost'/>", True),  # XEP-0249
        ("normal", "<subject>no body</subject>", False),
        ("headline", "<body>news</body>", False),
        ("chat", f"<x xmlns='{NS_MUC_USER}'/>", True),  # an outgoing MUC private message
    ],
)
async def test_which_messages_are_copied(server, type_, payload, copied):
    alice, bob = await new_account(server), await new_account(server)
    a1 = await connect(server, alice, "a1")
    a2 = await connect(server, alice, "a2", carbons=True)
    b = await connect(server, bob, "b")
    msg = send(a1, bob, payload, type_=type_)
    await b.inbox.wait(with_id(msg))
    await round_trip(a2)
    assert bool(carbons_of(a2)) is copied
    for user in (a1, a2, b):
        await user.logout()


async def test_offline_message_is_copied_to_a_negative_priority_resource(server):
    alice, bob = await new_account(server), await new_account(server)
    a = await connect(server, alice, "a")
    lurker = await connect(server, bob, "lurker", priority=-1, carbons=True)
    msg = send(a, bob, body="while you were out")
    assert forwarded(await lurker.inbox.wait(carbon("received", msg))).findtext(BODY) == "while you were out"
    await round_trip(a)
    assert not a.inbox.received(error_to(msg))  # stored offline, not refused
    back = await connect(server, bob, "back")
    assert (await back.inbox.wait(with_id(msg))).findtext(BODY) == "while you were out"
    for user in (a, lurker, back):
        await user.logout()


async def test_private_messages_from_a_room_are_not_copied(server):
    owner = await new_user(server)
    room = await create_room(owner)
    alice = await new_account(server)
    a1 = await connect(server, alice, "a1", carbons=True)
    a2 = await connect(server, alice, "a2", carbons=True)
    joined = await a1.join(room, "alice")
    assert "110" in codes(joined)
    pm = send(owner, f"{room}/alice", "<x xmlns='http://jabber.org/protocol/muc#user'/>", body="psst")
    assert (await a1.inbox.wait(with_id(pm))).get("from") == f"{room}/owner"
    await round_trip(a2)
    assert carbons_of(a2, "received") == []
    for user in (owner, a1, a2):
        await user.logout()


async def test_a_mediated_invitation_from_a_room_is_copied(server):
    owner = await new_user(server)
    room = await create_room(owner)
    alice = await new_account(server)
    main = await connect(server, alice, "main", priority=5)
    other = await connect(server, alice, "other", priority=1, carbons=True)
    send(owner, room, f"<x xmlns='{NS_MUC_USER}'><invite to='{alice}'/></x>", type_="normal")
    invitation = await main.inbox.wait(
        lambda s: s.get("from") == room and s.find(f"{{{NS_MUC_USER}}}x/{{{NS_MUC_USER}}}invite") is not None
    )
    copy = await other.inbox.wait(carbon("received", invitation.get("id")))
    assert forwarded(copy).find(f"{{{NS_MUC_USER}}}x/{{{NS_MUC_USER}}}invite") is not None
    for user in (owner, main, other):
        await user.logout()


async def test_an_error_bounced_to_one_resource_is_copied_to_the_others(server):
    """XEP-0280 6.1: an error in answer to an eligible message is eligible itself."""
    alice = await new_account(server)
    a1 = await connect(server, alice, "a1")
    a2 = await connect(server, alice, "a2", carbons=True)
    msg = send(a1, "nobody@localhost", body="anyone there?")
    await a1.inbox.wait(error_to(msg))
    copy = await a2.inbox.wait(carbon("received", msg))
    assert forwarded(copy).get("type") == "error"
    for user in (a1, a2):
        await user.logout()


async def test_with_the_slixmpp_plugin_and_disco(server):
    alice, bob = await new_account(server), await new_account(server)
    clients = []
    for resource in ("phone", "laptop"):
        client = Client(f"{alice}/{resource}", "secret", verify_tls=False, plugins=DEFAULT_PLUGINS + ("xep_0280",))
        await client.login("127.0.0.1", server.port)
        client.send_presence()
        await client.plugin["xep_0280"].enable()
        clients.append(client)
    phone, laptop = clients
    info = await phone.plugin["xep_0030"].get_info(jid=server.domain)
    assert NS_CARBONS in info["disco_info"]["features"]
    loop = asyncio.get_running_loop()
    got_sent, got_received = loop.create_future(), loop.create_future()
    laptop.add_event_handler("carbon_sent", lambda msg: got_sent.done() or got_sent.set_result(msg))
    laptop.add_event_handler("carbon_received", lambda msg: got_received.done() or got_received.set_result(msg))
    b = await connect(server, bob, "b")
    phone.send_message(mto=bob, mbody="from my phone", mtype="chat")
    sent = await asyncio.wait_for(got_sent, 10)
    assert sent["carbon_sent"]["body"] == "from my phone"
    send(b, f"{alice}/phone", body="to your phone")
    received = await asyncio.wait_for(got_received, 10)
    assert received["carbon_received"]["body"] == "to your phone"
    await b.logout()
    for client in clients:
        await client.logout()
