"""XMPP over WebSocket (RFC 7395) and its discovery (XEP-0156), end to end.

A raw WebSocket client (aiohttp's, tests/support/websocket.py) logs in with SCRAM over
the <open/>/<close/> framing, chats with a slixmpp TCP client both ways and resumes its
XEP-0198 session after its WebSocket dropped; bad input gets the stream errors of RFC
6120 framed as RFC 7395 says (<open/>, the error, <close/>, then the WebSocket closes);
the handshake is refused for a foreign Origin, without the `xmpp` subprotocol, and over
plain HTTP unless loopback peers may go without TLS; an unauthenticated WebSocket is
closed after [c2s] unauthenticated_timeout; login throttles and the admission per
address hold; one that reads nothing is held back and let go as a TCP one is; a binary message closes the WebSocket (1003); a shutdown sends
system-shutdown; host-meta (XML and JSON) points at the endpoint, with CORS for any page.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket

import aiohttp
import pytest
from lxml import etree

from tests.conftest import AccountPool, unique
from tests.support.accounts import create_accounts
from tests.support.inbox import MESSAGE, online
from tests.support.raw import RawClient, client_context
from tests.support.server import XmppdProcess
from tests.support.smacks import NS_SM, attribute
from tests.support.websocket import NS_FRAMING, WebSocketClient, url

TIMEOUT = 10.0
MAX_STANZA_BYTES = 10000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = XmppdProcess(
        tmp_path_factory.mktemp("websocket"),
        c2s_section=f"auth_failure_delay = 0\nmax_stanza_bytes = {MAX_STANZA_BYTES}",
    ).start()
    process.accounts = AccountPool(process)
    yield process
    process.stop()


async def logged_in(server, user: str | None = None, resource: str = "web") -> WebSocketClient:
    client = WebSocketClient(server.domain)
    return await client.login_to(url(server), user or server.accounts.local(), "secret", resource=resource)


async def opened(server) -> WebSocketClient:
    client = await WebSocketClient(server.domain).connect_to(url(server))
    await client.open_stream()
    return client


async def stream_error(client: WebSocketClient) -> str:
    """The condition of the stream error the server sends, once it has sent <close/> and
    closed the WebSocket."""
    received = await client.closed()
    error = re.search(r"<stream:error [^>]*><([a-z-]+) ", received)
    assert error, received
    assert client.messages[-1] == f'<close xmlns="{NS_FRAMING}"/>', client.messages
    assert client.socket.closed
    await client.session.close()
    return error.group(1)


def parsed(messages: list[str]) -> list[etree._Element]:
    """Each message alone, as RFC 7395 wants it parsable (all its namespaces declared)."""
    return [etree.fromstring(message.encode()) for message in messages]


async def test_login_with_scram_and_chat_with_a_tcp_client_both_ways(server):
    web_user, tcp_user = server.accounts.take(2)
    web = await WebSocketClient(server.domain).login_to(url(server), web_user.split("@")[0], "secret")
    tcp, inbox = await online(server, tcp_user)
    try:
        assert web.jid == f"{web_user}/web"
        await web.send("<presence xmlns='jabber:client'/>")
        await web.send(
            f"<message xmlns='jabber:client' to='{tcp_user}' type='chat' id='w1'><body>from the web</body></message>"
        )
        received = await inbox.wait(lambda s: s.tag == MESSAGE and s.get("id") == "w1")
        assert received.findtext("{jabber:client}body") == "from the web"
        assert received.get("from") == web.jid

        tcp.send_message(mto=web.jid, mbody="from tcp", mtype="chat")
        await web.expect(r"<message [^>]*>.*?<body>from tcp</body>.*?</message>")
        elements = parsed(web.messages)
        assert [e.tag for e in elements][:2] == [f"{{{NS_FRAMING}}}open", "{http://etherx.jabber.org/streams}features"]
        message = next(e for e in elements if e.tag == MESSAGE)
        assert message.get("from") == str(tcp.boundjid) and message.findtext("{jabber:client}body") == "from tcp"

        await web.send(f"<close xmlns='{NS_FRAMING}'/>")
        await web.closed()
        assert web.messages[-1] == f'<close xmlns="{NS_FRAMING}"/>'
    finally:
        tcp.disconnect()
        await web.close()


async def test_resumption_across_a_dropped_websocket(server):
    web_user, tcp_user = server.accounts.take(2)
    web_local = web_user.split("@")[0]
    web = await WebSocketClient(server.domain).login_to(url(server), web_local, "secret", resource="phone")
    await web.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
    sm_id = attribute((await web.expect(r"<enabled ([^>]*)/>")).group(1), "id")
    await web.send("<presence xmlns='jabber:client'/>")
    await web.expect(r"<presence[^>]*(/>|>.*?</presence>)")  # h = 1: the echo
    web.drop()
    await server.wait_for_log(f"event=connection-lost jid={web_user}/phone")
    tcp, _ = await online(server, tcp_user)
    again = WebSocketClient(server.domain)
    try:
        tcp.send_message(mto=f"{web_user}/phone", mbody="while you were away", mtype="chat")
        await again.connect_to(url(server))
        await again.open_stream()
        await again.authenticate(web_local, "secret", "SCRAM-SHA-256")
        await again.open_stream()
        await again.send(f"<resume xmlns='{NS_SM}' previd='{sm_id}' h='1'/>")
        await again.expect(r"<resumed [^>]*/>")
        await again.expect(r"<message [^>]*>.*?<body>while you were away</body>")
        await again.send("<iq xmlns='jabber:client' type='get' id='ping'><ping xmlns='urn:xmpp:ping'/></iq>")
        await again.expect(r"<iq [^>]*id=\"ping\"")
    finally:
        tcp.disconnect()
        await web.session.close()
        await again.close()


async def test_two_elements_in_one_message_are_not_well_formed(server):
    client = await opened(server)
    await client.send("<iq xmlns='jabber:client' type='get' id='1'/><iq xmlns='jabber:client' type='get' id='2'/>")
    assert await stream_error(client) == "not-well-formed"


async def test_half_an_element_in_a_message_is_not_well_formed(server):
    client = await logged_in(server)
    await client.send("<message xmlns='jabber:client' to='nobody@localhost'><body>")
    assert await stream_error(client) == "not-well-formed"


async def test_a_stanza_over_the_size_limit_is_a_policy_violation(server):
    client = await logged_in(server)
    body = "x" * MAX_STANZA_BYTES
    await client.send(f"<message xmlns='jabber:client' to='nobody@localhost'><body>{body}</body></message>")
    assert await stream_error(client) == "policy-violation"


@pytest.mark.parametrize(
    "first, condition",
    [
        (f"<open xmlns='{NS_FRAMING}' to='elsewhere.example' version='1.0'/>", "host-unknown"),
        (f"<open xmlns='{NS_FRAMING}' to='localhost' version='2.0'/>", "unsupported-version"),
        ("<open xmlns='jabber:client' to='localhost' version='1.0'/>", "invalid-namespace"),
        (
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' "
            "version='1.0'>",
            "bad-format",
        ),
    ],
)
async def test_a_bad_open_gets_open_then_the_stream_error(server, first, condition):
    client = await WebSocketClient(server.domain).connect_to(url(server))
    await client.send(first)
    assert await stream_error(client) == condition
    assert client.messages[0].startswith(f'<open xmlns="{NS_FRAMING}" from='), client.messages


@pytest.mark.parametrize("binding", ["tls-exporter", "tls-server-end-point"])
async def test_scram_plus_binds_to_the_https_connection(server, binding):
    """Over wss:// the -PLUS mechanisms are offered: their channel binding is the TLS of
    the WebSocket's HTTPS connection, and it checks out."""
    client = await opened(server)
    try:
        assert "<mechanism>SCRAM-SHA-256-PLUS</mechanism>" in client.messages[1]
        await client.authenticate(server.accounts.local(), "secret", "SCRAM-SHA-256-PLUS", binding)
    finally:
        await client.close()


async def test_no_starttls_over_websocket_and_plain_offered_over_https(server):
    client = await opened(server)
    try:
        assert "starttls" not in client.buffer + client.messages[1]
        assert "<mechanism>PLAIN</mechanism>" in client.messages[1]
    finally:
        await client.close()


async def test_handshake_refusals(server):
    own = f"https://localhost:{server.https_port}"  # the origin of [http] public_url
    for origin in (None, own):
        client = await WebSocketClient(server.domain).connect_to(url(server), origin=origin)
        await client.open_stream()
        await client.close()
    refusals = [
        ({"origin": "https://elsewhere.example"}, url(server), 403),
        ({"protocols": ("chat",)}, url(server), 400),
        ({}, url(server, tls=False), 403),
    ]  # plain HTTP, encryption required
    for options, address, status in refusals:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await WebSocketClient(server.domain).connect_to(address, **options)
        assert refused.value.status == status, options
    async with aiohttp.ClientSession() as session:
        async with session.get(url(server).replace("wss:", "https:"), ssl=client_context()) as response:
            assert response.status == 426 and response.headers["Server"] == "xmppd"


async def test_host_meta_points_at_the_endpoint(server):
    async with aiohttp.ClientSession() as session:
        base = f"https://127.0.0.1:{server.https_port}/.well-known"
        async with session.get(f"{base}/host-meta", ssl=client_context()) as response:
            assert response.status == 200 and response.headers["Access-Control-Allow-Origin"] == "*"
            assert response.content_type == "application/xrd+xml"
            xrd = etree.fromstring(await response.read())
        async with session.get(f"{base}/host-meta.json", ssl=client_context()) as response:
            assert response.status == 200 and response.headers["Access-Control-Allow-Origin"] == "*"
            links = json.loads(await response.text())["links"]
    ns = "{http://docs.oasis-open.org/ns/xri/xrd-1.0}"
    assert xrd.tag == f"{ns}XRD"
    xml_links = [(link.get("rel"), link.get("href")) for link in xrd.iter(f"{ns}Link")]
    endpoint = f"wss://localhost:{server.https_port}/xmpp-websocket"
    assert (
        xml_links
        == [(link["rel"], link["href"]) for link in links]
        == [
            ("urn:xmpp:alt-connections:websocket", endpoint),
            ("urn:xmpp:alt-connections:xbosh", f"https://localhost:{server.https_port}/http-bind"),
        ]
    )
    client = await WebSocketClient(server.domain).connect_to(endpoint.replace("localhost", "127.0.0.1"))
    try:
        await client.open_stream()
    finally:
        await client.close()


async def test_connections_counted_under_the_websocket_listener(server):
    before = await server.metric('xmppd_connections_accepted_total{listener="websocket"}')
    client = await opened(server)
    await client.close()
    assert await server.metric('xmppd_connections_accepted_total{listener="websocket"}') == before + 1


async def test_a_websocket_client_that_reads_nothing_is_held_back_then_let_go(make_xmppd):
    """Back-pressure as for TCP: past c2s.max_output_buffer nothing more is written to a
    client that does not read, what waits is bounded by c2s.max_held_bytes, and the
    client is closed after c2s.stall_timeout."""
    server = make_xmppd(c2s_section="stall_timeout = 3").start()
    sender_jid, deaf_jid = create_accounts(server, [unique("sender"), unique("deaf")])
    deaf = await WebSocketClient(server.domain).login_to(url(server), deaf_jid.split("@")[0], "secret", resource="deaf")
    await deaf.send("<presence xmlns='jabber:client'/>")
    await deaf.expect(r"<presence[^>]*(/>|>.*?</presence>)")
    deaf.socket.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    # From now on nothing calls receive(): aiohttp's queue fills and it stops reading.
    sender = RawClient(server.domain)
    await sender.login(server.port, sender_jid.split("@")[0], "secret")
    await sender.send(f"<enable xmlns='{NS_SM}'/>")
    await sender.expect(r"<enabled[^>]*/>")
    padding = "x" * 100_000
    for n in range(100):  # 10 MB the client does not take
        await sender.send(f"<message to='{deaf_jid}/deaf' type='headline' id='m{n}'><body>{padding}</body></message>")
    await sender.send(f"<r xmlns='{NS_SM}'/>")
    while attribute((await sender.expect(r"<a ([^>]*)/>", timeout=60)).group(1), "h") != "100":
        await sender.send(f"<r xmlns='{NS_SM}'/>")
    assert await server.limit_reached("c2s.max_held_bytes") > 0
    await server.wait_for_log("event=stalled", timeout=30)
    await server.wait_for_log(f"event=session-ended jid={deaf_jid}/deaf", timeout=30)
    await sender.close()
    await deaf.session.close()


async def test_plain_from_loopback_without_required_encryption_then_the_unauthenticated_timeout(make_xmppd):
    """With require_encryption off, loopback peers may use plain HTTP (as TCP ones may go
    without STARTTLS), and are offered no PLAIN; a WebSocket that does not log in is
    closed with connection-timeout; WebSockets past [http] max_connections_per_ip are
    served, as they count as client connections once upgraded."""
    server = make_xmppd(
        c2s_section="require_encryption = false\nunauthenticated_timeout = 1.0", extra_config=""
    ).start()
    text = server.config_path.read_text().replace("[http]\n", "[http]\nmax_connections_per_ip = 2\n")
    server.stop()
    server.config_path.write_text(text)
    server.start()
    clients = [await WebSocketClient(server.domain).connect_to(url(server, tls=False)) for _ in range(3)]
    for client in clients:
        features = (await client.open_stream()).group(1)
        assert "<mechanism>SCRAM-SHA-256</mechanism>" in features and "PLAIN" not in features
    conditions = await asyncio.gather(*(stream_error(client) for client in clients))
    assert conditions == ["connection-timeout"] * 3


async def test_a_binary_message_closes_the_websocket(server):
    client = await opened(server)
    await client.socket.send_bytes(b"<presence xmlns='jabber:client'/>")
    message = await client.socket.receive()
    assert message.type is aiohttp.WSMsgType.CLOSE and message.data == aiohttp.WSCloseCode.UNSUPPORTED_DATA
    await client.close()


async def test_a_shutdown_tells_websocket_clients(make_xmppd):
    server = make_xmppd().start()
    (jid,) = create_accounts(server, [unique("web")])
    client = await WebSocketClient(server.domain).login_to(url(server), jid.split("@")[0], "secret")
    stopping = asyncio.create_task(asyncio.to_thread(server.stop))
    assert await stream_error(client) == "system-shutdown"
    assert await stopping == 0


async def sasl_outcome(client: WebSocketClient, user: str, password: str, mechanism: str = "SCRAM-SHA-256") -> str:
    """The SASL outcome of one attempt: success, or the <failure/> condition."""
    try:
        await client.authenticate(user, password, mechanism)
    except AssertionError as failure:
        return re.search(r"<failure [^>]*><([a-z-]+)", str(failure)).group(1)
    return "success"


async def test_login_throttles_and_admission_per_address_hold(make_xmppd):
    """The TCP rules of xmppd/admission.py and xmppd/throttle.py, over WebSocket: an
    account's failed logins from one address are budgeted (then temporary-auth-failure,
    even with the right password), and past max_unauthenticated_per_ip the oldest
    unauthenticated connection is closed."""
    server = make_xmppd(
        c2s_section="auth_failure_delay = 0\nauth_failures_per_account = 2\nmax_unauthenticated_per_ip = 2"
    ).start()
    (jid,) = create_accounts(server, [unique("guessed")])
    user = jid.split("@")[0]
    guesser = await opened(server)
    assert [await sasl_outcome(guesser, user, guess) for guess in ("pencil", "crayon")] == ["not-authorized"] * 2
    await guesser.close()
    late = await opened(server)
    assert await sasl_outcome(late, user, "secret", "PLAIN") == "temporary-auth-failure"
    await late.close()

    oldest = await opened(server)
    others = [await opened(server) for _ in range(2)]
    assert await stream_error(oldest) == "policy-violation"
    for other in others:
        await other.close()
