"""Interop: aioxmpp (a client library xmppd was not written against) logs in over
STARTTLS with SCRAM and chats with the bundled slixmpp client."""

import asyncio
import json
from pathlib import Path

import pytest

from tests.conftest import unique
from tests.support.foreign_clients import aioxmpp_python
from xmppd.client import Client

PEER_SCRIPT = Path(__file__).parent.parent / "support" / "aioxmpp_peer.py"


@pytest.fixture(scope="module")
def aioxmpp():
    return aioxmpp_python()


async def test_aioxmpp_chats_with_slixmpp(xmppd, aioxmpp):
    foreign, native = unique("aioxmpp"), unique("slix")
    foreign_jid = xmppd.adduser(foreign, "pencil-1")
    native_jid = xmppd.adduser(native, "pencil-2")
    client = Client(native_jid, "pencil-2", verify_tls=False)
    got_message = asyncio.get_running_loop().create_future()
    client.add_event_handler("message", lambda msg: got_message.done() or got_message.set_result(msg))
    await client.login("127.0.0.1", xmppd.port)
    client.send_presence()

    peer = await asyncio.create_subprocess_exec(
        str(aioxmpp),
        str(PEER_SCRIPT),
        foreign_jid,
        "pencil-1",
        str(xmppd.port),
        native_jid,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )

    async def next_event():
        line = await asyncio.wait_for(peer.stdout.readline(), 60)
        assert line, (await peer.stderr.read()).decode()
        return json.loads(line)

    online = await next_event()
    assert online["event"] == "online" and online["jid"].startswith(foreign_jid + "/")
    assert (await next_event())["event"] == "sent"
    message = await asyncio.wait_for(got_message, 30)
    assert message["body"] == "hello from aioxmpp"
    assert str(message["from"]) == online["jid"]
    client.send_message(mto=message["from"], mbody="hello from slixmpp", mtype="chat")
    assert await next_event() == {"event": "received", "body": "hello from slixmpp"}
    assert await asyncio.wait_for(peer.wait(), 30) == 0
    await client.logout()
