"""XEP-0045 Multi-User Chat end to end: creating and configuring rooms, entering with
history, fan-out, private messages, nicknames, invitations, self-ping, disco, avatars."""

import asyncio
import base64
import hashlib
import time

import aiohttp
import pytest
from lxml import etree

from tests.support.inbox import MESSAGE, PRESENCE, Inbox, message
from tests.support.muc import (
    NS_ADMIN,
    NS_MUC,
    NS_OWNER,
    NS_STANZAS,
    NS_USER,
    SERVICE,
    User,
    codes,
    create_room,
    error_of,
    from_,
    item,
    new_account,
    new_room,
    new_user,
)
from tests.support.raw import RawClient
from tests.support.server import XmppdProcess
from xmppd.client import Client

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_DATA = "jabber:x:data"
OCCUPANT_ID = "{urn:xmpp:occupant-id:0}occupant-id"
STANZA_ID = "{urn:xmpp:sid:0}stanza-id"
DELAY = "{urn:xmpp:delay}delay"
BODY = "{jabber:client}body"
QUICK_STOP = "graceful_shutdown_timeout = 1"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = XmppdProcess(tmp_path_factory.mktemp("muc"), server_section=QUICK_STOP).start()
    yield process
    process.stop()


def features(info: etree._Element) -> set[str]:
    return {f.get("var") for f in info.iterfind(f"{{{NS_DISCO_INFO}}}query/{{{NS_DISCO_INFO}}}feature")}


def form_values(info: etree._Element) -> dict[str, str]:
    return {
        field.get("var"): field.findtext(f"{{{NS_DATA}}}value") for field in info.iterfind(f".//{{{NS_DATA}}}field")
    }


# ------------------------------------------------------------------ creation


async def test_create_reserved_room_is_locked_until_configured(server):
    owner, other = await new_user(server), await new_user(server)
    room = new_room()
    created = await owner.join(room, "owner")
    assert {"110", "201"} <= codes(created)
    assert item(created).get("affiliation") == "owner" and item(created).get("role") == "moderator"
    await owner.subject(room)

    # Locked: nobody else gets in, and the room is not listed.
    refused = await other.join(room, "other", expect_error=True)
    assert error_of(refused) == ("cancel", "item-not-found")
    items = await other.iq("get", SERVICE, f"<query xmlns='{NS_DISCO_ITEMS}'/>")
    assert room not in {i.get("jid") for i in items.iter(f"{{{NS_DISCO_ITEMS}}}item")}

    # Reserved room: the owner reads the form, then submits it.
    form = await owner.iq("get", room, f"<query xmlns='{NS_OWNER}'/>")
    fields = form_values(form)
    assert fields["FORM_TYPE"] == "http://jabber.org/protocol/muc#roomconfig"
    for var in (
        "muc#roomconfig_roomname",
        "muc#roomconfig_roomdesc",
        "muc#roomconfig_persistentroom",
        "muc#roomconfig_publicroom",
        "muc#roomconfig_membersonly",
        "muc#roomconfig_moderatedroom",
        "muc#roomconfig_passwordprotectedroom",
        "muc#roomconfig_roomsecret",
        "muc#roomconfig_maxusers",
        "muc#roomconfig_whois",
        "muc#roomconfig_changesubject",
        "muc#roomconfig_allowpm",
        "muc#maxhistoryfetch",
        "muc#roomconfig_enablearchiving",
    ):
        assert var in fields, var
    done = await owner.configure(
        room,
        **{
            "muc#roomconfig_roomname": "Witches",
            "muc#roomconfig_roomdesc": "A cave",
            "muc#roomconfig_whois": "anyone",
            "muc#roomconfig_persistentroom": "1",
        },
    )
    assert done.get("type") == "result"

    entered = await other.join(room, "other")
    assert "100" in codes(entered)  # non-anonymous now
    info = await other.iq("get", room, f"<query xmlns='{NS_DISCO_INFO}'/>")
    identity = info.find(f"{{{NS_DISCO_INFO}}}query/{{{NS_DISCO_INFO}}}identity")
    assert (identity.get("category"), identity.get("type"), identity.get("name")) == ("conference", "text", "Witches")
    assert {
        "http://jabber.org/protocol/muc",
        "muc_nonanonymous",
        "muc_persistent",
        "muc_public",
        "muc_open",
        "muc_unsecured",
        "muc_unmoderated",
        "urn:xmpp:mam:2",
        "urn:xmpp:occupant-id:0",
        "http://jabber.org/protocol/muc#self-ping-optimization",
        "vcard-temp",
    } <= features(info)
    values = form_values(info)
    assert values["FORM_TYPE"] == "http://jabber.org/protocol/muc#roominfo"
    assert values["muc#roominfo_occupants"] == "2" and values["muc#roominfo_description"] == "A cave"
    items = await other.iq("get", SERVICE, f"<query xmlns='{NS_DISCO_ITEMS}'/>")
    assert (room, "Witches") in {(i.get("jid"), i.get("name")) for i in items.iter(f"{{{NS_DISCO_ITEMS}}}item")}


async def test_instant_room_and_cancelled_creation(server):
    owner, other = await new_user(server), await new_user(server)
    room = await create_room(owner)  # empty submission: instant room
    await other.join(room, "other")

    cancelled = new_room()
    await owner.join(cancelled, "owner")
    await owner.subject(cancelled)
    result = await owner.iq("set", cancelled, f"<query xmlns='{NS_OWNER}'><x xmlns='{NS_DATA}' type='cancel'/></query>")
    assert result.get("type") == "result"
    gone = await owner.inbox.wait(from_(f"{cancelled}/owner", type_="unavailable"))
    assert gone.find(f"{{{NS_USER}}}x/{{{NS_USER}}}destroy") is not None
    info = await other.iq("get", cancelled, f"<query xmlns='{NS_DISCO_INFO}'/>")
    assert error_of(info) == ("cancel", "item-not-found")


async def test_service_disco_and_hidden_rooms(server):
    user = await new_user(server)
    info = await user.iq("get", SERVICE, f"<query xmlns='{NS_DISCO_INFO}'/>")
    identity = info.find(f"{{{NS_DISCO_INFO}}}query/{{{NS_DISCO_INFO}}}identity")
    assert (identity.get("category"), identity.get("type")) == ("conference", "text")
    assert "http://jabber.org/protocol/muc" in features(info)
    hidden = await create_room(user, publicroom="0")
    items = await user.iq("get", SERVICE, f"<query xmlns='{NS_DISCO_ITEMS}'/>")
    assert hidden not in {i.get("jid") for i in items.iter(f"{{{NS_DISCO_ITEMS}}}item")}
    # The server lists its MUC service among its items.
    items = await user.iq("get", "localhost", f"<query xmlns='{NS_DISCO_ITEMS}'/>")
    assert SERVICE in {i.get("jid") for i in items.iter(f"{{{NS_DISCO_ITEMS}}}item")}


async def test_room_creation_can_be_restricted(tmp_path):
    server = XmppdProcess(tmp_path, '[extensions.muc]\nroom_creation = "admins"\n', server_section=QUICK_STOP).start()
    try:
        user = await new_user(server)
        refused = await user.join(new_room(), "me", expect_error=True)
        assert error_of(refused) == ("cancel", "not-allowed")
        admin_jid = server.adduser("admin")
        admin = Client(admin_jid + "/desk", "secret", verify_tls=False)
        inbox = Inbox(admin)
        await admin.login("127.0.0.1", server.port)
        admin.send_raw("<presence/>")
        created = await User(str(admin.boundjid), admin, inbox).join(new_room(), "boss")
        assert "201" in codes(created)
    finally:
        server.stop()


# ------------------------------------------------------------------ entering and talking


async def test_presences_on_entering_and_fan_out(server):
    owner = await new_user(server)
    room = await create_room(owner, whois="moderators")
    users = [owner] + [await new_user(server) for _ in range(3)]
    for index, user in enumerate(users[1:], 1):
        entered = await user.join(room, f"user{index}")
        assert "100" not in codes(entered) and "170" in codes(entered)
        assert item(entered).get("jid") == user.jid  # one's own real JID
        await user.subject(room)
        # Everyone already in the room was presented to the newcomer, before its self-presence.
        for other_index in range(index):
            nick = "owner" if other_index == 0 else f"user{other_index}"
            seen = user.inbox.received(from_(f"{room}/{nick}"))
            assert seen, nick
            # Semi-anonymous: only the owner (a moderator) shows... nobody's JID to participants.
            assert item(seen[0]).get("jid") is None
        # The owner, a moderator, sees the real JID of the newcomer.
        announced = await owner.inbox.wait(from_(f"{room}/user{index}"))
        assert item(announced).get("jid") == user.jid
        assert announced.find(OCCUPANT_ID) is not None

    sent = await users[2].say(room, "Thrice the brinded cat hath mew'd.", "fanout1")
    stanza_id = sent.find(STANZA_ID)
    assert stanza_id is not None and stanza_id.get("by") == room
    occupant_id = sent.find(OCCUPANT_ID).get("id")
    for user in users:
        got = (
            sent if user is users[2] else await user.inbox.wait(lambda s: s.tag == MESSAGE and s.get("id") == "fanout1")
        )
        assert got.get("from") == f"{room}/user2" and got.get("type") == "groupchat"
        assert got.get("to") == user.jid
        assert got.find(STANZA_ID).get("id") == stanza_id.get("id")
        assert got.find(OCCUPANT_ID).get("id") == occupant_id

    # A forged occupant id or stanza id from the client is replaced by the room's own.
    users[1].client.send_raw(
        f"<message type='groupchat' id='forged' to='{room}'><body>x</body>"
        f"<occupant-id xmlns='urn:xmpp:occupant-id:0' id='fake'/><stanza-id xmlns='urn:xmpp:sid:0' id='fake' by='{room}'/></message>"
    )
    got = await users[0].inbox.wait(lambda s: s.get("id") == "forged")
    assert [o.get("id") for o in got.iter(OCCUPANT_ID)] != ["fake"] and len(got.findall(OCCUPANT_ID)) == 1
    assert [s.get("id") for s in got.iter(STANZA_ID)] != ["fake"] and len(got.findall(STANZA_ID)) == 1


async def test_history_on_entering(server):
    owner = await new_user(server)
    room = await create_room(owner, **{"muc#maxhistoryfetch": "5"})
    for number in range(7):
        await owner.say(room, f"line {number}")
    subject = await owner.iq("get", room, f"<query xmlns='{NS_DISCO_INFO}'/>")
    assert subject.get("type") == "result"

    async def history_of(history_xml: str) -> list[str]:
        user = await new_user(server)
        await user.join(room, "reader", history=history_xml)
        end = await user.subject(room)
        bodies = []
        for stanza in user.inbox.stanzas:
            if stanza is end:
                break
            if stanza.tag == MESSAGE and stanza.findtext(BODY):
                assert stanza.find(DELAY).get("from") == room
                assert stanza.get("from") == f"{room}/owner"
                bodies.append(stanza.findtext(BODY))
        await user.logout()
        return bodies

    assert await history_of("") == [f"line {n}" for n in range(2, 7)]  # the room keeps 5
    assert await history_of("<history maxstanzas='2'/>") == ["line 5", "line 6"]
    assert await history_of("<history maxstanzas='0'/>") == []
    assert await history_of("<history maxchars='0'/>") == []
    one = await history_of("<history maxchars='400'/>")
    assert 0 < len(one) < 5 and one[-1] == "line 6"
    assert await history_of("<history seconds='3600'/>") == [f"line {n}" for n in range(2, 7)]
    future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    assert await history_of(f"<history since='{future}'/>") == []
    past = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
    assert await history_of(f"<history since='{past}' maxstanzas='1'/>") == ["line 6"]


async def test_subject(server):
    owner, user = await new_user(server), await new_user(server)
    room = await create_room(owner)
    await user.join(room, "user")
    owner.client.send_raw(f"<message type='groupchat' to='{room}' id='s1'><subject>Cauldron</subject></message>")
    changed = await user.inbox.wait(lambda s: s.get("id") == "s1")
    assert changed.get("from") == f"{room}/owner" and changed.findtext("{jabber:client}subject") == "Cauldron"
    # A participant may not change it (muc#roomconfig_changesubject is off).
    user.client.send_raw(f"<message type='groupchat' to='{room}' id='s2'><subject>Mine</subject></message>")
    refused = await user.inbox.wait(lambda s: s.get("id") == "s2" and s.get("type") == "error")
    assert error_of(refused) == ("auth", "forbidden")
    late = await new_user(server)
    await late.join(room, "late")
    subject = await late.subject(room)
    assert subject.findtext("{jabber:client}subject") == "Cauldron" and subject.get("from") == f"{room}/owner"


async def test_subject_in_disco_only_for_those_who_may_read_the_room(server):
    """Issue 20 item 4: disco#info showed the subject of members-only and hidden rooms."""
    owner, stranger = await new_user(server), await new_user(server)
    rooms = {
        "public": await create_room(owner),
        "hidden": await create_room(owner, publicroom="0"),
        "members": await create_room(owner, membersonly="1"),
        "password": await create_room(owner, passwordprotectedroom="1", roomsecret="pw"),
    }
    for name, room in rooms.items():
        owner.client.send_raw(
            f"<message type='groupchat' to='{room}' id='subj-{name}'><subject>plans of {name}</subject></message>"
        )
        await owner.inbox.wait(lambda s: s.get("id") == f"subj-{name}")
    for name, room in rooms.items():
        seen = form_values(await stranger.iq("get", room, f"<query xmlns='{NS_DISCO_INFO}'/>"))
        assert seen.get("muc#roominfo_subject") == ("plans of public" if name == "public" else None), name
        assert seen["muc#roominfo_occupants"] == "1"
        assert (
            form_values(await owner.iq("get", room, f"<query xmlns='{NS_DISCO_INFO}'/>"))["muc#roominfo_subject"]
            == f"plans of {name}"
        )
    await stranger.join(rooms["password"], "stranger", password="pw")
    seen = form_values(await stranger.iq("get", rooms["password"], f"<query xmlns='{NS_DISCO_INFO}'/>"))
    assert seen["muc#roominfo_subject"] == "plans of password"


async def test_private_messages(server):
    owner, first, second = await new_user(server), await new_user(server), await new_user(server)
    room = await create_room(owner)
    await first.join(room, "first")
    await second.join(room, "second")
    first.client.send_raw(f"<message type='chat' id='pm1' to='{room}/second'><body>psst</body></message>")
    got = await second.inbox.wait(lambda s: s.get("id") == "pm1")
    assert got.get("from") == f"{room}/first" and got.get("type") == "chat" and got.findtext(BODY) == "psst"
    assert got.find(f"{{{NS_USER}}}x") is not None and got.find(OCCUPANT_ID) is not None
    assert not owner.inbox.received(lambda s: s.get("id") == "pm1")

    first.client.send_raw(f"<message type='chat' id='pm2' to='{room}/nobody'><body>?</body></message>")
    assert error_of(await first.inbox.wait(lambda s: s.get("id") == "pm2")) == ("cancel", "item-not-found")
    first.client.send_raw(f"<message type='groupchat' id='pm3' to='{room}/second'><body>?</body></message>")
    assert error_of(await first.inbox.wait(lambda s: s.get("id") == "pm3")) == ("modify", "bad-request")
    outsider = await new_user(server)
    outsider.client.send_raw(f"<message type='chat' id='pm4' to='{room}/second'><body>?</body></message>")
    assert error_of(await outsider.inbox.wait(lambda s: s.get("id") == "pm4")) == ("modify", "not-acceptable")

    await owner.configure(room, **{"muc#roomconfig_allowpm": "moderators"})
    first.client.send_raw(f"<message type='chat' id='pm5' to='{room}/second'><body>?</body></message>")
    assert error_of(await first.inbox.wait(lambda s: s.get("id") == "pm5")) == ("auth", "forbidden")
    owner.client.send_raw(f"<message type='chat' id='pm6' to='{room}/second'><body>ok</body></message>")
    assert (await second.inbox.wait(lambda s: s.get("id") == "pm6")).findtext(BODY) == "ok"


async def test_nickname_conflict_and_change(server):
    owner, user, rival = await new_user(server), await new_user(server), await new_user(server)
    room = await create_room(owner)
    await user.join(room, "witch")
    refused = await rival.join(room, "witch", expect_error=True)
    assert error_of(refused) == ("cancel", "conflict")
    assert refused.find(f"{{{NS_MUC}}}x") is not None  # the request comes back with the error
    # A second resource of the same user shares the nickname.
    same = Client(user.jid.split("/")[0] + "/laptop", "secret", verify_tls=False)
    same_inbox = Inbox(same)
    await same.login("127.0.0.1", server.port)
    same.send_raw("<presence/>")
    await User(str(same.boundjid), same, same_inbox).join(room, "witch")

    await rival.join(room, "rival")
    rival.client.send_raw(f"<presence to='{room}/witch'/>")  # nickname change to a taken one
    refused = await rival.inbox.wait(from_(f"{room}/witch", type_="error"))
    assert error_of(refused) == ("cancel", "conflict")

    rival.client.send_raw(f"<presence to='{room}/hecate'/>")
    old = await owner.inbox.wait(from_(f"{room}/rival", type_="unavailable"))
    assert "303" in codes(old) and item(old).get("nick") == "hecate" and item(old).get("role") == "participant"
    new = await owner.inbox.wait(from_(f"{room}/hecate", type_=None))
    assert item(new).get("role") == "participant"
    own = await rival.inbox.wait(from_(f"{room}/rival", type_="unavailable"))
    assert {"303", "110"} <= codes(own)
    assert "110" in codes(await rival.inbox.wait(from_(f"{room}/hecate", type_=None)))
    await same.logout()


async def test_nickname_changes_reach_every_occupant_in_order(server):
    """Issue 13 item 7 (XEP-0045 7.6): for each change, every occupant, the changer
    included, gets the unavailable presence of the old nickname (303, the new nick) and
    then the presence of the new one; two occupants change 10 times each, at once."""
    owner = await new_user(server)
    room = await create_room(owner)
    changers = [await new_user(server), await new_user(server)]
    names = [[f"c{who}n{number}" for number in range(11)] for who in range(2)]
    for changer, nicks in zip(changers, names):
        await changer.join(room, nicks[0])
    for step in range(1, 11):  # pipelined: nobody waits for an answer
        for changer, nicks in zip(changers, names):
            changer.client.send_raw(f"<presence to='{room}/{nicks[step]}'/>")
    for user in [owner, *changers]:
        for who, nicks in enumerate(names):
            await user.inbox.wait(from_(f"{room}/{nicks[-1]}", type_=None))
            seen = user.inbox.received(
                lambda s: (
                    s.tag == PRESENCE
                    and s.get("from", "").startswith(f"{room}/")
                    and s.get("from").split("/", 1)[1] in nicks
                )
            )
            steps = [(s.get("from").split("/", 1)[1], s.get("type")) for s in seen]
            expected = [(nicks[0], None)] + [
                pair for old, new in zip(nicks, nicks[1:]) for pair in ((old, "unavailable"), (new, None))
            ]
            assert steps == expected, (user.jid, who, steps)
            for old, new in zip(seen[1::2], seen[2::2]):
                assert "303" in codes(old) and item(old).get("nick") == new.get("from").split("/", 1)[1]
                assert ("110" in codes(old)) == ("110" in codes(new)) == (user is changers[who])


async def test_leaving_and_presence_updates(server):
    owner, user = await new_user(server), await new_user(server)
    room = await create_room(owner)
    await user.join(room, "user")
    user.client.send_raw(f"<presence to='{room}/user'><show>away</show><status>brewing</status></presence>")
    update = await owner.inbox.wait(lambda s: from_(f"{room}/user")(s) and s.findtext("{jabber:client}show") == "away")
    assert update.findtext("{jabber:client}status") == "brewing"
    user.client.send_raw(f"<presence type='unavailable' to='{room}/user'><status>bye</status></presence>")
    left = await owner.inbox.wait(from_(f"{room}/user", type_="unavailable"))
    assert item(left).get("role") == "none" and left.findtext("{jabber:client}status") == "bye"
    assert "110" in codes(await user.inbox.wait(from_(f"{room}/user", type_="unavailable")))
    # Disconnecting without a word leaves too.
    await user.join(room, "user")
    await user.logout()
    await owner.inbox.wait(lambda s: from_(f"{room}/user", type_="unavailable")(s) and s is not left)


async def test_presence_to_the_bare_room_needs_a_nickname(server):
    owner = await new_user(server)
    room = await create_room(owner)
    owner.client.send_raw(f"<presence to='{room}'><x xmlns='{NS_MUC}'/></presence>")
    refused = await owner.inbox.wait(from_(room, type_="error"))
    assert error_of(refused) == ("modify", "jid-malformed")


async def test_room_password_guessing_is_throttled(server):
    """Issue 20 item 8: room passwords could be tried about 3,300 times a second. After
    max_password_failures (5) wrong ones, every password of that user is refused with
    policy-violation; another user's right password still works."""
    owner, guesser, friend = await new_user(server), await new_user(server), await new_user(server)
    room = await create_room(owner, passwordprotectedroom="1", roomsecret="s3cret")
    attempts = 20
    for number in range(attempts):  # a burst: all sent before any answer is read
        guesser.client.send_raw(
            f"<presence to='{room}/guess{number}'><x xmlns='{NS_MUC}'><password>wrong{number}</password></x></presence>"
        )
    answers = [
        error_of(await guesser.inbox.wait(from_(f"{room}/guess{number}", type_="error"))) for number in range(attempts)
    ]
    assert answers.count(("auth", "not-authorized")) == 5
    assert answers.count(("wait", "policy-violation")) == attempts - 5
    # The right password does not get the guesser in while it is throttled...
    refused = await guesser.join(room, "guesser", password="s3cret", expect_error=True)
    assert error_of(refused) == ("wait", "policy-violation")
    assert "max_password_failures" in refused.findtext(f"{{jabber:client}}error/{{{NS_STANZAS}}}text")
    # ...and another user is not affected.
    await friend.join(room, "friend", password="s3cret")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{server.http_port}/metrics") as response:
            exposition = await response.text()
    assert 'xmppd_limit_reached_total{limit="extensions.muc.max_password_failures"} 16' in exposition


async def test_occupant_presence_to_the_bare_room(server):
    """Issue 13 item 1: an occupant's presence to the bare room JID is taken as sent to
    its occupant JID (an update, or leaving: aioxmpp 0.13 leaves that way); a
    non-occupant's unavailable presence there changes nothing."""
    owner = await new_user(server)
    room = await create_room(owner)
    raw = await RawClient().login(server.port, (await new_account(server)).split("@")[0], "secret")
    try:
        await raw.send("<presence/>")
        await raw.send(f"<presence to='{room}/raw'><x xmlns='{NS_MUC}'/></presence>")
        await raw.expect(rf"<presence[^>]*from=.{room}/raw.[^>]*>.*?code=.110.")
        await raw.send(f"<presence to='{room}'><show>away</show></presence>")
        await owner.inbox.wait(
            lambda s: from_(f"{room}/raw", type_=None)(s) and s.findtext("{jabber:client}show") == "away"
        )
        await raw.send(f"<presence type='unavailable' to='{room}'><status>bye</status></presence>")
        left = await raw.expect(rf"<presence(?=[^>]*type=.unavailable.)[^>]*from=.{room}/raw.[^>]*>(.*?)</presence>")
        assert 'code="110"' in left.group(1).replace("'", '"')
        gone = await owner.inbox.wait(from_(f"{room}/raw", type_="unavailable"))
        assert gone.findtext("{jabber:client}status") == "bye" and item(gone).get("role") == "none"

        # No longer an occupant: unavailable presence is dropped without an answer,
        # available presence with no nickname gets jid-malformed (XEP-0045 7.2.1).
        await raw.send(
            f"<presence type='unavailable' to='{room}'/><iq type='get' id='after' to='localhost'>"
            "<ping xmlns='urn:xmpp:ping'/></iq>"
        )
        before_ping = await raw.expect(r"(.*?)<iq[^>]*id=.after.")
        assert "<presence" not in before_ping.group(1), before_ping.group(1)
        await raw.send(f"<presence to='{room}'/>")
        refused = await raw.expect(r"<presence[^>]*type=.error.[^>]*>(.*?)</presence>")
        assert "jid-malformed" in refused.group(1)
    finally:
        await raw.close()


# ------------------------------------------------------------------ invitations


async def test_mediated_invitation_and_decline(server):
    owner, guest = await new_user(server), await new_user(server)
    room = await create_room(owner, membersonly="1", roomsecret="pw", passwordprotectedroom="1")
    guest_bare = guest.jid.split("/")[0]
    owner.client.send_raw(
        f"<message to='{room}' id='inv1'><x xmlns='{NS_USER}'><invite to='{guest_bare}'>"
        f"<reason>Join us</reason></invite></x></message>"
    )
    invitation = await guest.inbox.wait(lambda s: s.tag == MESSAGE and s.get("from") == room)
    invite = invitation.find(f"{{{NS_USER}}}x/{{{NS_USER}}}invite")
    assert invite.get("from") == owner.jid and invite.findtext(f"{{{NS_USER}}}reason") == "Join us"
    assert invitation.findtext(f"{{{NS_USER}}}x/{{{NS_USER}}}password") == "pw"
    # The invitee of a members-only room became a member and may enter.
    entered = await guest.join(room, "guest", password="pw")
    assert item(entered).get("affiliation") == "member"

    other = await new_user(server)
    guest.client.send_raw(
        f"<message to='{room}'><x xmlns='{NS_USER}'><invite to='{other.jid.split('/')[0]}'/></x></message>"
    )
    refused = await guest.inbox.wait(lambda s: s.tag == MESSAGE and s.get("type") == "error")
    assert error_of(refused) == ("auth", "forbidden")  # members may not invite here

    other.client.send_raw(
        f"<message to='{room}'><x xmlns='{NS_USER}'><decline to='{owner.jid.split('/')[0]}'>"
        f"<reason>Busy</reason></decline></x></message>"
    )
    declined = await owner.inbox.wait(
        lambda s: s.tag == MESSAGE and s.find(f"{{{NS_USER}}}x/{{{NS_USER}}}decline") is not None
    )
    decline = declined.find(f"{{{NS_USER}}}x/{{{NS_USER}}}decline")
    assert declined.get("from") == room and decline.get("from") == other.jid.split("/")[0]
    assert decline.findtext(f"{{{NS_USER}}}reason") == "Busy"


async def test_invitations_from_a_blocked_user_do_not_reach_the_blocker(server):
    """Issue 20 item 9: a blocked user's text reached the blocker inside a mediated
    invitation (XEP-0045 7.8.2, relayed by the room) or a direct one (XEP-0249)."""
    owner, pest, friend = await new_user(server), await new_user(server), await new_user(server)
    room = await create_room(owner)
    await owner.join(room, "owner")
    await pest.join(room, "pest")
    await friend.join(room, "friend")
    owner_bare, pest_bare = owner.jid.split("/")[0], pest.jid.split("/")[0]
    blocked = await owner.iq("set", owner_bare, f"<block xmlns='urn:xmpp:blocking'><item jid='{pest_bare}'/></block>")
    assert blocked.get("type") == "result"

    pest.client.send_raw(
        f"<message to='{room}' id='m1'><x xmlns='{NS_USER}'><invite to='{owner_bare}'>"
        f"<reason>mediated insult</reason></invite></x></message>"
    )
    pest.client.send_raw(
        f"<message to='{owner_bare}' id='d1'><x xmlns='jabber:x:conference' jid='{room}' "
        f"reason='direct insult'/></message>"
    )
    pest.client.send_raw(
        f"<message to='{room}/owner' type='chat' id='p1'><body>private insult</body>"
        f"<x xmlns='jabber:x:conference' jid='{room}' reason='direct insult via the room'/></message>"
    )
    # The pest's stanzas are handled in order: once its next groupchat message is
    # reflected, both invitations have been routed.
    pest.client.send_raw(f"<message type='groupchat' to='{room}' id='after'><body>after</body></message>")
    await owner.inbox.wait(lambda s: s.get("id") == "after")
    assert not owner.inbox.received(lambda s: "insult" in etree.tostring(s, encoding=str))
    assert error_of(await pest.inbox.wait(lambda s: s.get("id") == "d1")) == ("cancel", "service-unavailable")
    assert not pest.inbox.received(lambda s: s.get("id") == "m1" and s.get("type") == "error")
    assert error_of(await pest.inbox.wait(lambda s: s.get("id") == "p1")) == ("cancel", "service-unavailable")

    # The same invitations from someone not blocked arrive, and a decline from the pest
    # to the owner (relayed by the room) does not.
    friend.client.send_raw(
        f"<message to='{room}'><x xmlns='{NS_USER}'><invite to='{owner_bare}'>"
        f"<reason>mediated welcome</reason></invite></x></message>"
    )
    invitation = await owner.inbox.wait(
        lambda s: (
            s.get("from") == room
            and s.find(f"{{{NS_USER}}}x") is not None
            and "welcome" in etree.tostring(s, encoding=str)
        )
    )
    assert invitation.find(f"{{{NS_USER}}}x/{{{NS_USER}}}invite").get("from") == friend.jid
    pest.client.send_raw(
        f"<message to='{room}'><x xmlns='{NS_USER}'><decline to='{owner_bare}'>"
        f"<reason>declined insult</reason></decline></x></message>"
    )
    pest.client.send_raw(f"<message type='groupchat' to='{room}' id='after2'><body>after</body></message>")
    await owner.inbox.wait(lambda s: s.get("id") == "after2")
    assert not owner.inbox.received(lambda s: "insult" in etree.tostring(s, encoding=str))


async def test_direct_invitation(server):
    owner, guest = await new_user(server), await new_user(server)
    room = await create_room(owner)
    guest.client.register_plugin("xep_0249")
    owner.client.register_plugin("xep_0249")
    received = asyncio.get_running_loop().create_future()
    guest.client.add_event_handler("groupchat_direct_invite", lambda msg: received.done() or received.set_result(msg))
    owner.client.plugin["xep_0249"].send_invitation(guest.jid.split("/")[0], room, reason="Come")
    invitation = await asyncio.wait_for(received, 10)
    assert invitation["groupchat_invite"]["jid"] == room and invitation["groupchat_invite"]["reason"] == "Come"
    await guest.join(room, "guest")


# ------------------------------------------------------------------ self-ping, iqs, avatars


async def test_self_ping(server):
    owner, user = await new_user(server), await new_user(server)
    room = await create_room(owner)
    await user.join(room, "user")
    ping = "<ping xmlns='urn:xmpp:ping'/>"
    assert (await user.iq("get", f"{room}/user", ping)).get("type") == "result"
    outsider = await new_user(server)
    assert error_of(await outsider.iq("get", f"{room}/user", ping)) == ("modify", "not-acceptable")
    await user.leave(room, "user")
    assert error_of(await user.iq("get", f"{room}/user", ping)) == ("modify", "not-acceptable")
    # Pinging another occupant reaches its client, which answers through the room.
    await user.join(room, "user")
    user.client.register_plugin("xep_0199")
    result = await owner.iq("get", f"{room}/user", ping)
    assert result.get("type") == "result" and result.get("from") == f"{room}/user"


async def test_disco_of_an_occupant_by_a_non_occupant_is_a_bad_request(server):
    """XEP-0045 6.6: a non-occupant's disco request to room@service/nick gets bad-request."""
    owner, outsider = await new_user(server), await new_user(server)
    room = await create_room(owner)
    for query in (
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        "<query xmlns='http://jabber.org/protocol/disco#items'/>",
    ):
        assert error_of(await outsider.iq("get", f"{room}/owner", query)) == ("modify", "bad-request")


async def test_room_avatar(server):
    owner, user = await new_user(server), await new_user(server)
    room = await create_room(owner)
    await user.join(room, "user")
    photo = base64.b64encode(b"\x89PNG fake image").decode()
    vcard = f"<vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png</TYPE><BINVAL>{photo}</BINVAL></PHOTO></vCard>"
    refused = await user.iq("set", room, vcard)
    assert error_of(refused) == ("auth", "forbidden")
    assert (await owner.iq("set", room, vcard)).get("type") == "result"
    digest = hashlib.sha1(b"\x89PNG fake image").hexdigest()
    update = await user.inbox.wait(lambda s: s.tag == PRESENCE and s.get("from") == room)
    assert update.findtext("{vcard-temp:x:update}x/{vcard-temp:x:update}photo") == digest
    assert (
        await user.inbox.wait(lambda s: s.tag == MESSAGE and s.get("from") == room and "104" in codes(s))
    ) is not None
    got = await user.iq("get", room, "<vCard xmlns='vcard-temp'/>")
    assert got.findtext("{vcard-temp}vCard/{vcard-temp}PHOTO/{vcard-temp}BINVAL") == photo
    info = await user.iq("get", room, f"<query xmlns='{NS_DISCO_INFO}'/>")
    assert form_values(info)["muc#roominfo_avatarhash"] == digest


async def test_slixmpp_muc_plugin_joins(server):
    """slixmpp's XEP-0045 plugin (as bots use it) enters, talks and reads occupants."""
    owner = await new_user(server)
    room = await create_room(owner)
    user = await new_user(server)
    user.client.register_plugin("xep_0045")
    await user.client.plugin["xep_0045"].join_muc_wait(room, "bot", maxstanzas=0, timeout=10)
    assert "owner" in user.client.plugin["xep_0045"].get_roster(room)
    user.client.send_message(mto=room, mbody="beep", mtype="groupchat")
    await owner.inbox.wait(message(from_=f"{room}/bot", body="beep"))


async def test_admin_lists(server):
    owner, member = await new_user(server), await new_user(server)
    room = await create_room(owner, whois="anyone")
    member_bare = member.jid.split("/")[0]
    result = await owner.iq(
        "set", room, f"<query xmlns='{NS_ADMIN}'><item affiliation='member' jid='{member_bare}'/></query>"
    )
    assert result.get("type") == "result"
    await member.join(room, "member")
    # A member of a non-anonymous room reads who belongs (OMEMO clients do).
    for affiliation, expected in (("member", member_bare), ("owner", owner.jid.split("/")[0])):
        listed = await member.iq("get", room, f"<query xmlns='{NS_ADMIN}'><item affiliation='{affiliation}'/></query>")
        assert [i.get("jid") for i in listed.iter(f"{{{NS_ADMIN}}}item")] == [expected]
    refused = await member.iq("get", room, f"<query xmlns='{NS_ADMIN}'><item affiliation='outcast'/></query>")
    assert error_of(refused) == ("auth", "forbidden")
    moderators = await owner.iq("get", room, f"<query xmlns='{NS_ADMIN}'><item role='moderator'/></query>")
    assert [i.get("nick") for i in moderators.iter(f"{{{NS_ADMIN}}}item")] == ["owner"]
