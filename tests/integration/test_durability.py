"""Durability (DESIGN.md, "no stanza is lost in silence"): a message for an offline user
is committed to storage before the XEP-0198 ack that covers it reaches the sender, so a
SIGKILL right after the ack loses nothing."""
from tests.conftest import unique
from tests.support.accounts import create_accounts
from tests.support.inbox import message, online
from tests.support.raw import RawClient
from tests.support.smacks import NS_SM, attribute, drop, enable, managed_login, ping, send_message


async def test_acked_message_to_offline_user_survives_sigkill(make_xmppd):
    server = make_xmppd().start()
    alice, bob = create_accounts(server, [unique("durable"), unique("durable")])
    sender = RawClient(server.domain)
    await sender.login(server.port, alice.split("@")[0], "secret")
    await enable(sender, resume=False)
    await send_message(sender, bob, "written before the ack", "m1")
    await sender.send(f"<r xmlns='{NS_SM}'/>")
    ack = await sender.expect(r"<a ([^>]*)/>")
    assert attribute(ack.group(1), "h") == "1"                 # the server took the message over

    server.kill()                                              # SIGKILL: no shutdown, no flush
    await sender.close()
    server.start()

    receiver, inbox = await online(server, bob, roster=False)
    delivered = await inbox.wait(message(body="written before the ack"))
    assert delivered.get("id") == "m1"
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
    drop(phone)                                                # never acknowledged
    await ping(sender, "routed")
    await sender.close()
    server.stop()
    server.start()

    receiver, inbox = await online(server, alice, "tablet", roster=False)
    delivered = await inbox.wait(message(body="do not lose me"))
    assert delivered.get("id") == "m2"
    await receiver.logout()
