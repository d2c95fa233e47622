"""End to end: profile data on PEP and beside it: avatars (XEP-0084) and vcard-temp
(XEP-0054) kept in step (XEP-0398) with the hash in presence (XEP-0153), vCard4 over PEP
(XEP-0292), private XML (XEP-0049), bookmarks (XEP-0402 and XEP-0048, converted as
XEP-0411 says) and the server's contact addresses (XEP-0157)."""

import base64
import hashlib

import pytest

from tests.support.inbox import PRESENCE
from tests.support.pep import (
    NS_DISCO_INFO,
    NS_PUBSUB,
    befriend,
    error_of,
    event_from,
    item_ids,
    items_request,
    online,  # noqa: F401  (fixture)
    publish,
    round_trip,
)
from tests.support.server import XmppdProcess

NS_VCARD = "vcard-temp"
NS_UPDATE = "vcard-temp:x:update"
NS_DATA = "urn:xmpp:avatar:data"
NS_METADATA = "urn:xmpp:avatar:metadata"
NS_VCARD4 = "urn:ietf:params:xml:ns:vcard-4.0"
NS_PRIVATE = "jabber:iq:private"
NS_BOOKMARKS = "urn:xmpp:bookmarks:1"
NS_LEGACY = "storage:bookmarks"
NS_X = "jabber:x:data"
MAX_VCARD_BYTES = 6000
MAX_FRAGMENT_BYTES = 3000
# A 1x1 PNG.
IMAGE = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
IMAGE_HASH = hashlib.sha1(IMAGE).hexdigest()
IMAGE_B64 = base64.b64encode(IMAGE).decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = XmppdProcess(
        tmp_path_factory.mktemp("profile"),
        extra_config=f"""
        [extensions.vcard]
        max_vcard_bytes = {MAX_VCARD_BYTES}

        [extensions.private]
        max_fragment_bytes = {MAX_FRAGMENT_BYTES}

        [extensions.contact_info]
        abuse = ["mailto:abuse@localhost", "xmpp:abuse@localhost"]
        support = ["https://localhost/support"]
        """,
    ).start()
    yield process
    process.stop()


def photo_hash(presence):
    return presence.findtext(f"{{{NS_UPDATE}}}x/{{{NS_UPDATE}}}photo")


def vcard_photo(answer):
    return answer.findtext(f"{{{NS_VCARD}}}vCard/{{{NS_VCARD}}}PHOTO/{{{NS_VCARD}}}BINVAL")


async def test_avatar_published_over_pep_is_fetched_and_becomes_the_vcard_photo(users, online):
    alice, bob = users(2)
    owner = await online(alice)
    contact = await online(bob, interests=[NS_METADATA])
    await befriend(owner, contact)
    data = await owner.iq("set", alice, publish(NS_DATA, f"<data xmlns='{NS_DATA}'>{IMAGE_B64}</data>", IMAGE_HASH))
    assert data.get("type") == "result"
    metadata = (
        f"<metadata xmlns='{NS_METADATA}'><info id='{IMAGE_HASH}' bytes='{len(IMAGE)}' type='image/png'"
        " width='1' height='1'/></metadata>"
    )
    assert (await owner.iq("set", alice, publish(NS_METADATA, metadata, IMAGE_HASH))).get("type") == "result"

    event = await contact.inbox.wait(event_from(alice, NS_METADATA))
    assert event.find(f".//{{{NS_METADATA}}}info").get("id") == IMAGE_HASH
    fetched = await contact.iq("get", alice, items_request(NS_DATA, ids=[IMAGE_HASH]))
    assert base64.b64decode(fetched.findtext(f".//{{{NS_DATA}}}data")) == IMAGE

    # XEP-0398: the vCard shows it to everyone, and presence carries its hash.
    vcard = await contact.iq("get", alice, f"<vCard xmlns='{NS_VCARD}'/>")
    assert base64.b64decode(vcard_photo(vcard)) == IMAGE
    await owner.send("<presence><status>with avatar</status></presence>")
    seen = await contact.inbox.wait(
        lambda s: (
            s.tag == PRESENCE and s.get("from") == owner.jid and s.findtext("{jabber:client}status") == "with avatar"
        )
    )
    assert photo_hash(seen) == IMAGE_HASH
    await owner.send(f"<presence><status>no avatar here</status><x xmlns='{NS_UPDATE}'><photo/></x></presence>")
    seen = await contact.inbox.wait(
        lambda s: (
            s.tag == PRESENCE and s.get("from") == owner.jid and s.findtext("{jabber:client}status") == "no avatar here"
        )
    )
    assert photo_hash(seen) == ""  # the client's empty <photo/> is left alone


async def test_vcard_photo_is_published_as_avatar_and_removed(users, online):
    alice, bob = users(2)
    owner = await online(alice)
    contact = await online(bob, interests=[NS_METADATA])
    await befriend(owner, contact)
    vcard = (
        f"<vCard xmlns='{NS_VCARD}'><FN>Alice</FN><PHOTO><TYPE>image/png</TYPE>"
        f"<BINVAL>{IMAGE_B64}</BINVAL></PHOTO></vCard>"
    )
    assert (await owner.iq("set", alice, vcard)).get("type") == "result"
    event = await contact.inbox.wait(event_from(alice, NS_METADATA))
    info = event.find(f".//{{{NS_METADATA}}}info")
    assert (info.get("id"), info.get("type"), info.get("bytes")) == (IMAGE_HASH, "image/png", str(len(IMAGE)))
    data = await contact.iq("get", alice, items_request(NS_DATA, ids=[IMAGE_HASH]))
    assert base64.b64decode(data.findtext(f".//{{{NS_DATA}}}data")) == IMAGE
    mine = await owner.iq("get", alice, f"<vCard xmlns='{NS_VCARD}'/>")
    assert mine.findtext(f"{{{NS_VCARD}}}vCard/{{{NS_VCARD}}}FN") == "Alice"

    assert (await owner.iq("set", alice, f"<vCard xmlns='{NS_VCARD}'><FN>Alice</FN></vCard>")).get("type") == "result"
    disabled = await contact.inbox.wait(event_from(alice, NS_METADATA))
    assert disabled.find(f".//{{{NS_METADATA}}}metadata") is not None
    assert disabled.find(f".//{{{NS_METADATA}}}info") is None


async def test_vcard_errors_change_nothing(users, online):
    alice, bob, carol = users(3)
    owner = await online(alice)
    other = await online(bob)
    empty = await owner.iq("get", alice, f"<vCard xmlns='{NS_VCARD}'/>")
    assert empty.get("type") == "result" and len(empty.find(f"{{{NS_VCARD}}}vCard")) == 0
    assert error_of(await other.iq("get", carol, f"<vCard xmlns='{NS_VCARD}'/>"))[0] == "item-not-found"
    await owner.iq("set", alice, f"<vCard xmlns='{NS_VCARD}'><FN>Alice</FN></vCard>")
    assert (
        error_of(await other.iq("set", alice, f"<vCard xmlns='{NS_VCARD}'><FN>Mallory</FN></vCard>"))[0] == "forbidden"
    )
    big = f"<vCard xmlns='{NS_VCARD}'><FN>Alice</FN><DESC>{'x' * MAX_VCARD_BYTES}</DESC></vCard>"
    assert error_of(await owner.iq("set", alice, big))[0] == "not-acceptable"
    broken = f"<vCard xmlns='{NS_VCARD}'><PHOTO><TYPE>image/png</TYPE><BINVAL>not base64!</BINVAL></PHOTO></vCard>"
    assert error_of(await owner.iq("set", alice, broken))[0] == "bad-request"
    seen = await other.iq("get", alice, f"<vCard xmlns='{NS_VCARD}'/>")
    assert seen.findtext(f"{{{NS_VCARD}}}vCard/{{{NS_VCARD}}}FN") == "Alice"


async def test_vcard4_over_pep_and_account_features(users, online):
    alice, bob = users(2)
    owner = await online(alice)
    contact = await online(bob)
    await befriend(owner, contact)
    card = f"<vcard xmlns='{NS_VCARD4}'><fn><text>Alice</text></fn></vcard>"
    assert (await owner.iq("set", alice, publish(NS_VCARD4, card, "current"))).get("type") == "result"
    fetched = await contact.iq("get", alice, items_request(NS_VCARD4))
    assert fetched.findtext(f".//{{{NS_VCARD4}}}fn/{{{NS_VCARD4}}}text") == "Alice"
    info = await owner.iq("get", alice, f"<query xmlns='{NS_DISCO_INFO}'/>")
    features = {f.get("var") for f in info.iter(f"{{{NS_DISCO_INFO}}}feature")}
    assert {
        "urn:xmpp:pep-vcard-conversion:0",
        NS_VCARD4,
        "urn:xmpp:bookmarks-conversion:0",
        f"{NS_BOOKMARKS}#compat",
        f"{NS_BOOKMARKS}#compat-pep",
    } <= features


async def test_private_xml_round_trip_and_errors(users, online):
    alice, bob = users(2)
    owner = await online(alice)
    other = await online(bob)
    prefs = "<exodus xmlns='exodus:prefs'><defaultnick>Hamlet</defaultnick></exodus>"
    assert (await owner.iq("set", alice, f"<query xmlns='{NS_PRIVATE}'>{prefs}</query>")).get("type") == "result"
    got = await owner.iq("get", alice, f"<query xmlns='{NS_PRIVATE}'><exodus xmlns='exodus:prefs'/></query>")
    assert got.findtext(".//{exodus:prefs}defaultnick") == "Hamlet"
    nothing = await owner.iq("get", alice, f"<query xmlns='{NS_PRIVATE}'><other xmlns='urn:example:none'/></query>")
    stored = nothing.find(f"{{{NS_PRIVATE}}}query/{{urn:example:none}}other")
    assert stored is not None and len(stored) == 0

    cases = [
        (other, "get", f"<query xmlns='{NS_PRIVATE}'><exodus xmlns='exodus:prefs'/></query>", "forbidden"),
        (other, "set", f"<query xmlns='{NS_PRIVATE}'>{prefs}</query>", "forbidden"),
        (owner, "get", f"<query xmlns='{NS_PRIVATE}'/>", "not-acceptable"),
        (owner, "set", f"<query xmlns='{NS_PRIVATE}'><x xmlns='jabber:client'/></query>", "not-acceptable"),
        (owner, "get", f"<query xmlns='{NS_PRIVATE}'><a xmlns='urn:a'/><b xmlns='urn:b'/></query>", "bad-request"),
        (
            owner,
            "set",
            f"<query xmlns='{NS_PRIVATE}'><exodus xmlns='exodus:prefs'>{'y' * MAX_FRAGMENT_BYTES}</exodus></query>",
            "not-acceptable",
        ),
    ]
    for user, type_, payload, condition in cases:
        assert error_of(await user.iq(type_, alice, payload))[0] == condition, payload
    got = await owner.iq("get", alice, f"<query xmlns='{NS_PRIVATE}'><exodus xmlns='exodus:prefs'/></query>")
    assert got.findtext(".//{exodus:prefs}defaultnick") == "Hamlet"


def legacy_rooms(answer) -> dict:
    return {
        c.get("jid"): (c.get("name"), c.get("autojoin"), c.findtext(f"{{{NS_LEGACY}}}nick"))
        for c in answer.iter(f"{{{NS_LEGACY}}}conference")
    }


def conference(name: str, nick: str, autojoin: str = "true") -> str:
    return f"<conference xmlns='{NS_BOOKMARKS}' name='{name}' autojoin='{autojoin}'><nick>{nick}</nick></conference>"


async def test_bookmarks_are_converted_both_ways(users, online):
    alice, bob = users(2)
    legacy = await online(alice, "legacy")
    modern = await online(alice, "modern", interests=[NS_BOOKMARKS])
    contact = await online(bob)
    await befriend(legacy, contact)
    storage = (
        f"<storage xmlns='{NS_LEGACY}'>"
        "<conference jid='tea@conference.localhost' name='Tea' autojoin='true'><nick>Al</nick></conference>"
        "<conference jid='work@conference.localhost' name='Work' autojoin='false'><nick>Alice</nick>"
        "<password>s3cret</password></conference>"
        "<url name='Home' url='https://example.org/'/></storage>"
    )
    assert (await legacy.iq("set", alice, f"<query xmlns='{NS_PRIVATE}'>{storage}</query>")).get("type") == "result"

    # XEP-0402 side: one item per room, the notifications went out, nobody else reads them.
    items = await modern.iq("get", alice, items_request(NS_BOOKMARKS))
    assert sorted(item_ids(items)) == ["tea@conference.localhost", "work@conference.localhost"]
    work = items.find(f".//{{{NS_PUBSUB}}}item[@id='work@conference.localhost']/{{{NS_BOOKMARKS}}}conference")
    assert (work.get("name"), work.get("autojoin"), work.findtext(f"{{{NS_BOOKMARKS}}}password")) == (
        "Work",
        "false",
        "s3cret",
    )
    await modern.inbox.wait(event_from(alice, NS_BOOKMARKS))
    assert error_of(await contact.iq("get", alice, items_request(NS_BOOKMARKS))) == ("not-allowed", "closed-node")

    # A XEP-0402 client adds one; the legacy client sees all of them, and its URL kept.
    add = publish(
        NS_BOOKMARKS,
        conference("Play", "Juliet"),
        "play@conference.localhost",
        persist_items="true",
        max_items="max",
        send_last_published_item="never",
        access_model="whitelist",
    )
    assert (await modern.iq("set", alice, add)).get("type") == "result"
    got = await legacy.iq("get", alice, f"<query xmlns='{NS_PRIVATE}'><storage xmlns='{NS_LEGACY}'/></query>")
    assert legacy_rooms(got) == {
        "tea@conference.localhost": ("Tea", "true", "Al"),
        "work@conference.localhost": ("Work", "false", "Alice"),
        "play@conference.localhost": ("Play", "true", "Juliet"),
    }
    assert [u.get("url") for u in got.iter(f"{{{NS_LEGACY}}}url")] == ["https://example.org/"]

    # The legacy client drops one room and renames another: a retraction and one publish,
    # the unchanged room is not published again.
    await round_trip(modern)
    before = len(modern.inbox.received(event_from(alice, NS_BOOKMARKS)))
    storage = (
        f"<storage xmlns='{NS_LEGACY}'>"
        "<conference jid='tea@conference.localhost' name='Tea' autojoin='true'><nick>Al</nick></conference>"
        "<conference jid='play@conference.localhost' name='The Play' autojoin='true'><nick>Juliet</nick>"
        "</conference></storage>"
    )
    await legacy.iq("set", alice, f"<query xmlns='{NS_PRIVATE}'>{storage}</query>")
    await round_trip(modern)
    events = modern.inbox.received(event_from(alice, NS_BOOKMARKS))[before:]
    assert sorted((e[0][0][0].tag.split("}")[1], e[0][0][0].get("id")) for e in events) == [
        ("item", "play@conference.localhost"),
        ("retract", "work@conference.localhost"),
    ]
    items = await modern.iq("get", alice, items_request(NS_BOOKMARKS))
    assert sorted(item_ids(items)) == ["play@conference.localhost", "tea@conference.localhost"]


async def test_legacy_pep_bookmarks_follow_bookmarks2(users, online):
    (alice,) = users(1)
    user = await online(alice)
    storage = (
        f"<storage xmlns='{NS_LEGACY}'><conference jid='old@conference.localhost' name='Old' autojoin='true'>"
        "<nick>A</nick></conference></storage>"
    )
    assert (await user.iq("set", alice, publish(NS_LEGACY, storage, "current", access_model="whitelist"))).get(
        "type"
    ) == "result"
    assert item_ids(await user.iq("get", alice, items_request(NS_BOOKMARKS))) == ["old@conference.localhost"]
    await user.iq("set", alice, publish(NS_BOOKMARKS, conference("New", "A"), "new@conference.localhost"))
    legacy = await user.iq("get", alice, items_request(NS_LEGACY))
    assert set(legacy_rooms(legacy)) == {"old@conference.localhost", "new@conference.localhost"}
    retract = f"<pubsub xmlns='{NS_PUBSUB}'><retract node='{NS_BOOKMARKS}'><item id='old@conference.localhost'/></retract></pubsub>"
    assert (await user.iq("set", alice, retract)).get("type") == "result"
    assert set(legacy_rooms(await user.iq("get", alice, items_request(NS_LEGACY)))) == {"new@conference.localhost"}
    bad = f"<storage xmlns='{NS_LEGACY}'><conference name='no jid'/></storage>"
    assert error_of(await user.iq("set", alice, f"<query xmlns='{NS_PRIVATE}'>{bad}</query>"))[0] == "bad-request"
    assert item_ids(await user.iq("get", alice, items_request(NS_BOOKMARKS))) == ["new@conference.localhost"]


async def test_server_contact_addresses_in_disco(users, online):
    (alice,) = users(1)
    user = await online(alice)
    info = await user.iq("get", "localhost", f"<query xmlns='{NS_DISCO_INFO}'/>")
    forms = {f.findtext(f"{{{NS_X}}}field[@var='FORM_TYPE']/{{{NS_X}}}value"): f for f in info.iter(f"{{{NS_X}}}x")}
    serverinfo = forms["http://jabber.org/network/serverinfo"]
    fields = {f.get("var"): [v.text for v in f.iter(f"{{{NS_X}}}value")] for f in serverinfo.iter(f"{{{NS_X}}}field")}
    assert fields["abuse-addresses"] == ["mailto:abuse@localhost", "xmpp:abuse@localhost"]
    assert fields["support-addresses"] == ["https://localhost/support"]
    assert "admin-addresses" not in fields
