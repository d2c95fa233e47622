"""End to end: XEP-0114 external components on a real xmppd. A slixmpp ComponentXMPP
bot gets its domain's messages and answers them; raw component streams check the
handshake (wrong secret, unknown domain, a second connection), the 'from' check and the
stanza size limit; the domain is in the host's disco#items; and while the component is
gone an iq to it bounces."""

from __future__ import annotations

import asyncio
import hashlib
import re

import pytest
import slixmpp

from tests.support.inbox import message
from tests.support.raw import RawClient
from tests.support.server import XmppdProcess, free_port

DOMAIN = "gateway.localhost"
SECRET = "a-component-secret-of-some-length"
MAX_STANZA = 10000
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
STREAM_ERROR = r"<stream:error><{condition} xmlns=.urn:ietf:params:xml:ns:xmpp-streams./>"


def with_component(directory) -> XmppdProcess:
    port = free_port()
    process = XmppdProcess(
        directory,
        f"""
        [components]
        port = {port}
        max_stanza_bytes = {MAX_STANZA}
        [components.secrets]
        "{DOMAIN}" = "{SECRET}"
        """,
        server_section="graceful_shutdown_timeout = 2",
    )
    process.component_port = port
    return process.start()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = with_component(tmp_path_factory.mktemp("components"))
    yield process
    process.stop()


class EchoComponent(slixmpp.ComponentXMPP):
    """Answers every chat message to a JID of its domain from that JID."""

    def __init__(self, port: int, secret: str = SECRET):
        super().__init__(DOMAIN, secret, "127.0.0.1", port)
        self.started = asyncio.Event()
        self.add_event_handler("session_start", lambda _: self.started.set())
        self.add_event_handler("message", self.answer)

    def answer(self, msg):
        if msg["type"] == "chat":
            msg.reply(f"echo: {msg['body']}").send()


async def raw_component(server, domain: str = DOMAIN, secret: str = SECRET) -> RawClient:
    """A component stream for `domain` that sent its handshake for `secret`."""
    raw = RawClient(domain)
    await raw.connect(server.component_port)
    await raw.send(
        f"<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='{domain}'>"
    )
    header = (await raw.expect(r"<stream:stream [^>]*>")).group(0)
    assert "jabber:component:accept" in header
    stream_id = re.search(r"""\bid=['"]([^'"]+)""", header).group(1)
    await raw.send(f"<handshake>{hashlib.sha1((stream_id + secret).encode()).hexdigest()}</handshake>")
    return raw


async def test_component_receives_a_message_and_answers(server, connect):
    component = EchoComponent(server.component_port)
    component.connect()
    try:
        await asyncio.wait_for(component.started.wait(), 10)
        client, inbox = await connect()
        client.send_message(mto=f"bot@{DOMAIN}", mbody="hello", mtype="chat")
        answer = await inbox.wait(message(from_=f"bot@{DOMAIN}", body="echo: hello"))
        assert answer.get("to") == str(client.boundjid)
    finally:
        await component.disconnect()


async def test_wrong_secret_is_not_authorized(server):
    raw = await raw_component(server, secret="not-the-secret-at-all")
    closed = await raw.closed()
    assert re.search(STREAM_ERROR.format(condition="not-authorized"), closed), closed
    assert "<handshake/>" not in closed


@pytest.mark.parametrize(
    "namespace,domain,condition",
    [
        ("jabber:component:accept", "elsewhere.localhost", "host-unknown"),
        ("jabber:client", DOMAIN, "invalid-namespace"),  # XEP-0114 section 3
        ("jabber:component:accept", None, "improper-addressing"),
    ],
)
async def test_stream_header_errors(server, namespace, domain, condition):
    raw = RawClient(domain)
    await raw.connect(server.component_port)
    to = f" to='{domain}'" if domain else ""
    await raw.send(f"<stream:stream xmlns='{namespace}' xmlns:stream='http://etherx.jabber.org/streams'{to}>")
    closed = await raw.closed()
    assert re.search(r"<stream:stream [^>]*>" + STREAM_ERROR.format(condition=condition), closed), closed


async def test_second_connection_is_a_conflict_and_the_first_keeps_the_domain(server, connect):
    first = await raw_component(server)
    await first.expect("<handshake/>")
    second = await raw_component(server)
    closed = await second.closed()
    assert re.search(STREAM_ERROR.format(condition="conflict"), closed), closed
    client, _ = await connect()
    client.send_message(mto=f"someone@{DOMAIN}", mbody="still you", mtype="chat")
    await first.expect(r"<message [^>]*to=.someone@gateway\.localhost.*?still you</body></message>")
    await first.send("</stream:stream>")
    await first.closed()


async def test_spoofed_from_is_invalid_from(server, connect):
    client, inbox = await connect()
    raw = await raw_component(server)
    await raw.expect("<handshake/>")
    await raw.send(f"<message from='admin@localhost' to='{client.boundjid}' type='chat'><body>spoof</body></message>")
    closed = await raw.closed()
    assert re.search(STREAM_ERROR.format(condition="invalid-from"), closed), closed
    client.send_message(mto=str(client.boundjid), mbody="sync", mtype="chat")  # everything before it arrived
    await inbox.wait(message(body="sync"))
    assert not inbox.received(message(body="spoof"))


async def test_stanza_without_to_is_improper_addressing(server):
    raw = await raw_component(server)
    await raw.expect("<handshake/>")
    await raw.send(f"<message from='bot@{DOMAIN}'><body>to whom?</body></message>")
    closed = await raw.closed()
    assert re.search(STREAM_ERROR.format(condition="improper-addressing"), closed), closed


@pytest.mark.parametrize(
    "data,condition",
    [
        (
            f"<message from='bot@{DOMAIN}' to='nobody@localhost'><body>{'x' * MAX_STANZA}</body></message>",
            "policy-violation",
        ),
        ("<!-- a comment -->", "restricted-xml"),  # RFC 6120 11.1
        (f"<message from='bot@{DOMAIN}' to='nobody@localhost'><body></message>", "not-well-formed"),
    ],
)
async def test_bad_input_closes_the_stream_as_on_a_client_stream(server, data, condition):
    raw = await raw_component(server)
    await raw.expect("<handshake/>")
    await raw.send(data)
    closed = await raw.closed()
    assert re.search(f"<stream:error><{condition} ", closed), closed


async def test_disco_items_of_the_host_list_the_component(server, connect):
    client, _ = await connect()
    items = await client.plugin["xep_0030"].get_items("localhost")
    assert DOMAIN in {item[0] for item in items["disco_items"]["items"]}


async def test_iq_to_a_component_that_is_gone_bounces(server, connect):
    raw = await raw_component(server)
    await raw.expect("<handshake/>")
    disconnections = server.log.count(f"event=component-disconnected domain={DOMAIN}")
    await raw.send("</stream:stream>")
    await raw.closed()
    await server.wait_for_log(f"event=component-disconnected domain={DOMAIN}", count=disconnections + 1)
    client, _ = await connect()
    with pytest.raises(slixmpp.exceptions.IqError) as caught:
        await client.plugin["xep_0030"].get_info(DOMAIN)
    assert caught.value.condition == "service-unavailable"
    assert caught.value.etype == "wait"


async def test_shutdown_closes_the_component_stream(tmp_path):
    process = with_component(tmp_path)
    try:
        raw = await raw_component(process)
        await raw.expect("<handshake/>")
        stopping = asyncio.get_running_loop().run_in_executor(None, process.stop)
        closed = await raw.closed()
        assert re.search(STREAM_ERROR.format(condition="system-shutdown") + ".*</stream:stream>", closed), closed
        assert await stopping == 0
    finally:
        process.stop()
