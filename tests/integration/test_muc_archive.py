"""The room archive (XEP-0313 on the room JID, RSM paging) and rooms surviving a restart."""

import pytest

from tests.support.inbox import MESSAGE, online
from tests.support.muc import (
    NS_ADMIN,
    NS_MAM,
    NS_RSM,
    SERVICE,
    User,
    codes,
    create_room,
    error_of,
    form,
    item,
    new_user,
)
from tests.support.server import XmppdProcess

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_FORWARD = "urn:xmpp:forward:0"
BODY = "{jabber:client}body"
QUICK_STOP = "graceful_shutdown_timeout = 1"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = XmppdProcess(tmp_path_factory.mktemp("muc-archive"), server_section=QUICK_STOP).start()
    yield process
    process.stop()


async def query(user, room, query_id, rsm="", fields=None):
    """Run a MAM query; (bodies of the results in order, their ids, the <fin/>)."""
    payload = form(NS_MAM, fields) if fields else ""
    result = await user.iq(
        "set", room, f"<query xmlns='{NS_MAM}' queryid='{query_id}'>{payload}<set xmlns='{NS_RSM}'>{rsm}</set></query>"
    )
    if result.get("type") == "error":
        return result
    results = user.inbox.received(
        lambda s: (
            s.tag == MESSAGE
            and s.find(f"{{{NS_MAM}}}result") is not None
            and s.find(f"{{{NS_MAM}}}result").get("queryid") == query_id
        )
    )
    forwarded = [r.find(f"{{{NS_MAM}}}result/{{{NS_FORWARD}}}forwarded/{{jabber:client}}message") for r in results]
    for r in results:
        assert r.get("from") == room
        assert r.find(f"{{{NS_MAM}}}result/{{{NS_FORWARD}}}forwarded/{{urn:xmpp:delay}}delay") is not None
    ids = [r.find(f"{{{NS_MAM}}}result").get("id") for r in results]
    return [m.findtext(BODY) for m in forwarded], ids, result.find(f"{{{NS_MAM}}}fin"), forwarded


async def test_archive_paging(server):
    owner, reader = await new_user(server), await new_user(server)
    room = await create_room(owner, whois="moderators")
    stanza_ids = []
    for number in range(7):
        reflection = await owner.say(room, f"msg {number}")
        stanza_ids.append(reflection.find("{urn:xmpp:sid:0}stanza-id").get("id"))
    await reader.join(room, "reader")

    bodies, ids, fin, _ = await query(reader, room, "q1", "<max>3</max>")
    assert bodies == ["msg 0", "msg 1", "msg 2"] and ids == stanza_ids[:3]
    assert fin.get("complete") is None
    assert fin.findtext(f"{{{NS_RSM}}}set/{{{NS_RSM}}}first") == ids[0]
    assert fin.findtext(f"{{{NS_RSM}}}set/{{{NS_RSM}}}last") == ids[2]
    assert fin.findtext(f"{{{NS_RSM}}}set/{{{NS_RSM}}}count") == "7"

    bodies, ids, fin, _ = await query(reader, room, "q2", f"<max>3</max><after>{ids[-1]}</after>")
    assert bodies == ["msg 3", "msg 4", "msg 5"] and fin.get("complete") is None
    bodies, _, fin, _ = await query(reader, room, "q3", f"<max>3</max><after>{ids[-1]}</after>")
    assert bodies == ["msg 6"] and fin.get("complete") == "true"

    # Backwards from the end: the last page, then the one before.
    bodies, ids, fin, _ = await query(reader, room, "q4", "<max>2</max><before/>")
    assert bodies == ["msg 5", "msg 6"] and fin.get("complete") is None
    bodies, _, fin, _ = await query(reader, room, "q5", f"<max>5</max><before>{ids[0]}</before>")
    assert bodies == ["msg 0", "msg 1", "msg 2", "msg 3", "msg 4"] and fin.get("complete") == "true"

    # Filters: by occupant, by id range.
    bodies, _, _, _ = await query(reader, room, "q6", "", {"with": f"{room}/owner", "after-id": stanza_ids[4]})
    assert bodies == ["msg 5", "msg 6"]
    bodies, _, _, _ = await query(reader, room, "q7", "", {"with": f"{room}/nobody"})
    assert bodies == []

    # The semi-anonymous room hides real JIDs from a participant, shows them to its owner.
    _, _, _, forwarded = await query(reader, room, "q8", "<max>1</max>")
    assert forwarded[0].get("from") == f"{room}/owner" and item(forwarded[0]) is None
    _, _, _, forwarded = await query(owner, room, "q9", "<max>1</max>")
    assert item(forwarded[0]).get("jid") == owner.jid.split("/")[0]

    # Bad input.
    assert error_of(await query(reader, room, "e1", "<after>no-such-id</after>")) == ("cancel", "item-not-found")
    assert error_of(await query(reader, room, "e2", "<max>many</max>")) == ("modify", "bad-request")
    assert error_of(await query(reader, room, "e3", "", {"start": "yesterday"})) == ("modify", "bad-request")


async def test_service_advertises_mam(server):
    """Issue 13 item 3: clients check the MUC service for MAM before its rooms."""
    user = await new_user(server)
    info = await user.iq("get", SERVICE, f"<query xmlns='{NS_DISCO_INFO}'/>")
    assert NS_MAM in {f.get("var") for f in info.iter(f"{{{NS_DISCO_INFO}}}feature")}


async def test_archive_of_members_only_room_is_for_members(server):
    owner, stranger = await new_user(server), await new_user(server)
    room = await create_room(owner, membersonly="1")
    await owner.say(room, "secret")
    assert error_of(await query(stranger, room, "m1")) == ("auth", "forbidden")
    bodies, _, _, _ = await query(owner, room, "m2")
    assert bodies == ["secret"]


async def test_archive_of_a_password_or_hidden_room_is_for_those_inside(server):
    """Issue 20 item 4: a password-protected room's archive was readable by anyone."""
    owner, stranger, member = await new_user(server), await new_user(server), await new_user(server)
    locked = await create_room(owner, passwordprotectedroom="1", roomsecret="pw")
    await owner.say(locked, "behind the password")
    assert error_of(await query(stranger, locked, "p1")) == ("auth", "forbidden")
    assert error_of(await stranger.join(locked, "stranger", password="guess", expect_error=True)) == (
        "auth",
        "not-authorized",
    )
    assert error_of(await query(stranger, locked, "p2")) == ("auth", "forbidden")
    # A member still needs the password to enter, so it reads no more than a stranger.
    await owner.iq(
        "set",
        locked,
        f"<query xmlns='{NS_ADMIN}'><item affiliation='member' jid='{member.jid.split('/')[0]}'/></query>",
    )
    assert error_of(await query(member, locked, "p3")) == ("auth", "forbidden")
    await stranger.join(locked, "stranger", password="pw")
    bodies, _, _, _ = await query(stranger, locked, "p4")
    assert bodies == ["behind the password"]
    await stranger.leave(locked, "stranger")
    assert error_of(await query(stranger, locked, "p5")) == ("auth", "forbidden")

    hidden = await create_room(owner, publicroom="0")
    await owner.say(hidden, "unlisted")
    assert error_of(await query(stranger, hidden, "h1")) == ("auth", "forbidden")
    await owner.iq(
        "set",
        hidden,
        f"<query xmlns='{NS_ADMIN}'><item affiliation='member' jid='{member.jid.split('/')[0]}'/></query>",
    )
    assert (await query(member, hidden, "h2"))[0] == ["unlisted"]
    # A public room open to all is readable from outside, as in Prosody and ejabberd.
    public = await create_room(owner)
    await owner.say(public, "for everyone")
    assert (await query(stranger, public, "o1"))[0] == ["for everyone"]


async def test_archiving_can_be_switched_off(server):
    owner = await new_user(server)
    room = await create_room(owner, enablearchiving="0")
    reflection = await owner.say(room, "off the record")
    assert reflection.find("{urn:xmpp:sid:0}stanza-id") is None
    bodies, _, fin, _ = await query(owner, room, "o1")
    assert bodies == [] and fin.findtext(f"{{{NS_RSM}}}set/{{{NS_RSM}}}count") == "0"
    info = await owner.iq("get", room, f"<query xmlns='{NS_DISCO_INFO}'/>")
    assert "urn:xmpp:mam:2" not in {f.get("var") for f in info.iter(f"{{{NS_DISCO_INFO}}}feature")}


async def test_persistent_rooms_survive_a_restart(tmp_path):
    server = XmppdProcess(tmp_path, server_section=QUICK_STOP).start()
    try:
        owner, member = await new_user(server), await new_user(server)
        owner_bare, member_bare = owner.jid.split("/")[0], member.jid.split("/")[0]
        room = await create_room(
            owner, persistentroom="1", membersonly="1", roomname="Keep", whois="anyone", **{"muc#maxhistoryfetch": "2"}
        )
        await owner.iq(
            "set", room, f"<query xmlns='{NS_ADMIN}'><item affiliation='member' jid='{member_bare}'/></query>"
        )
        owner.client.send_raw(f"<message type='groupchat' to='{room}' id='subj'><subject>Kept</subject></message>")
        await owner.inbox.wait(lambda s: s.get("id") == "subj")
        for number in range(3):
            await owner.say(room, f"before restart {number}")
        temporary = await create_room(owner)
        await owner.logout()
        await member.logout()
        server.stop()
        server.start()

        owner, member, stranger = (
            await again(server, owner_bare),
            await again(server, member_bare),
            await new_user(server),
        )
        entered = await member.join(room, "member")
        assert item(entered).get("affiliation") == "member" and "100" in codes(entered)
        subject = await member.subject(room)
        assert subject.findtext("{jabber:client}subject") == "Kept"
        history = [
            s.findtext(BODY)
            for s in member.inbox.received(
                lambda s: s.tag == MESSAGE and s.findtext(BODY) and s.find("{urn:xmpp:delay}delay") is not None
            )
        ]
        assert history == ["before restart 1", "before restart 2"]
        assert item(await owner.join(room, "owner")).get("affiliation") == "owner"
        info = await member.iq("get", room, f"<query xmlns='{NS_DISCO_INFO}'/>")
        assert info.find(f"{{{NS_DISCO_INFO}}}query/{{{NS_DISCO_INFO}}}identity").get("name") == "Keep"
        assert {"muc_persistent", "muc_membersonly", "muc_nonanonymous"} <= {
            f.get("var") for f in info.iter(f"{{{NS_DISCO_INFO}}}feature")
        }
        # The archive is still there; non-members are still refused; the temporary room is gone.
        bodies, _, _, _ = await query(member, room, "r1")
        assert bodies == [f"before restart {n}" for n in range(3)]
        refused = await stranger.join(room, "stranger", expect_error=True)
        assert error_of(refused) == ("auth", "registration-required")
        gone = await stranger.iq("get", temporary, f"<query xmlns='{NS_DISCO_INFO}'/>")
        assert error_of(gone) == ("cancel", "item-not-found")
    finally:
        server.stop()


async def again(server, bare: str) -> User:
    client, inbox = await online(server, bare, "again")
    return User(str(client.boundjid), client, inbox)
