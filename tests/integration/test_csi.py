"""XEP-0352 Client State Indication end to end over raw sockets: while inactive, presence
and chat states are held (the newest presence of each contact resource kept) and flushed,
in order, before an urgent message or on <active/>.

Synchronisation without sleeps: the sender pings the server after its stanzas (so they
have been routed to the inactive client's session), then the inactive client asks for a
XEP-0198 ack: the <a/> is written past the CSI filter, so anything not held would have
been written before it.
"""

import re

import pytest

from tests.conftest import AccountPool
from tests.support.raw import RawClient
from tests.support.server import XmppdProcess
from tests.support.smacks import NS_SM, authenticated, enable, ping, send_message

NS_CSI = "urn:xmpp:csi:0"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = XmppdProcess(
        tmp_path_factory.mktemp("csi"), "[extensions.csi]\nmax_held = 5\n", c2s_section="auth_failure_delay = 0"
    ).start()
    process.accounts = AccountPool(process)
    yield process
    process.stop()


async def pair(server):
    """An inactive, available client with stream management, and a contact to send it stanzas."""
    alice, bob = server.accounts.local(), server.accounts.local()
    inactive = RawClient(server.domain)
    await inactive.login(server.port, alice, "secret", resource="phone")
    await enable(inactive, resume=False)
    await inactive.send("<presence/>")
    await inactive.expect(r"<presence[^>]*/>")
    await inactive.send(f"<inactive xmlns='{NS_CSI}'/>")
    contact = RawClient(server.domain)
    await contact.login(server.port, bob, "secret", resource="pc")
    return inactive, contact, f"{alice}@{server.domain}/phone"


async def written_so_far(client: RawClient) -> str:
    """Everything the server wrote to `client` before it answered an <r/>."""
    await client.send(f"<r xmlns='{NS_SM}'/>")
    match = await client.expect(r"<a [^>]*/>")
    return match.string[: match.start()]


def presence(to, status):
    return f"<presence to='{to}'><show>away</show><status>{status}</status></presence>"


def chat_state(to, state):
    return f"<message to='{to}' type='chat'><{state} xmlns='http://jabber.org/protocol/chatstates'/></message>"


async def test_feature_offered_after_authentication(server):
    client, features = await authenticated(server, server.accounts.local())
    assert re.search(rf"<csi xmlns=[\"']{NS_CSI}[\"']/>", features)
    await client.close()


async def test_presence_and_chat_states_held_until_a_message_flushes_them(server):
    inactive, contact, to = await pair(server)
    await contact.send(presence(to, "first status") + presence(to, "newest status") + chat_state(to, "composing"))
    await ping(contact, "routed")
    assert "<presence" not in await written_so_far(inactive)
    assert "composing" not in inactive.buffer

    await send_message(contact, to, "wake up")
    flushed = await inactive.expect(r"<body>wake up</body>")
    before = flushed.string[: flushed.end()]
    assert "first status" not in before  # replaced by the newer presence
    assert before.index("newest status") < before.index("composing") < before.index("wake up")
    await inactive.close()
    await contact.close()


async def test_active_flushes_what_was_held(server):
    inactive, contact, to = await pair(server)
    await contact.send(chat_state(to, "composing") + chat_state(to, "paused"))
    await ping(contact, "routed")
    assert "chatstates" not in await written_so_far(inactive)
    await inactive.send(f"<active xmlns='{NS_CSI}'/>")
    flushed = await written_so_far(inactive)
    assert "paused" in flushed and "composing" not in flushed  # the newest chat state only
    # Active again: nothing is held any more.
    await contact.send(presence(to, "live"))
    await ping(contact, "routed-again")
    assert "live" in await written_so_far(inactive)
    await inactive.close()
    await contact.close()


async def test_iq_is_urgent(server):
    inactive, contact, to = await pair(server)
    await contact.send(presence(to, "before the ping"))
    await ping(contact, "routed")
    before = await ping(inactive, "mine")  # the pong is urgent: the presence comes first
    assert "before the ping" in before
    await inactive.close()
    await contact.close()


async def test_too_many_held_stanzas_are_flushed(server):
    inactive, contact, to = await pair(server)
    for index in range(6):  # max_held = 5, and none replaces another
        await contact.send(
            f"<message to='{to}' type='headline'><subject-less xmlns='urn:example'>{index}</subject-less></message>"
        )
    await ping(contact, "routed")
    flushed = await written_so_far(inactive)
    assert all(f">{index}<" in flushed for index in range(6))
    await inactive.close()
    await contact.close()
