"""End to end: RFC 6121 rosters (with XEP-0237 versioning), subscriptions, presence
broadcast, probes, directed presence and one-to-one chat, on a real xmppd."""

import itertools
import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError

from tests.support.inbox import IQ, MESSAGE, NS_ROSTER, PRESENCE, ROSTER_ITEM, message, presence, roster_push
from tests.support.raw import RawClient
from tests.support.server import XmppdProcess

MAX_ITEMS = 5
NS_DELAY = "urn:xmpp:delay"
_markers = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = XmppdProcess(
        tmp_path_factory.mktemp("roster"), extra_config=f"[extensions.roster]\nmax_items = {MAX_ITEMS}\n"
    ).start()
    yield process
    process.stop()


async def roster_iq(client, type_, payload: str, to: str | None = None):
    iq = client.Iq()
    iq["type"] = type_
    if to:
        iq["to"] = to
    iq.append(ET.fromstring(payload))
    return await iq.send(timeout=10)


async def roster_get(client, ver: str | None = None):
    attribute = f" ver='{ver}'" if ver is not None else ""
    return (await roster_iq(client, "get", f"<query xmlns='{NS_ROSTER}'{attribute}/>")).xml


async def roster_set(client, item: str, to: str | None = None):
    return await roster_iq(client, "set", f"<query xmlns='{NS_ROSTER}'>{item}</query>", to)


async def roster_error(client, item: str, to: str | None = None) -> str:
    with pytest.raises(IqError) as raised:
        await roster_set(client, item, to)
    return raised.value.iq["error"]["condition"]


def items_of(result) -> dict[str, ET.Element]:
    return {item.get("jid"): item for item in result.iter(f"{{{NS_ROSTER}}}item")}


async def synchronise(sender, inbox, to: str):
    """Everything `sender`'s earlier stanzas caused for `to` has arrived once this
    message has (the server handles a session's stanzas in order)."""
    marker = f"sync-{next(_markers)}"
    sender.send_message(mto=to, mbody=marker)
    await inbox.wait(message(from_=str(sender.boundjid), body=marker))


async def round_trip(client):
    """Everything the server sent this client for its earlier stanzas has arrived."""
    await client.plugin["xep_0199"].send_ping(client.boundjid.domain, timeout=10)


def available_presence_from(bare: str):
    return lambda s: s.tag == PRESENCE and s.get("type") in (None, "unavailable") and s.get("from", "").startswith(bare)


async def subscribe_both(a_client, a_inbox, a, b_client, b_inbox, b):
    """The full RFC 6121 3.1 dance, both ways, ending in 'both' on each side."""
    for (asker, asker_inbox, asker_jid), (asked, asked_inbox, asked_jid) in (
        ((a_client, a_inbox, a), (b_client, b_inbox, b)),
        ((b_client, b_inbox, b), (a_client, a_inbox, a)),
    ):
        asker.send_raw(f"<presence to='{asked_jid}' type='subscribe'/>")
        await asked_inbox.wait(presence("subscribe", from_=asker_jid))
        asked.send_raw(f"<presence to='{asker_jid}' type='subscribed'/>")
        await asker_inbox.wait(presence("subscribed", from_=asked_jid))
    await a_inbox.wait(roster_push(b, subscription="both"))
    await b_inbox.wait(roster_push(a, subscription="both"))


# ------------------------------------------------------------------ roster


async def test_roster_set_get_remove_pushes_to_interested_resources(users, connect):
    alice, bob = users(2)
    one, one_inbox = await connect(alice, "one")
    two, two_inbox = await connect(alice, "two")
    three, three_inbox = await connect(alice, "three", roster=False)  # never asked: not interested

    result = await roster_set(one, f"<item jid='{bob}' name='Bob'><group>Friends</group><group>Work</group></item>")
    for inbox in (one_inbox, two_inbox):
        push = await inbox.wait(roster_push(bob, name="Bob", subscription="none", ask=None))
        assert [g.text for g in push.iter(f"{{{NS_ROSTER}}}group")] == ["Friends", "Work"]
        assert push.get("from") == alice and push.find(f"{{{NS_ROSTER}}}query").get("ver")
    # RFC 6121 2.3.2: the result, then the push.
    positions = [i for i, s in enumerate(one_inbox.stanzas) if s.get("id") == result["id"] or roster_push(bob)(s)]
    assert one_inbox.stanzas[positions[0]].get("type") == "result"

    item = items_of(await roster_get(two))[bob]
    assert (item.get("name"), item.get("subscription")) == ("Bob", "none")

    await roster_set(two, f"<item jid='{bob}' name='Robert'/>")
    for inbox in (one_inbox, two_inbox):
        push = await inbox.wait(roster_push(bob, name="Robert"))
        assert push.find(f"{ROSTER_ITEM}/{{{NS_ROSTER}}}group") is None

    await roster_set(one, f"<item jid='{bob}' subscription='remove'/>")
    for inbox in (one_inbox, two_inbox):
        await inbox.wait(roster_push(bob, subscription="remove"))
    assert bob not in items_of(await roster_get(one))

    await synchronise(one, three_inbox, f"{alice}/three")
    assert not three_inbox.received(lambda s: s.tag == IQ and s.get("type") == "set")


async def test_roster_versioning(users, connect):
    alice, bob, carol = users(3)
    first, first_inbox = await connect(alice, "first", roster=False)
    assert "rosterver" in first.features and "preapproval" in first.features
    empty = await roster_get(first, ver="")
    initial_version = empty.find(f"{{{NS_ROSTER}}}query").get("ver")
    await roster_set(first, f"<item jid='{bob}'/>")
    push = await first_inbox.wait(roster_push(bob))
    version = push.find(f"{{{NS_ROSTER}}}query").get("ver")
    assert version != initial_version

    assert len(await roster_get(first, ver=version)) == 0  # XEP-0237: current, an empty result
    stale = await roster_get(first, ver=initial_version)
    assert stale.find(f"{{{NS_ROSTER}}}query").get("ver") == version and bob in items_of(stale)
    await first.logout()

    second, second_inbox = await connect(alice, "second", roster=False)
    assert len(await roster_get(second, ver=version)) == 0
    other, _ = await connect(alice, "other", roster=False, presence_xml=None)
    await roster_set(other, f"<item jid='{carol}'/>")
    push = await second_inbox.wait(roster_push(carol, subscription="none"))
    assert push.find(f"{{{NS_ROSTER}}}query").get("ver") not in (version, initial_version)


@pytest.mark.parametrize(
    "item, condition",
    [
        ("<item jid='{bob}'/><item jid='{carol}'/>", "bad-request"),  # RFC 6121 2.3.3
        ("<item jid='{bob}'><group>A</group><group>A</group></item>", "bad-request"),
        ("<item jid='{bob}'><group></group></item>", "not-acceptable"),
        ("<item jid='{bob}' name='{long}'/>", "not-acceptable"),
        ("<item jid='{alice}'/>", "not-allowed"),
        ("<item jid='{carol}' subscription='remove'/>", "item-not-found"),  # RFC 6121 2.5.3
        ("<item jid='{bob}/phone'/>", "bad-request"),
        ("<item jid='a@b@c'/>", "jid-malformed"),
        ("<item name='no jid'/>", "bad-request"),
        ("<other xmlns='urn:example'/>", "bad-request"),
    ],
)
async def test_bad_roster_sets_get_the_rfc_errors(users, connect, server, item, condition):
    (alice,) = users(1)
    bob, carol = f"bob@{server.domain}", f"carol@{server.domain}"
    client, _ = await connect(alice, presence_xml=None)
    assert await roster_error(client, item.format(alice=alice, bob=bob, carol=carol, long="x" * 2000)) == condition
    assert items_of(await roster_get(client)) == {}


async def test_subscription_attribute_of_a_roster_set_is_ignored(users, connect):
    alice, bob = users(2)
    client, inbox = await connect(alice)
    await roster_set(client, f"<item jid='{bob}' subscription='both' ask='subscribe' approved='true'/>")
    await inbox.wait(roster_push(bob, subscription="none", ask=None, approved=None))


async def test_nobody_else_reads_or_changes_a_roster(users, connect):
    alice, bob = users(2)
    client, _ = await connect(alice, presence_xml=None)
    assert await roster_error(client, f"<item jid='{alice}'/>", to=bob) == "forbidden"


async def test_roster_size_limit(users, connect, server):
    (owner,) = users(1)
    contacts = [f"contact{n}@{server.domain}" for n in range(MAX_ITEMS + 1)]
    client, inbox = await connect(owner)
    for contact in contacts[:MAX_ITEMS]:
        await roster_set(client, f"<item jid='{contact}'/>")
    assert await roster_error(client, f"<item jid='{contacts[MAX_ITEMS]}'/>") == "not-allowed"
    await roster_set(client, f"<item jid='{contacts[0]}' name='still editable'/>")
    # A subscription request would add an item too: refused the same way.
    client.send_raw(f"<presence to='{contacts[MAX_ITEMS]}' type='subscribe' id='full'/>")
    error = await inbox.wait(lambda s: s.tag == PRESENCE and s.get("type") == "error")
    assert error.get("id") == "full" and error.find(".//{urn:ietf:params:xml:ns:xmpp-stanzas}not-allowed") is not None
    assert len(items_of(await roster_get(client))) == MAX_ITEMS


# ------------------------------------------------------------------ subscriptions


async def test_subscription_dance_to_both(users, connect):
    alice, bob = users(2)
    a, a_inbox = await connect(alice, "desk")
    b, b_inbox = await connect(bob, "phone")

    a.send_raw(
        f"<presence to='{bob}/phone' type='subscribe' id='s1'><status>It is Alice</status>"
        f"<nick xmlns='http://jabber.org/protocol/nick'>Ally</nick></presence>"
    )
    await a_inbox.wait(roster_push(bob, subscription="none", ask="subscribe"))
    request = await b_inbox.wait(presence("subscribe"))
    # RFC 6121 3.1.2: stamped with the bare JIDs; the extended content travels along.
    assert (request.get("from"), request.get("to")) == (alice, bob)
    assert request.findtext("{jabber:client}status") == "It is Alice"
    assert request.findtext("{http://jabber.org/protocol/nick}nick") == "Ally"

    b.send_raw(f"<presence to='{alice}' type='subscribed'/>")
    await b_inbox.wait(roster_push(alice, subscription="from", ask=None))
    await a_inbox.wait(roster_push(bob, subscription="to", ask=None))
    assert (await a_inbox.wait(presence("subscribed"))).get("from") == bob
    await a_inbox.wait(presence(None, from_=f"{bob}/phone"))  # RFC 6121 3.1.5

    b.send_raw(f"<presence to='{alice}' type='subscribe'/>")
    await b_inbox.wait(roster_push(alice, subscription="from", ask="subscribe"))
    await a_inbox.wait(presence("subscribe", from_=bob))
    a.send_raw(f"<presence to='{bob}' type='subscribed'/>")
    await a_inbox.wait(roster_push(bob, subscription="both"))
    await b_inbox.wait(roster_push(alice, subscription="both", ask=None))
    await b_inbox.wait(presence("subscribed", from_=alice))
    await b_inbox.wait(presence(None, from_=f"{alice}/desk"))

    assert items_of(await roster_get(a))[bob].get("subscription") == "both"
    assert items_of(await roster_get(b))[alice].get("subscription") == "both"

    # Asked again while subscribed, the server answers for the contact with 'subscribed'
    # and the contact's presence (RFC 6121 3.1.3); the contact is not asked again.
    a.send_raw(f"<presence to='{bob}' type='subscribe'/>")
    await a_inbox.wait(presence(None, from_=f"{bob}/phone"))
    await synchronise(a, b_inbox, bob)
    assert len(b_inbox.received(presence("subscribe"))) == 1


async def test_subscription_request_waits_for_the_contact(users, connect):
    alice, bob = users(2)
    a, a_inbox = await connect(alice)
    a.send_raw(f"<presence to='{bob}' type='subscribe'><status>Remember me?</status></presence>")
    a.send_raw(f"<presence to='{bob}' type='subscribe'><status>Again</status></presence>")
    await a_inbox.wait(roster_push(bob, ask="subscribe"))

    for resource in ("first", "second"):  # delivered at each login until answered
        b, b_inbox = await connect(bob, resource)
        request = await b_inbox.wait(presence("subscribe", from_=alice))
        assert request.findtext("{jabber:client}status") == "Remember me?"
        await round_trip(b)
        assert len(b_inbox.received(presence("subscribe"))) == 1
        await b.logout()

    b, b_inbox = await connect(bob, "third")
    await b_inbox.wait(presence("subscribe", from_=alice))
    b.send_raw(f"<presence to='{alice}' type='subscribed'/>")
    await a_inbox.wait(roster_push(bob, subscription="to"))
    await b.logout()
    b, b_inbox = await connect(bob, "fourth")
    await round_trip(b)
    assert not b_inbox.received(presence("subscribe"))


async def test_unsubscribe_and_unsubscribed(users, connect):
    alice, bob, carol = users(3)
    a, a_inbox = await connect(alice, "a")
    b, b_inbox = await connect(bob, "b")
    await subscribe_both(a, a_inbox, alice, b, b_inbox, bob)

    # Alice stops receiving Bob's presence (RFC 6121 3.3).
    a.send_raw(f"<presence to='{bob}' type='unsubscribe'/>")
    await a_inbox.wait(roster_push(bob, subscription="from"))
    await b_inbox.wait(roster_push(alice, subscription="to"))
    await b_inbox.wait(presence("unsubscribe", from_=alice))
    await a_inbox.wait(presence("unavailable", from_=f"{bob}/b"))

    # Alice cancels Bob's subscription to her (RFC 6121 3.2).
    a.send_raw(f"<presence to='{bob}' type='unsubscribed'/>")
    await a_inbox.wait(roster_push(bob, subscription="none"))
    await b_inbox.wait(roster_push(alice, subscription="none"))
    await b_inbox.wait(presence("unsubscribed", from_=alice))
    await b_inbox.wait(presence("unavailable", from_=f"{alice}/a"))

    # Now neither sees the other's presence.
    a.send_raw("<presence><status>new</status></presence>")
    await a_inbox.wait(lambda s: s.tag == PRESENCE and s.findtext("{jabber:client}status") == "new")
    await synchronise(a, b_inbox, f"{bob}/b")
    assert not b_inbox.received(lambda s: s.tag == PRESENCE and s.findtext("{jabber:client}status") == "new")

    # A request denied: the asker's pending state ends, the request is not shown again.
    c, c_inbox = await connect(carol, "c")
    c.send_raw(f"<presence to='{alice}' type='subscribe'/>")
    await a_inbox.wait(presence("subscribe", from_=carol))
    a.send_raw(f"<presence to='{carol}' type='unsubscribed'/>")
    await c_inbox.wait(roster_push(alice, subscription="none", ask=None))
    await c_inbox.wait(presence("unsubscribed", from_=alice))
    again, again_inbox = await connect(alice, "again")
    await round_trip(again)
    assert not again_inbox.received(presence("subscribe"))


async def test_pre_approval(users, connect):
    alice, bob = users(2)
    a, a_inbox = await connect(alice)
    b, b_inbox = await connect(bob)
    a.send_raw(f"<presence to='{bob}' type='subscribed'/>")  # RFC 6121 3.4: nothing routed
    await a_inbox.wait(roster_push(bob, subscription="none", approved="true"))
    await synchronise(a, b_inbox, bob)
    assert not b_inbox.received(presence("subscribed"))

    b.send_raw(f"<presence to='{alice}' type='subscribe'/>")
    await b_inbox.wait(presence("subscribed", from_=alice))
    await b_inbox.wait(roster_push(alice, subscription="to", ask=None))
    await a_inbox.wait(roster_push(bob, subscription="from", approved=None))
    assert not a_inbox.received(presence("subscribe"))


async def test_removing_a_contact_ends_both_subscriptions(users, connect):
    alice, bob = users(2)
    a, a_inbox = await connect(alice, "a")
    b, b_inbox = await connect(bob, "b")
    await subscribe_both(a, a_inbox, alice, b, b_inbox, bob)
    await roster_set(a, f"<item jid='{bob}' subscription='remove'/>")  # RFC 6121 2.5.2
    await a_inbox.wait(roster_push(bob, subscription="remove"))
    await b_inbox.wait(presence("unsubscribe", from_=alice))
    await b_inbox.wait(presence("unsubscribed", from_=alice))
    await b_inbox.wait(roster_push(alice, subscription="none"))
    await b_inbox.wait(presence("unavailable", from_=f"{alice}/a"))
    assert items_of(await roster_get(b))[alice].get("subscription") == "none"


async def test_a_removal_is_answered_after_the_subscriptions_ended(users, connect):
    """The result of a roster remove comes after the server ended the subscriptions
    (RFC 6121 2.5.2): the contact's unavailable presence (3.3.3, caused by the user's
    unsubscribe) reaches the user on the same stream before the result."""
    alice, bob = users(2)
    a, a_inbox = await connect(alice, "a")
    b, b_inbox = await connect(bob, "b")
    await subscribe_both(a, a_inbox, alice, b, b_inbox, bob)
    await a_inbox.wait(available_presence_from(bob))
    await roster_set(a, f"<item jid='{bob}' subscription='remove'/>")
    assert a_inbox.received(
        lambda s: s.tag == PRESENCE and s.get("type") == "unavailable" and s.get("from") == f"{bob}/b"
    )


async def test_subscription_to_an_unknown_user_is_refused(users, connect, server):
    (alice,) = users(1)
    a, a_inbox = await connect(alice)
    ghost = f"nobody-here@{server.domain}"
    a.send_raw(f"<presence to='{ghost}' type='subscribe'/>")
    await a_inbox.wait(presence("unsubscribed", from_=ghost))  # RFC 6121 8.5.1
    await a_inbox.wait(roster_push(ghost, subscription="none", ask=None))


# ------------------------------------------------------------------ presence


async def test_presence_broadcast_to_contacts_and_own_resources(users, connect):
    alice, bob, dave = users(3)
    a1, a1_inbox = await connect(alice, "one")
    b, b_inbox = await connect(bob, "b")
    d, d_inbox = await connect(dave, "d")
    await subscribe_both(a1, a1_inbox, alice, b, b_inbox, bob)
    # Alice is subscribed to Dave's presence, Dave not to hers: he must not see it.
    a1.send_raw(f"<presence to='{dave}' type='subscribe'/>")
    await d_inbox.wait(presence("subscribe", from_=alice))
    d.send_raw(f"<presence to='{alice}' type='subscribed'/>")
    await a1_inbox.wait(roster_push(dave, subscription="to"))

    a2, a2_inbox = await connect(
        alice, "two", presence_xml="<presence><show>dnd</show><priority>5</priority></presence>"
    )
    update = await b_inbox.wait(presence(None, from_=f"{alice}/two"))
    assert update.findtext("{jabber:client}show") == "dnd"
    await a1_inbox.wait(presence(None, from_=f"{alice}/two"))
    # The new resource learns about the others: its own other resource, and its contacts (probes).
    own = await a2_inbox.wait(presence(None, from_=f"{alice}/one"))
    assert own.find(f"{{{NS_DELAY}}}delay") is not None
    await a2_inbox.wait(presence(None, from_=f"{bob}/b"))
    await a2_inbox.wait(presence(None, from_=f"{dave}/d"))

    a2.send_raw("<presence><show>away</show></presence>")
    update = await b_inbox.wait(presence(None, from_=f"{alice}/two"))
    assert update.findtext("{jabber:client}show") == "away"
    await a1_inbox.wait(
        lambda s: presence(None, from_=f"{alice}/two")(s) and s.findtext("{jabber:client}show") == "away"
    )

    await synchronise(a2, d_inbox, f"{dave}/d")
    assert not d_inbox.received(available_presence_from(alice))


async def test_unavailable_on_logout_and_on_a_dropped_connection(users, connect):
    alice, bob = users(2)
    a, a_inbox = await connect(alice, "a")
    b, b_inbox = await connect(bob, "clean")
    await subscribe_both(a, a_inbox, alice, b, b_inbox, bob)

    await b.logout()
    await a_inbox.wait(presence("unavailable", from_=f"{bob}/clean"))

    b, b_inbox = await connect(bob, "dropped")
    await a_inbox.wait(presence(None, from_=f"{bob}/dropped"))
    b.transport.abort()  # no </stream>, no unavailable
    await a_inbox.wait(presence("unavailable", from_=f"{bob}/dropped"))


async def test_unavailable_presence_sent_by_the_client(users, connect):
    alice, bob = users(2)
    a, a_inbox = await connect(alice, "a")
    b, b_inbox = await connect(bob, "b")
    await subscribe_both(a, a_inbox, alice, b, b_inbox, bob)
    b.send_raw("<presence type='unavailable'><status>gone fishing</status></presence>")
    gone = await a_inbox.wait(presence("unavailable", from_=f"{bob}/b"))
    assert gone.findtext("{jabber:client}status") == "gone fishing"
    # No longer available: messages to the bare JID now wait offline (a resource that is
    # not available gets none).
    a.send_message(mto=bob, mbody="later")
    b2, b2_inbox = await connect(bob, "b2")
    await b2_inbox.wait(message(from_=f"{alice}/a", body="later"))


async def test_directed_presence_is_followed_by_unavailable(users, connect):
    alice, eve, bob = users(3)
    a, a_inbox = await connect(alice, "a")
    e, e_inbox = await connect(eve, "e")
    b, b_inbox = await connect(bob, "b")
    await subscribe_both(a, a_inbox, alice, b, b_inbox, bob)
    a.send_raw(f"<presence to='{eve}/e'><status>just for you</status></presence>")
    directed = await e_inbox.wait(presence(None, from_=f"{alice}/a"))
    assert directed.findtext("{jabber:client}status") == "just for you"
    a.transport.abort()
    await e_inbox.wait(presence("unavailable", from_=f"{alice}/a", to=f"{eve}/e"))
    await b_inbox.wait(presence("unavailable", from_=f"{alice}/a"))


async def test_directed_unavailable_presence_ends_the_directed_presence(users, connect):
    alice, eve = users(2)
    a, a_inbox = await connect(alice, "a")
    other, other_inbox = await connect(alice, "other")
    e, e_inbox = await connect(eve, "e")
    a.send_raw(f"<presence to='{eve}'/>")
    await e_inbox.wait(presence(None, from_=f"{alice}/a"))
    a.send_raw(f"<presence to='{eve}' type='unavailable'/>")
    await e_inbox.wait(presence("unavailable", from_=f"{alice}/a"))
    await a.logout()
    # The server tells the user's other resources before the directed presence targets.
    await other_inbox.wait(presence("unavailable", from_=f"{alice}/a"))
    await synchronise(other, e_inbox, f"{eve}/e")
    assert len(e_inbox.received(presence("unavailable", from_=f"{alice}/a"))) == 1


async def test_a_closed_stream_is_answered_once_the_session_has_ended(users, connect, server):
    """RFC 6120 4.4: the server's </stream> comes after it ended the session, so a
    client that saw it is unavailable to everyone who asks from then on."""
    alice, bob = users(2)
    a, a_inbox = await connect(alice, "a")
    b, b_inbox = await connect(bob, "b")
    await subscribe_both(a, a_inbox, alice, b, b_inbox, bob)
    await b.logout()
    await a_inbox.wait(presence("unavailable", from_=f"{bob}/b"))
    raw = await RawClient().login(server.port, bob.split("@")[0], "secret", resource="raw")
    try:
        await raw.send("<presence/>")
        await a_inbox.wait(presence(None, from_=f"{bob}/raw"))
        await raw.send("</stream:stream>")
        await raw.expect("</stream:stream>")
        a.send_raw(f"<presence to='{bob}' type='probe'/>")
        await a_inbox.wait(presence("unavailable", from_=bob))  # RFC 6121 4.3.2
    finally:
        await raw.close()


async def test_probes(users, connect):
    alice, bob, eve = users(3)
    a, a_inbox = await connect(alice, "a")
    b, b_inbox = await connect(bob, "b", presence_xml="<presence><show>xa</show></presence>")
    await subscribe_both(a, a_inbox, alice, b, b_inbox, bob)

    a.send_raw(f"<presence to='{bob}' type='probe'/>")
    answer = await a_inbox.wait(
        lambda s: presence(None, from_=f"{bob}/b", to=f"{alice}/a")(s) and s.findtext("{jabber:client}show") == "xa"
    )
    assert answer.find(f"{{{NS_DELAY}}}delay") is not None  # the presence is from earlier

    await b.logout()
    a.send_raw(f"<presence to='{bob}' type='probe'/>")
    await a_inbox.wait(presence("unavailable", from_=bob))  # RFC 6121 4.3.2: nobody available

    # Someone not subscribed learns nothing.
    e, e_inbox = await connect(eve, "e")
    e.send_raw(f"<presence to='{alice}' type='probe'/>")
    e.send_raw(f"<presence to='{alice}/a' type='probe'/>")
    await synchronise(e, a_inbox, f"{alice}/a")
    await synchronise(a, e_inbox, f"{eve}/e")
    assert not e_inbox.received(available_presence_from(alice))


async def test_no_presence_leaks_to_a_non_contact(users, connect):
    alice, mallory = users(2)
    m, m_inbox = await connect(mallory, "m")
    a, a_inbox = await connect(alice, "a")
    # Each has the other in the roster and Mallory asked for Alice's presence, but she
    # did not answer: Mallory gets none of it.
    await roster_set(m, f"<item jid='{alice}'/>")
    await roster_set(a, f"<item jid='{mallory}' name='Mallory'/>")
    m.send_raw(f"<presence to='{alice}' type='subscribe'/>")
    await a_inbox.wait(presence("subscribe", from_=mallory))
    a.send_raw("<presence><status>secret</status></presence>")
    await a_inbox.wait(lambda s: s.tag == PRESENCE and s.findtext("{jabber:client}status") == "secret")
    await synchronise(a, m_inbox, f"{mallory}/m")
    assert not m_inbox.received(available_presence_from(alice))


# ------------------------------------------------------------------ chat


async def test_one_to_one_chat_both_ways(users, connect):
    alice, bob = users(2)
    a, a_inbox = await connect(alice, "a")
    b, b_inbox = await connect(bob, "b")
    a.send_message(mto=bob, mbody="to your bare JID", mtype="chat")
    got = await b_inbox.wait(message(from_=f"{alice}/a", body="to your bare JID"))
    assert got.get("type") == "chat" and got.get("to") == bob
    b.send_message(mto=f"{alice}/a", mbody="to your full JID", mtype="chat")
    got = await a_inbox.wait(message(from_=f"{bob}/b", body="to your full JID"))
    assert got.get("to") == f"{alice}/a"
    a.send_message(mto=f"{bob}/b", mbody="and back", mtype="chat")
    await b_inbox.wait(message(from_=f"{alice}/a", body="and back"))


async def test_message_to_an_unknown_user_is_bounced(users, connect, server):
    (alice,) = users(1)
    a, a_inbox = await connect(alice)
    a.send_raw(f"<message to='nobody-here@{server.domain}' id='m1' type='chat'><body>hello?</body></message>")
    error = await a_inbox.wait(lambda s: s.tag == MESSAGE and s.get("type") == "error")
    assert error.get("id") == "m1"
    assert error.find(".//{urn:ietf:params:xml:ns:xmpp-stanzas}service-unavailable") is not None
