"""XEP-0045 roles and affiliations end to end (kick, ban, voice, members, owners,
destruction), and bad input: each refusal carries the error the XEP names, the room is
unchanged and the other occupants see nothing of it."""

import pytest

from tests.support.inbox import MESSAGE, PRESENCE
from tests.support.muc import NS_ADMIN, NS_OWNER, NS_USER, User, codes, create_room, error_of, from_, item, new_user
from tests.support.server import XmppdProcess

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = XmppdProcess(tmp_path_factory.mktemp("muc-admin"), server_section="graceful_shutdown_timeout = 1").start()
    yield process
    process.stop()


def bare(user: User) -> str:
    return user.jid.split("/")[0]


async def admin(user: User, room: str, items: str):
    return await user.iq("set", room, f"<query xmlns='{NS_ADMIN}'>{items}</query>")


async def nothing_leaked(room: str, speaker: User, watchers: list[User], nick: str) -> None:
    """After a refusal: a message through the room reaches everyone, and before it nobody
    saw a presence or message of the refused nickname."""
    reflection = await speaker.say(room, "sync")
    for watcher in watchers:
        if watcher is not speaker:
            await watcher.inbox.wait(lambda s: s.get("id") == reflection.get("id"))
        assert not watcher.inbox.received(lambda s: s.get("from") == f"{room}/{nick}"), watcher.jid


async def occupant_count(user: User, room: str) -> str:
    info = await user.iq("get", room, f"<query xmlns='{NS_DISCO_INFO}'/>")
    return next(
        f.findtext("{jabber:x:data}value")
        for f in info.iter("{jabber:x:data}field")
        if f.get("var") == "muc#roominfo_occupants"
    )


# ------------------------------------------------------------------ kick and ban


async def test_kick_seen_by_everyone(server):
    owner, victim, witness = await new_user(server), await new_user(server), await new_user(server)
    room = await create_room(owner, nick="boss")
    await victim.join(room, "victim")
    await witness.join(room, "witness")
    result = await admin(owner, room, "<item nick='victim' role='none'><reason>Be gone</reason></item>")
    assert result.get("type") == "result"
    own = await victim.inbox.wait(from_(f"{room}/victim", type_="unavailable"))
    assert {"307", "110"} <= codes(own)
    assert item(own).get("role") == "none" and item(own).findtext(f"{{{NS_USER}}}reason") == "Be gone"
    assert item(own).find(f"{{{NS_USER}}}actor").get("nick") == "boss"
    for user in (owner, witness):
        seen = await user.inbox.wait(from_(f"{room}/victim", type_="unavailable"))
        assert codes(seen) == {"307"} and item(seen).get("role") == "none"
    # Kicked, not banned: one may come back.
    await victim.join(room, "victim")


async def test_ban_seen_by_everyone_and_enforced(server):
    owner, victim, witness = await new_user(server), await new_user(server), await new_user(server)
    room = await create_room(owner, nick="boss")
    await victim.join(room, "victim")
    await witness.join(room, "witness")
    result = await admin(owner, room, f"<item jid='{bare(victim)}' affiliation='outcast'><reason>Out</reason></item>")
    assert result.get("type") == "result"
    own = await victim.inbox.wait(from_(f"{room}/victim", type_="unavailable"))
    assert {"301", "110"} <= codes(own)
    assert item(own).get("affiliation") == "outcast" and item(own).get("role") == "none"
    for user in (owner, witness):
        seen = await user.inbox.wait(from_(f"{room}/victim", type_="unavailable"))
        assert codes(seen) == {"301"} and item(seen).get("affiliation") == "outcast"

    # Bad input: a banned user entering.
    refused = await victim.join(room, "again", expect_error=True)
    assert error_of(refused) == ("auth", "forbidden")
    await nothing_leaked(room, owner, [owner, witness], "again")
    outcasts = await owner.iq("get", room, f"<query xmlns='{NS_ADMIN}'><item affiliation='outcast'/></query>")
    assert [i.get("jid") for i in outcasts.iter(f"{{{NS_ADMIN}}}item")] == [bare(victim)]
    # Lifting the ban lets one in again.
    await admin(owner, room, f"<item jid='{bare(victim)}' affiliation='none'/>")
    await victim.join(room, "again")


async def test_privileges_of_kick_and_ban(server):
    owner, moderator, member, plain = [await new_user(server) for _ in range(4)]
    room = await create_room(owner, nick="boss")
    await admin(owner, room, f"<item jid='{bare(moderator)}' affiliation='admin'/>")
    await moderator.join(room, "admin")
    await member.join(room, "member")
    await plain.join(room, "plain")
    # A participant kicks nobody; an admin kicks no owner; an admin names no owner.
    assert error_of(await admin(plain, room, "<item nick='member' role='none'/>")) == ("auth", "forbidden")
    assert error_of(await admin(moderator, room, "<item nick='boss' role='none'/>")) == ("cancel", "not-allowed")
    assert error_of(await admin(moderator, room, f"<item jid='{bare(plain)}' affiliation='owner'/>")) == (
        "auth",
        "forbidden",
    )
    assert error_of(await admin(moderator, room, f"<item jid='{bare(owner)}' affiliation='outcast'/>")) == (
        "cancel",
        "not-allowed",
    )
    assert error_of(await admin(plain, room, f"<item jid='{bare(member)}' affiliation='member'/>")) == (
        "auth",
        "forbidden",
    )
    # The last owner cannot step down.
    assert error_of(await admin(owner, room, f"<item jid='{bare(owner)}' affiliation='member'/>")) == (
        "cancel",
        "conflict",
    )
    # Nothing of it changed anything: everybody is still there with the same affiliation.
    assert await occupant_count(owner, room) == "4"
    assert not plain.inbox.received(lambda s: s.tag == PRESENCE and s.get("type") == "unavailable")
    # An admin may kick a participant and grant membership.
    assert (await admin(moderator, room, f"<item jid='{bare(member)}' affiliation='member'/>")).get("type") == "result"
    change = await plain.inbox.wait(lambda s: from_(f"{room}/member")(s) and item(s).get("affiliation") == "member")
    assert item(change).get("role") == "participant"
    assert (await admin(moderator, room, "<item nick='plain' role='none'/>")).get("type") == "result"


async def test_voice_in_a_moderated_room(server):
    owner, visitor, witness = await new_user(server), await new_user(server), await new_user(server)
    room = await create_room(owner, nick="boss", moderatedroom="1")
    entered = await visitor.join(room, "visitor")
    assert item(entered).get("role") == "visitor"
    await witness.join(room, "witness")

    # Bad input: a visitor speaking in a moderated room.
    visitor.client.send_raw(f"<message type='groupchat' id='v1' to='{room}'><body>hear me</body></message>")
    refused = await visitor.inbox.wait(lambda s: s.get("id") == "v1")
    assert refused.get("type") == "error" and error_of(refused) == ("auth", "forbidden")
    sync = await owner.say(room, "sync")
    await witness.inbox.wait(lambda s: s.get("id") == sync.get("id"))
    assert not witness.inbox.received(lambda s: s.get("id") == "v1")

    assert (await admin(owner, room, "<item nick='visitor' role='participant'/>")).get("type") == "result"
    voiced = await witness.inbox.wait(lambda s: from_(f"{room}/visitor")(s) and item(s).get("role") == "participant")
    assert voiced.get("type") is None
    await visitor.say(room, "at last")
    await witness.inbox.wait(lambda s: s.tag == MESSAGE and s.get("from") == f"{room}/visitor")
    assert (await admin(owner, room, "<item nick='visitor' role='visitor'/>")).get("type") == "result"
    await witness.inbox.wait(lambda s: from_(f"{room}/visitor")(s) and item(s).get("role") == "visitor")


async def test_losing_membership_in_a_members_only_room(server):
    owner, member, witness = await new_user(server), await new_user(server), await new_user(server)
    room = await create_room(owner, nick="boss", membersonly="1")
    for user in (member, witness):
        await admin(owner, room, f"<item jid='{bare(user)}' affiliation='member'/>")
    await member.join(room, "member")
    await witness.join(room, "witness")
    await admin(owner, room, f"<item jid='{bare(member)}' affiliation='none'/>")
    own = await member.inbox.wait(from_(f"{room}/member", type_="unavailable"))
    assert {"321", "110"} <= codes(own)
    assert "321" in codes(await witness.inbox.wait(from_(f"{room}/member", type_="unavailable")))


async def test_room_becoming_members_only_removes_non_members(server):
    owner, guest = await new_user(server), await new_user(server)
    room = await create_room(owner, nick="boss", whois="moderators")
    await guest.join(room, "guest")
    await owner.configure(room, **{"muc#roomconfig_membersonly": "1", "muc#roomconfig_whois": "anyone"})
    assert "322" in codes(await guest.inbox.wait(from_(f"{room}/guest", type_="unavailable")))
    notice = await owner.inbox.wait(lambda s: s.tag == MESSAGE and s.get("from") == room and "104" in codes(s))
    assert "172" in codes(notice)  # now non-anonymous


async def test_destroy_with_alternate_venue(server):
    owner, user = await new_user(server), await new_user(server)
    room = await create_room(owner, nick="boss", persistentroom="1")
    await user.join(room, "user")
    refused = await user.iq("set", room, f"<query xmlns='{NS_OWNER}'><destroy/></query>")
    assert error_of(refused) == ("auth", "forbidden")
    destroy = (
        f"<query xmlns='{NS_OWNER}'><destroy jid='elsewhere@conference.localhost'>"
        "<reason>Moving</reason></destroy></query>"
    )
    assert (await owner.iq("set", room, destroy)).get("type") == "result"
    gone = await user.inbox.wait(from_(f"{room}/user", type_="unavailable"))
    assert item(gone).get("affiliation") == "none" and item(gone).get("role") == "none"
    venue = gone.find(f"{{{NS_USER}}}x/{{{NS_USER}}}destroy")
    assert venue.get("jid") == "elsewhere@conference.localhost" and venue.findtext(f"{{{NS_USER}}}reason") == "Moving"
    info = await user.iq("get", room, f"<query xmlns='{NS_DISCO_INFO}'/>")
    assert error_of(info) == ("cancel", "item-not-found")


# ------------------------------------------------------------------ bad input


async def test_members_only_room_refuses_non_members(server):
    owner, witness, stranger = await new_user(server), await new_user(server), await new_user(server)
    room = await create_room(owner, nick="boss", membersonly="1")
    await admin(owner, room, f"<item jid='{bare(witness)}' affiliation='member'/>")
    await witness.join(room, "witness")
    refused = await stranger.join(room, "stranger", expect_error=True)
    assert error_of(refused) == ("auth", "registration-required")
    await nothing_leaked(room, owner, [owner, witness], "stranger")
    assert await occupant_count(owner, room) == "2"


async def test_password_room(server):
    owner, witness, guest = await new_user(server), await new_user(server), await new_user(server)
    room = await create_room(owner, nick="boss", passwordprotectedroom="1", roomsecret="cauldron")
    await witness.join(room, "witness", password="cauldron")
    for password in (None, "wrong"):
        refused = await guest.join(room, "guest", password=password, expect_error=True)
        assert error_of(refused) == ("auth", "not-authorized")
    await nothing_leaked(room, owner, [owner, witness], "guest")
    assert await occupant_count(owner, room) == "2"
    await guest.join(room, "guest", password="cauldron")
    info = await guest.iq("get", room, f"<query xmlns='{NS_DISCO_INFO}'/>")
    assert "muc_passwordprotected" in {f.get("var") for f in info.iter(f"{{{NS_DISCO_INFO}}}feature")}


async def test_nickname_in_use_changes_nothing(server):
    owner, holder, rival = await new_user(server), await new_user(server), await new_user(server)
    room = await create_room(owner, nick="boss")
    await holder.join(room, "name")
    refused = await rival.join(room, "name", expect_error=True)
    assert error_of(refused) == ("cancel", "conflict")
    sync = await owner.say(room, "sync")
    await holder.inbox.wait(lambda s: s.get("id") == sync.get("id"))
    assert len(owner.inbox.received(from_(f"{room}/name"))) == 1  # the holder's own entry only
    assert await occupant_count(owner, room) == "2"
    assert not rival.inbox.received(lambda s: s.get("id") == sync.get("id"))


async def test_non_owner_cannot_configure(server):
    owner, other = await new_user(server), await new_user(server)
    room = await create_room(owner, nick="boss", roomname="Original")
    await other.join(room, "other")
    assert error_of(await other.iq("get", room, f"<query xmlns='{NS_OWNER}'/>")) == ("auth", "forbidden")
    refused = await other.configure(room, **{"muc#roomconfig_roomname": "Hijacked", "muc#roomconfig_membersonly": "1"})
    assert error_of(refused) == ("auth", "forbidden")
    info = await other.iq("get", room, f"<query xmlns='{NS_DISCO_INFO}'/>")
    assert info.find(f"{{{NS_DISCO_INFO}}}query/{{{NS_DISCO_INFO}}}identity").get("name") == "Original"
    assert "muc_open" in {f.get("var") for f in info.iter(f"{{{NS_DISCO_INFO}}}feature")}
    assert not owner.inbox.received(lambda s: s.tag == MESSAGE and "104" in codes(s))
    # Bad values from the owner: not-acceptable, nothing changed.
    refused = await owner.configure(room, **{"muc#roomconfig_whois": "everybody", "muc#roomconfig_roomname": "New"})
    assert error_of(refused) == ("modify", "not-acceptable")
    refused = await owner.configure(room, **{"muc#roomconfig_passwordprotectedroom": "1"})
    assert error_of(refused) == ("modify", "not-acceptable")


async def test_message_from_non_occupant(server):
    owner, witness, outsider = await new_user(server), await new_user(server), await new_user(server)
    room = await create_room(owner, nick="boss")
    await witness.join(room, "witness")
    outsider.client.send_raw(f"<message type='groupchat' id='x1' to='{room}'><body>let me in</body></message>")
    refused = await outsider.inbox.wait(lambda s: s.get("id") == "x1")
    assert error_of(refused) == ("modify", "not-acceptable")
    sync = await owner.say(room, "sync")
    await witness.inbox.wait(lambda s: s.get("id") == sync.get("id"))
    assert not witness.inbox.received(lambda s: s.get("id") == "x1")
    # Nor is it archived.
    archive = await owner.iq("set", room, "<query xmlns='urn:xmpp:mam:2'/>")
    assert archive.get("type") == "result"
    assert not owner.inbox.received(
        lambda s: s.find(".//{jabber:client}body") is not None and s.findtext(".//{jabber:client}body") == "let me in"
    )


async def test_unknown_room(server):
    user = await new_user(server)
    room = "nosuchroom@conference.localhost"
    assert error_of(await user.iq("get", room, f"<query xmlns='{NS_DISCO_INFO}'/>")) == ("cancel", "item-not-found")
    user.client.send_raw(f"<message type='groupchat' id='u1' to='{room}'><body>?</body></message>")
    assert error_of(await user.inbox.wait(lambda s: s.get("id") == "u1")) == ("cancel", "item-not-found")
