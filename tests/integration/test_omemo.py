"""End to end: OMEMO (XEP-0384) through xmppd, which only stores and serves device lists
and bundles over PEP and carries the encrypted messages untouched. Two instances of the
bundled client (slixmpp-omemo, both OMEMO versions), the example echo bot, and a legacy
OMEMO client on python-axolotl (libsignal's line, as in Conversations) in both directions."""

import asyncio
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from lxml import etree

from tests.support.inbox import MESSAGE, Inbox
from tests.support.pep import NS_PUBSUB
from tests.support.server import XmppdProcess
from xmppd.client import Client

LEGACY = "eu.siacs.conversations.axolotl"
OMEMO2 = "urn:xmpp:omemo:2"
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 30


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = XmppdProcess(tmp_path_factory.mktemp("omemo")).start()
    yield process
    process.stop()


@pytest.fixture
async def omemo_client(server, tmp_path):
    """Logged-in bundled clients with OMEMO on, each with a queue of decrypted messages."""
    opened = []

    async def start(jid, keys_name=None):
        client = Client(jid, "secret", verify_tls=False)
        client.enable_omemo(tmp_path / f"{keys_name or jid}.json")
        client.decrypted = asyncio.Queue()
        client.add_event_handler("omemo_message", client.decrypted.put_nowait)
        client.inbox = Inbox(client)
        await client.login("127.0.0.1", server.port)
        client.send_presence()
        await client.omemo_ready()
        opened.append(client)
        return client

    yield start
    for client in opened:
        if client.is_connected():
            await client.logout()


def canonical(element) -> tuple:
    """An element's names, attributes and text, whatever its prefixes (C14N refuses the
    relative namespace of legacy OMEMO)."""
    return (element.tag, sorted(element.attrib.items()), (element.text or "").strip(), [canonical(c) for c in element])


async def next_message(client) -> tuple:
    return await asyncio.wait_for(client.decrypted.get(), TIMEOUT)


async def pubsub_get(client, owner: str, node: str) -> list:
    """The items of `node` at `owner`'s PEP service, fetched as `client`."""
    answer = await client.plugin["xep_0060"].get_items(owner, node)
    return [item for item in answer.xml.iter(f"{{{NS_PUBSUB}}}item")]


async def device_id(client) -> int:
    session_manager = await client.plugin["xep_0384"].get_session_manager()
    return (await session_manager.get_own_device_information())[0].device_id


async def test_device_lists_and_bundles_are_served_to_a_non_contact(users, omemo_client):
    alice, bob = users(2)
    a = await omemo_client(alice)
    b = await omemo_client(bob)
    device = await device_id(b)
    for node, list_tag in (
        (f"{LEGACY}.devicelist", f"{{{LEGACY}}}device"),
        (f"{OMEMO2}:devices", f"{{{OMEMO2}}}device"),
    ):
        items = await pubsub_get(a, bob, node)
        assert [int(d.get("id")) for d in items[0].iter(list_tag)] == [device], node
    legacy_bundle = await pubsub_get(a, bob, f"{LEGACY}.bundles:{device}")
    assert legacy_bundle[0].find(f"{{{LEGACY}}}bundle/{{{LEGACY}}}identityKey") is not None
    bundle = await pubsub_get(a, bob, f"{OMEMO2}:bundles")
    assert str(device) in [item.get("id") for item in bundle]
    # The nodes are open (so a first message can be encrypted) and configured as asked.
    info = await a.plugin["xep_0030"].get_info(jid=bob, node=f"{LEGACY}.bundles:{device}")
    assert "open" in str(info)

    await a.send_encrypted(bob, "hello, stranger")
    message, sender = await next_message(b)
    assert message["body"] == "hello, stranger" and sender.bare_jid == alice
    raw = await b.inbox.wait(lambda s: s.tag == MESSAGE and s.find(f"{{{LEGACY}}}encrypted") is not None)
    assert raw.find(f"{{{LEGACY}}}encrypted/{{{LEGACY}}}payload") is not None
    assert "hello, stranger" not in str(raw.findtext("{jabber:client}body"))


async def test_an_encrypted_message_waits_offline_untouched(users, omemo_client):
    alice, bob = users(2)
    a = await omemo_client(alice)
    b = await omemo_client(bob)
    await b.logout()
    sent = []
    a.add_filter("out", lambda stanza: sent.append(ET.tostring(stanza.xml)) or stanza)
    await a.send_encrypted(bob, "while you were away")
    await a.plugin["xep_0199"].send_ping(a.boundjid.domain, timeout=10)  # stored before bob comes back
    b = await omemo_client(bob)  # same key file: same device
    message, sender = await next_message(b)
    assert message["body"] == "while you were away" and sender.bare_jid == alice
    raw = await b.inbox.wait(lambda s: s.tag == MESSAGE and s.find(f"{{{LEGACY}}}encrypted") is not None)
    assert raw.find("{urn:xmpp:delay}delay") is not None
    original = next(etree.fromstring(x) for x in sent if b"encrypted" in x).find(f"{{{LEGACY}}}encrypted")
    assert canonical(raw.find(f"{{{LEGACY}}}encrypted")) == canonical(original)


async def test_echo_bot_answers_encrypted(server, users, omemo_client, tmp_path):
    alice, bot = users(2)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "xmppd.client.echo",
            "--jid",
            bot,
            "--host",
            "127.0.0.1",
            "--port",
            str(server.port),
            "--no-verify-tls",
            "--keys",
            str(tmp_path / "bot.json"),
        ],
        env={**os.environ, "XMPPD_BOT_PASSWORD": "secret"},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output = []
        for line in process.stdout:  # the bot says when its keys are published
            output.append(line)
            if "online" in line:
                break
        else:
            pytest.fail("the echo bot did not come online:\n" + "".join(output))
        a = await omemo_client(alice)
        await a.send_encrypted(bot, "echo this")
        message, sender = await next_message(a)
        assert message["body"] == "echo this" and sender.bare_jid == bot
        assert (tmp_path / "bot.json").stat().st_mode & 0o077 == 0
    finally:
        process.terminate()
        process.wait(10)


class AxolotlPeer:
    """tests/support/axolotl_peer.py in its own process (pure-Python protobuf)."""

    def __init__(self, process):
        self.process = process

    @classmethod
    async def start(cls, server, jid):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.support.axolotl_peer",
            jid,
            "secret",
            str(server.port),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"},
        )
        peer = cls(process)
        online = await peer.event()
        assert online["event"] == "online", online
        peer.device = online["device"]
        return peer

    async def event(self) -> dict:
        line = await asyncio.wait_for(self.process.stdout.readline(), TIMEOUT)
        assert line, "the axolotl peer ended"
        event = json.loads(line)
        assert event["event"] != "error", event
        return event

    async def send(self, to: str, body: str) -> None:
        self.process.stdin.write((json.dumps({"to": to, "body": body}) + "\n").encode())
        await self.process.stdin.drain()
        assert (await self.event())["event"] == "sent"

    async def stop(self) -> None:
        self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()


@pytest.fixture
async def axolotl_peer(server):
    peers = []

    async def start(jid):
        peers.append(await AxolotlPeer.start(server, jid))
        return peers[-1]

    yield start
    for peer in peers:
        await peer.stop()


async def test_legacy_omemo_from_python_axolotl_to_the_bundled_client_and_back(users, omemo_client, axolotl_peer):
    alice, bob = users(2)
    peer = await axolotl_peer(bob)
    a = await omemo_client(alice)
    await peer.send(alice, "hello from libsignal's line")
    message, sender = await next_message(a)
    assert message["body"] == "hello from libsignal's line" and sender.device_id == peer.device
    await a.send_encrypted(bob, "and back")
    received = await peer.event()
    assert received["body"] == "and back" and received["from"].startswith(alice)


async def test_legacy_omemo_from_the_bundled_client_to_python_axolotl_and_back(users, omemo_client, axolotl_peer):
    alice, bob = users(2)
    a = await omemo_client(alice)
    peer = await axolotl_peer(bob)
    await a.send_encrypted(bob, "first contact")
    received = await peer.event()
    assert received == {"event": "received", "body": "first contact", "prekey": True, "from": str(a.boundjid)}
    await peer.send(alice, "reply in the session")
    message, sender = await next_message(a)
    assert message["body"] == "reply in the session" and sender.device_id == peer.device
    devices = await pubsub_get(a, bob, f"{LEGACY}.devicelist")
    assert [int(d.get("id")) for d in devices[0].iter(f"{{{LEGACY}}}device")] == [peer.device]
