"""Durability (DESIGN.md, "no stanza is lost in silence"): a message for an offline user
is committed to storage before the XEP-0198 ack that covers it reaches the sender, so a
SIGKILL right after the ack loses nothing."""
from tests.conftest import unique
from tests.support.accounts import create_accounts
from tests.support.inbox import message, online
from tests.support.raw import RawClient
from tests.support.smacks import NS_SM, attribute, enable, send_message


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
