"""End to end: delivery receipts (XEP-0184) and chat markers (XEP-0333) go where messages
go: delivered, carbon-copied to the other devices, archived on both sides and stored
offline, so that every device of a user learns what was delivered and read."""

import pytest

from tests.support.inbox import Inbox
from tests.support.messaging import (
    NS_MARKERS,
    NS_RECEIPTS,
    archive,
    carbon,
    connect,
    forwarded,
    round_trip,
    send,
    stanza_id,
)
from tests.support.muc import User, new_account
from tests.support.server import XmppdProcess
from xmppd.client import DEFAULT_PLUGINS, Client

NS_DELAY = "urn:xmpp:delay"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = XmppdProcess(tmp_path_factory.mktemp("receipts"), server_section="graceful_shutdown_timeout = 1").start()
    yield process
    process.stop()


def receipt(of: str):
    return lambda s: (
        s.find(f"{{{NS_RECEIPTS}}}received") is not None and s.find(f"{{{NS_RECEIPTS}}}received").get("id") == of
    )


def marker(of: str, name: str = "displayed"):
    return lambda s: s.find(f"{{{NS_MARKERS}}}{name}") is not None and s.find(f"{{{NS_MARKERS}}}{name}").get("id") == of


def copy_of(direction: str, predicate):
    return lambda s: carbon(direction)(s) and predicate(forwarded(s))


async def slixmpp_user(server, jid: str, resource: str, priority: int) -> User:
    """A slixmpp client that answers receipt requests by itself and sends markers."""
    client = Client(
        f"{jid}/{resource}", "secret", verify_tls=False, plugins=DEFAULT_PLUGINS + ("xep_0184", "xep_0280", "xep_0333")
    )
    inbox = Inbox(client)
    await client.login("127.0.0.1", server.port)
    client.send_presence(ppriority=priority)
    await client.plugin["xep_0280"].enable()
    return User(str(client.boundjid), client, inbox)


async def test_receipts_and_markers_are_copied_and_archived_like_messages(server):
    alice, bob = await new_account(server), await new_account(server)
    a1 = await connect(server, alice, "a1")
    a2 = await connect(server, alice, "a2", carbons=True)
    b1 = await slixmpp_user(server, bob, "b1", priority=5)
    b2 = await connect(server, bob, "b2", priority=1, carbons=True)

    msg = send(a1, bob, f"<request xmlns='{NS_RECEIPTS}'/><markable xmlns='{NS_MARKERS}'/>", body="did you get this?")
    await b2.inbox.wait(carbon("received", msg))
    # b1's client acknowledges on its own (XEP-0184), then its user reads the message.
    got_receipt = await a1.inbox.wait(receipt(msg))
    assert got_receipt.get("from") == b1.jid
    assert stanza_id(got_receipt, by=alice) is not None
    b1.client.plugin["xep_0333"].send_marker(a1.jid, msg, "displayed", mtype="chat")
    got_marker = await a1.inbox.wait(marker(msg))
    assert stanza_id(got_marker, by=alice) is not None

    # alice's other device learns both; so does bob's.
    await a2.inbox.wait(copy_of("received", receipt(msg)))
    await a2.inbox.wait(copy_of("received", marker(msg)))
    await b2.inbox.wait(copy_of("sent", receipt(msg)))
    await b2.inbox.wait(copy_of("sent", marker(msg)))

    # Both archives hold the message, the receipt and the marker, in that order.
    for owner in (a1, b2):
        results, _ = await archive(owner)
        kinds = [
            (
                "message"
                if m.get("id") == msg
                else "receipt"
                if receipt(msg)(m)
                else "marker"
                if marker(msg)(m)
                else "other"
            )
            for _, m, _ in results
        ]
        assert kinds == ["message", "receipt", "marker"], owner.jid
    for user in (a1, a2, b1, b2):
        await user.logout()


async def test_receipts_and_markers_wait_offline(server):
    alice, bob = await new_account(server), await new_account(server)
    a = await connect(server, alice, "gone")
    b = await connect(server, bob, "b")
    await a.logout()
    # To the bare JID, and to the full JID of a resource that has gone (RFC 6121 8.5.3.2.1).
    received = send(b, alice, f"<received xmlns='{NS_RECEIPTS}' id='m1'/>", type_="normal")
    displayed = send(b, f"{alice}/gone", f"<displayed xmlns='{NS_MARKERS}' id='m1'/>")
    await round_trip(b)
    assert not b.inbox.received(lambda s: s.get("type") == "error")
    back = await connect(server, alice, "back")
    for msg_id in (received, displayed):
        stored = await back.inbox.wait(lambda s, msg_id=msg_id: s.get("id") == msg_id)
        assert stored.find(f"{{{NS_DELAY}}}delay") is not None
    results, _ = await archive(back)
    assert [m.get("id") for _, m, _ in results] == [received, displayed]
    for user in (b, back):
        await user.logout()
