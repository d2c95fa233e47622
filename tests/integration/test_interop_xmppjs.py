"""Interop: xmpp.js (@xmpp/client on Node, a client library xmppd was not written against)
logs in over STARTTLS or direct TLS with SCRAM-SHA-1, chats with the bundled slixmpp
client, has its stanzas acked through XEP-0198 and resumes its stream after its TCP
connection is cut, getting the message sent to it meanwhile."""

import asyncio
import json
import os

import pytest

from tests.conftest import unique
from tests.support.foreign_clients import XMPPJS, xmppjs_modules
from tests.support.server import XmppdProcess
from xmppd.client import Client


@pytest.fixture(scope="module")
def xmppjs():
    return xmppjs_modules()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = XmppdProcess(tmp_path_factory.mktemp("xmppjs")).start()
    yield process
    process.stop()


class Peer:
    """The xmpp.js peer script as a subprocess whose JSON lines are read one by one."""

    def __init__(self, process):
        self.process = process

    async def next_event(self):
        line = await asyncio.wait_for(self.process.stdout.readline(), 60)
        assert line, (await self.process.stderr.read()).decode()
        return json.loads(line)


async def start_peer(modules, service, username, password, peer_jid):
    env = dict(os.environ, XMPPJS_MODULES=str(modules), NODE_TLS_REJECT_UNAUTHORIZED="0", NODE_NO_WARNINGS="1")
    process = await asyncio.create_subprocess_exec(
        "node",
        str(XMPPJS / "peer.mjs"),
        service,
        username,
        password,
        peer_jid,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return Peer(process)


@pytest.mark.parametrize("scheme", ["xmpp", "xmpps"])
async def test_xmppjs_chats_acks_and_resumes(server, xmppjs, scheme):
    foreign, native = unique("xmppjs"), unique("slix")
    foreign_jid = server.adduser(foreign, "pencil-1")
    native_jid = server.adduser(native, "pencil-2")
    client = Client(native_jid, "pencil-2", verify_tls=False)
    messages = asyncio.Queue()
    client.add_event_handler("message", messages.put_nowait)
    await client.login("127.0.0.1", server.port)
    client.send_presence()

    port = server.port if scheme == "xmpp" else server.tls_port
    peer = await start_peer(xmppjs, f"{scheme}://127.0.0.1:{port}", foreign, "pencil-1", native_jid)
    try:
        online = await peer.next_event()
        # xmpp.js logs in with SASL2 and Bind 2: its resource is the tag, '/' and a suffix (XEP-0386).
        assert online["event"] == "online" and online["jid"].startswith(foreign_jid + "/xmppjs/")
        assert online["sm"]["enabled"] and online["sm"]["id"]
        assert await peer.next_event() == {"event": "acked", "id": "xmppjs-1"}
        message = await asyncio.wait_for(messages.get(), 30)
        assert message["body"] == "hello from xmpp.js"
        assert str(message["from"]) == online["jid"]

        client.send_message(mto=online["jid"], mbody="hello from slixmpp", mtype="chat")
        received = await peer.next_event()
        assert received == {
            "event": "received",
            "body": "hello from slixmpp",
            "from": native_jid + "/" + client.boundjid.resource,
        }

        assert await peer.next_event() == {"event": "cut"}
        client.send_message(mto=online["jid"], mbody="while you were away", mtype="chat")
        # The message may be handled by xmpp.js before it reports the resumption.
        after_cut = {event["event"]: event for event in [await peer.next_event(), await peer.next_event()]}
        assert after_cut["resumed"] == {"event": "resumed", "jid": online["jid"]}
        assert after_cut["received"]["body"] == "while you were away"
        assert await asyncio.wait_for(peer.process.wait(), 30) == 0
    finally:
        if peer.process.returncode is None:
            peer.process.kill()
            await peer.process.wait()
        await client.logout()
