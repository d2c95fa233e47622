"""Durability (DESIGN.md, "no stanza is lost in silence"): a message for an offline user
is committed to storage before the XEP-0198 ack that covers it reaches the sender, so a
SIGKILL right after the ack loses nothing."""

from tests.conftest import unique
from tests.support.accounts import create_accounts
from tests.support.inbox import message, online
from tests.support.raw import RawClient
from tests.support.smacks import NS_SM, attribute, coming_online, drop, enable, managed_login, ping, send_message


async def test_acked_message_to_offline_user_survives_sigkill(make_xmppd):
    server = make_xmppd().start()
    alice, bob = create_accounts(server, [unique("durable"), unique("durable")])
    sender = RawClient(server.domain)
    await sender.login(server.port, alice.split("@")[0], "secret")
    await enable(sender, resume=False)
    await send_message(sender, bob, "written before the ack", "m1")
    await sender.send(f"<r xmlns='{NS_SM}'/>")
    ack = await sender.expect(r"<a ([^>]*)/>")
    assert attribute(ack.group(1), "h") == "1"  # the server took the message over

    server.kill()  # SIGKILL: no shutdown, no flush
    await sender.close()
    server.start()

    receiver, inbox = await online(server, bob, roster=False)
    delivered = await inbox.wait(message(body="written before the ack"))
    assert delivered.get("id") == "m1"
    await receiver.logout()


async def test_a_burst_of_acked_messages_survives_sigkill_in_order(make_xmppd):
    """The messages of one burst share commits (the next one is routed while the last
    one commits): the ack still covers only committed ones."""
    server = make_xmppd("[extensions.offline]\nmax_messages_per_stranger = 1000\n").start()
    alice, bob = create_accounts(server, [unique("durable"), unique("durable")])
    sender = RawClient(server.domain)
    await sender.login(server.port, alice.split("@")[0], "secret")
    await enable(sender, resume=False)
    burst = 200
    await sender.send(
        "".join(f"<message to='{bob}' type='chat' id='b{n}'><body>burst {n}</body></message>" for n in range(burst))
        + f"<r xmlns='{NS_SM}'/>"
    )
    ack = await sender.expect(r"<a ([^>]*)/>")
    assert attribute(ack.group(1), "h") == str(burst)

    server.kill()
    await sender.close()
    server.start()

    receiver, inbox = await online(server, bob, roster=False)
    for n in range(burst):
        delivered = await inbox.wait(message(body=f"burst {n}"))
        assert delivered.get("id") == f"b{n}"
    assert [m.findtext("{jabber:client}body") for m in inbox.stanzas if m.tag.endswith("message")] == [
        f"burst {n}" for n in range(burst)
    ]
    await receiver.logout()


async def test_unacknowledged_message_of_a_hibernating_session_survives_a_restart(make_xmppd):
    """A clean shutdown ends the hibernating sessions: their unacknowledged messages are
    stored offline before the storage closes."""
    server = make_xmppd().start()
    alice, bob = create_accounts(server, [unique("durable"), unique("durable")])
    phone, _ = await managed_login(server, alice.split("@")[0], "phone")
    sender = RawClient(server.domain)
    await sender.login(server.port, bob.split("@")[0], "secret")
    await send_message(sender, alice, "do not lose me", "m2")
    await phone.expect(r"<body>do not lose me</body>")
    drop(phone)  # never acknowledged
    await ping(sender, "routed")
    await sender.close()
    server.stop()
    server.start()

    receiver, inbox = await online(server, alice, "tablet", roster=False)
    delivered = await inbox.wait(message(body="do not lose me"))
    assert delivered.get("id") == "m2"
    await receiver.logout()


async def test_acked_message_to_a_hibernating_session_survives_sigkill(make_xmppd):
    """A message for a resource that hibernates (XEP-0198) is stored offline, not held in
    memory, before the sender's ack: a SIGKILL while the phone sleeps loses nothing."""
    server = make_xmppd().start()
    alice, bob = create_accounts(server, [unique("durable"), unique("durable")])
    phone, _ = await managed_login(server, alice.split("@")[0], "phone")
    drop(phone)
    await server.wait_for_log(f"event=hibernating jid={alice}/phone")
    sender = RawClient(server.domain)
    await sender.login(server.port, bob.split("@")[0], "secret")
    await enable(sender, resume=False)
    for n, to in enumerate((alice, f"{alice}/phone")):  # to the account and to the phone
        await send_message(sender, to, f"while asleep {n}", f"s{n}")
    await sender.send(f"<r xmlns='{NS_SM}'/>")
    ack = await sender.expect(r"<a ([^>]*)/>")
    assert attribute(ack.group(1), "h") == "2"

    server.kill()
    await sender.close()
    server.start()

    receiver, inbox = await online(server, alice, "tablet", roster=False)
    for n in range(2):
        delivered = await inbox.wait(message(body=f"while asleep {n}"))
        assert delivered.get("id") == f"s{n}"
    await receiver.logout()


async def test_messages_unacknowledged_when_the_connection_dropped_survive_sigkill(make_xmppd):
    """Issue 12: what a lost connection left unacknowledged is stored (the resource's
    backlog) as soon as the session hibernates, not only when it ends: a SIGKILL then
    loses none of it. (The connected desktop makes it the phone's backlog's, not
    offline storage's.)"""
    server = make_xmppd().start()
    alice, bob = create_accounts(server, [unique("durable"), unique("durable")])
    desktop = RawClient(server.domain)
    await desktop.login(server.port, alice.split("@")[0], "secret", resource="desktop")
    await desktop.send("<presence priority='-1'/>")  # takes no messages to the account
    phone, _ = await managed_login(server, alice.split("@")[0], "phone")
    sender = RawClient(server.domain)
    await sender.login(server.port, bob.split("@")[0], "secret")
    for n in range(3):
        await send_message(sender, alice, f"in flight {n}", f"f{n}")
    for n in range(3):
        await phone.expect(rf"<body>in flight {n}</body>")  # read, never acknowledged
    drop(phone)
    await server.wait_for_log(f"event=unacked-kept jid={alice}/phone messages=3")  # committed
    server.kill()
    await sender.close()
    server.start()

    receiver, inbox = await online(server, alice, "tablet", roster=False)
    for n in range(3):
        delivered = await inbox.wait(message(body=f"in flight {n}"))
        assert delivered.get("id") == f"f{n}" and delivered.find("{urn:xmpp:delay}delay") is not None
    await receiver.logout()


async def test_acked_groupchat_messages_are_in_the_room_archive_after_sigkill(make_xmppd):
    """A room's archive is written in the background, the fan-out does not wait for it,
    but the sender's ack does: every groupchat message covered by 'h' is in the room's
    archive after a SIGKILL right after the ack, once, in order."""
    server = make_xmppd("[extensions.muc]\ndefault_persistent = true\n").start()
    speaker, reader_user = create_accounts(server, [unique("speaker"), unique("reader")])
    room = f"{unique('durable-room')}@conference.{server.domain}"
    sender, _ = await managed_login(server, speaker.split("@")[0], "phone", presence=False)
    await sender.send(f"<presence to='{room}/speaker'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
    await sender.expect(r"<message[^>]*><subject")  # entered (created): the subject ends it
    await sender.send(
        f"<iq type='set' id='instant' to='{room}'><query xmlns='http://jabber.org/protocol/muc#owner'>"
        "<x xmlns='jabber:x:data' type='submit'/></query></iq>"
    )
    await sender.expect(r"<iq[^>]*id=.instant.[^>]*type=.result.|<iq[^>]*type=.result.[^>]*id=.instant.")
    burst = 120
    await sender.send(
        "".join(
            f"<message to='{room}' type='groupchat' id='g{n}'><body>said {n}</body></message>" for n in range(burst)
        )
        + f"<r xmlns='{NS_SM}'/>"
    )
    while attribute((await sender.expect(r"<a ([^>]*)/>")).group(1), "h") != str(burst + 2):  # + presence, iq
        await sender.send(f"<r xmlns='{NS_SM}'/>")

    server.kill()
    await sender.close()
    server.start()

    reader, _ = await coming_online(server, reader_user.split("@")[0], "desk")
    await reader.request(
        f"<iq type='set' id='history' to='{room}'><query xmlns='urn:xmpp:mam:2' queryid='q'>"
        "<set xmlns='http://jabber.org/protocol/rsm'><max>250</max></set></query></iq>",
        "history",
    )
    assert reader.archived_ids == [f"g{n}" for n in range(burst)]
    await reader.client.close()
