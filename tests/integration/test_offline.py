"""End to end: XEP-0160 offline messages on a real xmppd."""

import asyncio
import datetime

import pytest

from tests.support.accounts import create_accounts
from tests.support.inbox import MESSAGE, NS_ROSTER, message, online, presence
from tests.support.server import XmppdProcess

QUEUE_LIMIT = 25
NS_DELAY = "urn:xmpp:delay"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


def offline_server(directory, limit=QUEUE_LIMIT) -> XmppdProcess:
    return XmppdProcess(directory, extra_config=f"[extensions.offline]\nmax_messages_per_user = {limit}\n")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = offline_server(tmp_path_factory.mktemp("offline")).start()
    yield process
    process.stop()


async def round_trip(client):
    """The server has handled everything the client sent before."""
    await client.plugin["xep_0199"].send_ping(client.boundjid.domain, timeout=10)


def errors(inbox, condition):
    return [
        s
        for s in inbox.received(lambda s: s.tag == MESSAGE and s.get("type") == "error")
        if s.find(f".//{{{NS_STANZAS}}}{condition}") is not None
    ]


def delay_of(stanza):
    return stanza.find(f"{{{NS_DELAY}}}delay")


async def test_messages_wait_for_the_user_and_come_once_in_order(users, connect, server):
    alice, bob = users(2)
    a, a_inbox = await connect(alice, "a")
    sent_at = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    for n in range(20):
        a.send_message(mto=bob if n % 2 else f"{bob}/gone", mbody=f"message {n}", mtype="chat")
    await round_trip(a)
    assert not errors(a_inbox, "service-unavailable")

    b, b_inbox = await connect(bob, "back")
    for n in range(20):
        got = await b_inbox.wait(message(body=f"message {n}"))
        assert got.get("from") == f"{alice}/a"
        delay = delay_of(got)
        assert delay.get("from") == server.domain
        stamp = datetime.datetime.fromisoformat(delay.get("stamp").replace("Z", "+00:00"))
        assert sent_at <= stamp <= datetime.datetime.now(datetime.UTC)
    bodies = [s.findtext("{jabber:client}body") for s in b_inbox.received(message(from_=f"{alice}/a"))]
    assert bodies == [f"message {n}" for n in range(20)]  # in order, nothing else
    await b.logout()

    again, again_inbox = await connect(bob, "again")
    await round_trip(again)
    assert not again_inbox.received(message(from_=f"{alice}/a"))  # the queue is empty


async def test_two_resources_coming_online_at_once_share_one_delivery(users, connect):
    alice, bob = users(2)
    a, _ = await connect(alice, "a")
    for n in range(10):
        a.send_message(mto=bob, mbody=f"m{n}")
    await round_trip(a)
    (one, one_inbox), (two, two_inbox) = await asyncio.gather(connect(bob, "one"), connect(bob, "two"))

    def received():
        return [
            s.findtext("{jabber:client}body")
            for inbox in (one_inbox, two_inbox)
            for s in inbox.received(message(from_=f"{alice}/a"))
        ]

    async def all_arrived():  # the queue drains as each resource takes it
        while len(received()) < 10:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(all_arrived(), 10)
    await asyncio.gather(round_trip(one), round_trip(two))
    assert sorted(received()) == sorted(f"m{n}" for n in range(10))  # each exactly once


async def test_queue_limit(users, connect):
    alice, bob = users(2)
    a, a_inbox = await connect(alice, "a")
    for n in range(QUEUE_LIMIT):
        a.send_message(mto=bob, mbody=f"fits {n}")
    overflow = a.make_message(mto=bob, mbody="overflow")  # queued like the others, sent after them
    overflow["id"] = "one-too-many"
    overflow.send()
    await round_trip(a)
    refused = errors(a_inbox, "service-unavailable")  # XEP-0160: storage full
    assert [s.get("id") for s in refused] == ["one-too-many"]
    assert refused[0].findtext("{jabber:client}body") == "overflow"

    b, b_inbox = await connect(bob)
    await b_inbox.wait(message(body=f"fits {QUEUE_LIMIT - 1}"))
    assert not b_inbox.received(message(body="overflow"))


async def test_what_is_kept(users, connect):
    alice, bob = users(2)
    a, a_inbox = await connect(alice, "a")
    kept = {
        "receipt": "<received xmlns='urn:xmpp:receipts' id='x1'/>",
        "marker": "<displayed xmlns='urn:xmpp:chat-markers:0' id='x2'/>",
        "omemo": "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'/></encrypted>",
        "omemo2": "<encrypted xmlns='urn:xmpp:omemo:2'><header sid='1'/></encrypted>",
        "hinted": "<store xmlns='urn:xmpp:hints'/>",
    }
    for name, payload in kept.items():
        a.send_raw(f"<message to='{bob}' id='{name}' type='chat'>{payload}</message>")
    dropped = {  # transient: neither kept nor bounced
        "chatstate": "type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/>",
        "headline": "type='headline'><body>news</body>",
        "error": "type='error'><body>oops</body><error type='cancel'><gone xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>",
    }
    for name, rest in dropped.items():
        a.send_raw(f"<message to='{bob}' id='{name}' {rest}</message>")
    refused = {  # not kept, and the sender hears so
        "no-store": "type='chat'><body>do not keep</body><no-store xmlns='urn:xmpp:hints'/>",
        "groupchat": "type='groupchat'><body>wrong place</body>",
    }
    for name, rest in refused.items():
        a.send_raw(f"<message to='{bob}' id='{name}' {rest}</message>")
    await round_trip(a)
    assert sorted(s.get("id") for s in errors(a_inbox, "service-unavailable")) == sorted(refused)

    b, b_inbox = await connect(bob)
    await round_trip(b)
    delivered = [s for s in b_inbox.received(lambda s: s.tag == MESSAGE and s.get("from") == f"{alice}/a")]
    assert [s.get("id") for s in delivered] == list(kept)
    assert all(delay_of(s) is not None for s in delivered)


async def test_negative_priority_resources_get_no_offline_messages(users, connect):
    alice, bob = users(2)
    a, _ = await connect(alice, "a")
    b, b_inbox = await connect(bob, "shy", presence_xml="<presence><priority>-1</priority></presence>")
    a.send_message(mto=bob, mbody="for later")  # RFC 6121 8.5.2.2: stored
    await round_trip(a)
    await round_trip(b)
    assert not b_inbox.received(message(body="for later"))
    b.send_raw("<presence><priority>1</priority></presence>")
    await b_inbox.wait(message(from_=f"{alice}/a", body="for later"))


async def test_message_to_an_unknown_user_is_bounced(users, connect, server):
    (alice,) = users(1)
    a, a_inbox = await connect(alice)
    a.send_raw(f"<message to='nobody-here@{server.domain}' id='m1' type='chat'><body>hello?</body></message>")
    await a_inbox.wait(lambda s: s.tag == MESSAGE and s.get("type") == "error" and s.get("id") == "m1")
    assert [s.get("id") for s in errors(a_inbox, "service-unavailable")] == ["m1"]


async def test_offline_storage_is_advertised(users, connect, server):
    (alice,) = users(1)
    a, _ = await connect(alice, presence_xml=None)
    info = await a.plugin["xep_0030"].get_info(jid=server.domain, timeout=10)
    assert "msgoffline" in info["disco_info"]["features"]


async def test_deleted_user_leaves_no_queue_roster_or_requests(users, connect, server):
    (alice,) = users(1)
    bob = f"deleted-bob@{server.domain}"
    create_accounts(server, ["deleted-bob"])
    a, _ = await connect(alice, "a")
    b, b_inbox = await connect(bob, "b")
    b.send_raw(f"<presence to='{alice}' type='subscribe'/>")  # Alice in Bob's roster
    await b.logout()
    a.send_raw(f"<presence to='{bob}' type='subscribe'/>")  # a request waiting for Bob
    a.send_message(mto=bob, mbody="you will never read this")  # a message waiting for Bob
    await round_trip(a)

    server.ctl("deluser", bob)
    create_accounts(server, ["deleted-bob"])
    b, b_inbox = await connect(bob, "new")
    await round_trip(b)
    assert not b_inbox.received(message(body="you will never read this"))
    assert not b_inbox.received(presence("subscribe"))
    roster = (await b.get_roster()).xml
    assert roster.find(f"{{{NS_ROSTER}}}query/{{{NS_ROSTER}}}item") is None


async def test_stored_messages_survive_a_crash(tmp_path):
    process = offline_server(tmp_path).start()
    try:
        alice, bob = create_accounts(process, ["alice", "bob"])
        a, _ = await online(process, alice, "a")
        for n in range(5):
            a.send_message(mto=bob, mbody=f"durable {n}")
        await round_trip(a)  # the server said nothing: every message is stored
        process.kill()  # SIGKILL, no clean shutdown
        a.abort()
        process.start()
        b, b_inbox = await online(process, bob, "b")
        for n in range(5):
            await b_inbox.wait(message(body=f"durable {n}"))
        await b.logout()
    finally:
        process.stop()
