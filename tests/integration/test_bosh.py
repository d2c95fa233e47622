"""XMPP over BOSH (XEP-0124, XEP-0206) and its discovery (XEP-0156), end to end.

A raw BOSH client (aiohttp's, tests/support/bosh.py, written from the XEPs) creates a
session (its answer's attributes and features), logs in with SCRAM, restarts the stream
with xmpp:restart, binds, and chats with a slixmpp TCP client both ways, a held request
answered when a message arrives; a repeated rid gets the same answer; a rid past the
window, an unknown sid and a bad body end with their terminal condition (HTTP codes for
legacy clients); a pause answers held requests, too long a pause and too frequent
polling are policy-violations; a session without requests for [bosh] inactivity seconds
is dropped, and XEP-0198 resumes it over a new BOSH session; a terminate body ends the
session (its directed presence gets unavailable); the TCP rules hold (stanza limit,
unauthenticated timeout, login throttles, admission per address, system-shutdown, the
"bosh" listener label); plain HTTP is refused; CORS answers pages of allowed origins
only; host-meta lists the URL; an empty path turns it off.
"""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest
from lxml import etree

from tests.conftest import AccountPool, unique
from tests.support.accounts import create_accounts
from tests.support.bosh import NS_HTTPBIND, NS_XBOSH, BoshClient, url
from tests.support.inbox import MESSAGE, PRESENCE, online
from tests.support.raw import client_context
from tests.support.server import XmppdProcess

NS_STREAMS = "http://etherx.jabber.org/streams"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = XmppdProcess(tmp_path_factory.mktemp("bosh"), c2s_section="auth_failure_delay = 0").start()
    process.accounts = AccountPool(process)
    yield process
    process.stop()


async def logged_in(server, user: str | None = None, resource: str = "web") -> BoshClient:
    client = BoshClient(server.domain)
    return await client.login_to(url(server), user or server.accounts.local(), "secret", resource=resource)


def condition(answer: etree._Element) -> tuple[str | None, str | None]:
    return answer.get("type"), answer.get("condition")


async def test_session_creation_answer(server):
    client, other = BoshClient(server.domain), BoshClient(server.domain)
    try:
        answer = await client.connect_to(url(server), wait=45, hold=1)
        assert answer.tag == f"{{{NS_HTTPBIND}}}body"
        assert len(client.sid) >= 32 and client.sid != (await other.connect_to(url(server))).get("sid")
        assert (answer.get("wait"), answer.get("hold"), answer.get("requests")) == ("45", "1", "2")
        assert answer.get("from") == server.domain
        assert answer.get("inactivity") and answer.get("polling") and answer.get("maxpause") and answer.get("ver")
        assert answer.get(f"{{{NS_XBOSH}}}version") == "1.0"
        features = answer.find(f"{{{NS_STREAMS}}}features")
        if features is None:  # XEP-0206: in a later answer, then
            features = etree.fromstring((await client.expect(r"<stream:features.*?</stream:features>")).group(0))
        mechanisms = [m.text for m in features.iter(f"{{{NS_SASL}}}mechanism")]
        assert "SCRAM-SHA-256" in mechanisms and not any(m.endswith("-PLUS") for m in mechanisms)
        assert b"starttls" not in etree.tostring(features)
    finally:
        await client.close()
        await other.close()


async def test_login_with_scram_and_chat_with_a_tcp_client_both_ways(server):
    web_user, tcp_user = server.accounts.take(2)
    web = await BoshClient(server.domain).login_to(url(server), web_user.split("@")[0], "secret")
    tcp, inbox = await online(server, tcp_user)
    try:
        assert web.jid == f"{web_user}/web"
        await web.send(
            f"<message xmlns='jabber:client' to='{tcp_user}' type='chat' id='b1'><body>from bosh</body></message>"
        )
        received = await inbox.wait(lambda s: s.tag == MESSAGE and s.get("id") == "b1")
        assert received.findtext("{jabber:client}body") == "from bosh" and received.get("from") == web.jid

        tcp.send_message(mto=web.jid, mbody="from tcp", mtype="chat")
        await web.expect(r"<message [^>]*>.*?<body>from tcp</body>.*?</message>")
        message = next(child for body in web.bodies for child in body if child.tag == MESSAGE)
        assert message.get("from") == str(tcp.boundjid)
    finally:
        tcp.disconnect()
        await web.close()


async def test_a_held_request_is_answered_when_a_message_arrives(server):
    web_user, tcp_user = server.accounts.take(2)
    web = await BoshClient(server.domain).login_to(url(server), web_user.split("@")[0], "secret", polling=False)
    tcp, _ = await online(server, tcp_user)
    try:
        # Held (wait is 30 s) with nothing to say: answered, well before 'wait', with the
        # message that comes meanwhile, not empty.
        held = asyncio.get_running_loop().create_task(web.request())
        tcp.send_message(mto=web.jid, mbody="wake up", mtype="chat")
        answer = await asyncio.wait_for(held, 10)
        assert [child.findtext("{jabber:client}body") for child in answer if child.tag == MESSAGE] == ["wake up"]
    finally:
        tcp.disconnect()
        await web.close()


async def test_a_repeated_rid_gets_the_same_answer(server):
    client = BoshClient(server.domain)
    try:
        await client.connect_to(url(server))
        rid = client.rid + 1
        text = client.body(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>AGJhZABiYWQ=</auth>", rid)
        client.rid = rid
        first = await client.post(text)
        again = await client.post(text)  # as after a broken connection (section 14.3)
        assert first[0] == again[0] == 200 and first[1] == again[1]
        assert b"<failure" in first[1]
    finally:
        await client.close()


async def test_a_rid_past_the_window_ends_the_session_with_item_not_found(server):
    client = BoshClient(server.domain)
    try:
        await client.connect_to(url(server))
        status, content, _ = await client.post(client.body(rid=client.rid + 10))
        assert status == 200 and condition(etree.fromstring(content)) == ("terminate", "item-not-found")
        status, content, _ = await client.post(client.body(rid=client.rid + 1))  # the session is gone
        assert condition(etree.fromstring(content)) == ("terminate", "item-not-found")
    finally:
        await client.close()


async def test_an_unknown_sid_gets_item_not_found(server):
    client = BoshClient(server.domain)
    try:
        await client.connect_to(url(server))
        client.sid = "no" + client.sid[2:]
        status, content, _ = await client.post(client.body(rid=client.rid + 1))
        assert status == 404 and condition(etree.fromstring(content)) == ("terminate", "item-not-found")
    finally:
        await client.close()


@pytest.mark.parametrize(
    "text",
    [
        "<body xmlns='{ns}' rid='{rid}' sid='{sid}'><message xmlns='jabber:client'>",
        "<body xmlns='{ns}' rid='{rid}' sid='{sid}'>text</body>",
        "<body xmlns='{ns}' rid='{rid}' sid='{sid}'><!DOCTYPE x></body>",
    ],
)
async def test_a_bad_body_ends_the_session_with_bad_request(server, text):
    client = BoshClient(server.domain)
    try:
        await client.connect_to(url(server))
        status, content, _ = await client.post(text.format(ns=NS_HTTPBIND, rid=client.rid + 1, sid=client.sid))
        assert status == 200 and condition(etree.fromstring(content)) == ("terminate", "bad-request")
        status, content, _ = await client.post(client.body(rid=client.rid + 1))
        assert condition(etree.fromstring(content)) == ("terminate", "bad-request")
    finally:
        await client.close()


async def test_terminate_ends_the_session_and_directed_presence_gets_unavailable(server):
    web_user, tcp_user = server.accounts.take(2)
    web = await BoshClient(server.domain).login_to(url(server), web_user.split("@")[0], "secret")
    tcp, inbox = await online(server, tcp_user)
    try:
        await web.send(f"<presence xmlns='jabber:client' to='{tcp.boundjid}'/>")
        await inbox.wait(lambda s: s.tag == PRESENCE and s.get("from") == web.jid and s.get("type") is None)
        answer = await web.request(attributes="type='terminate'")
        assert answer.get("type") == "terminate" and answer.get("condition") is None
        await inbox.wait(lambda s: s.tag == PRESENCE and s.get("from") == web.jid and s.get("type") == "unavailable")
        status, content, _ = await web.post(web.body(rid=web.rid + 1))
        assert status == 404 and condition(etree.fromstring(content)) == ("terminate", "item-not-found")
    finally:
        tcp.disconnect()
        await web.close()


async def test_cors_for_allowed_origins_only(server):
    own = f"https://localhost:{server.https_port}"
    async with aiohttp.ClientSession() as session:
        headers = {
            "Origin": own,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        }
        async with session.options(url(server), headers=headers, ssl=client_context()) as response:
            assert response.status == 200
            assert response.headers["Access-Control-Allow-Origin"] == own
            assert "POST" in response.headers["Access-Control-Allow-Methods"]
            assert "Content-Type" in response.headers["Access-Control-Allow-Headers"]
        async with session.options(
            url(server), headers={**headers, "Origin": "https://elsewhere.example"}, ssl=client_context()
        ) as response:
            assert response.status == 403 and "Access-Control-Allow-Origin" not in response.headers
    client = BoshClient(server.domain)
    try:
        client.origin = own
        await client.connect_to(url(server), origin=own)
        status, _, headers = await client.post(client.body(rid=client.rid + 1, attributes="type='terminate'"))
        assert status == 200 and headers["Access-Control-Allow-Origin"] == own
    finally:
        await client.close()


async def test_plain_http_is_refused_when_encryption_is_required(server):
    client = BoshClient(server.domain)
    client.http = aiohttp.ClientSession()
    client.address = url(server, tls=False)
    try:
        status, _, _ = await client.post(client.body(attributes=f"to='{server.domain}' wait='5' hold='1' ver='1.11'"))
        assert status == 403
    finally:
        await client.close()


async def test_host_meta_lists_the_bosh_url(server):
    async with aiohttp.ClientSession() as session:
        base = f"https://127.0.0.1:{server.https_port}/.well-known"
        async with session.get(f"{base}/host-meta.json", ssl=client_context()) as response:
            links = {link["rel"]: link["href"] for link in (await response.json(content_type=None))["links"]}
        async with session.get(f"{base}/host-meta", ssl=client_context()) as response:
            xrd = etree.fromstring(await response.read())
    endpoint = f"https://localhost:{server.https_port}/http-bind"
    assert links["urn:xmpp:alt-connections:xbosh"] == endpoint
    ns = "{http://docs.oasis-open.org/ns/xri/xrd-1.0}"
    assert ("urn:xmpp:alt-connections:xbosh", endpoint) in [
        (link.get("rel"), link.get("href")) for link in xrd.iter(f"{ns}Link")
    ]


async def test_sessions_counted_under_the_bosh_listener(server):
    before = await server.metric('xmppd_connections_accepted_total{listener="bosh"}')
    client = BoshClient(server.domain)
    await client.connect_to(url(server))
    await client.close()
    assert await server.metric('xmppd_connections_accepted_total{listener="bosh"}') == before + 1


async def test_an_inactive_session_is_dropped(make_xmppd):
    server = make_xmppd(extra_config="[bosh]\ninactivity = 2\npolling = 1\n").start()
    (jid,) = create_accounts(server, [unique("idle")])
    # No poller: after the login no request is left waiting, and the client goes away.
    client = await BoshClient(server.domain).login_to(url(server), jid.split("@")[0], "secret", polling=False)
    try:
        await server.wait_for_log(f"event=connection-lost jid={jid}/web", timeout=20)
        assert await server.limit_reached("bosh.inactivity") >= 1
        status, content, _ = await client.post(client.body(rid=client.rid + 1))
        assert status == 404 and condition(etree.fromstring(content)) == ("terminate", "item-not-found")
    finally:
        await client.close()


async def terminated(client: BoshClient, timeout: float = 20.0) -> etree._Element:
    """The terminate answer that ends the session, while the poller runs."""

    async def wait():
        while client.terminated is None:
            client._arrived.clear()
            await client._arrived.wait()
        return client.terminated

    return await asyncio.wait_for(wait(), timeout)


async def test_a_body_over_the_stanza_limit_is_a_policy_violation(server):
    client = BoshClient(server.domain)
    try:
        await client.connect_to(url(server))
        padding = "x" * 300_000
        status, content, _ = await client.post(
            client.body(f"<message xmlns='jabber:client'><body>{padding}</body></message>", client.rid + 1)
        )
        assert status == 200 and condition(etree.fromstring(content)) == ("terminate", "policy-violation")
    finally:
        await client.close()


async def test_a_pause_answers_the_held_requests_and_a_longer_one_is_refused(server):
    client = BoshClient(server.domain)
    try:
        answer = await client.connect_to(url(server), wait=30)
        held = asyncio.get_running_loop().create_task(client.request())
        paused = await asyncio.wait_for(client.request(attributes="pause='20'"), 10)
        assert len(paused) == 0 and paused.get("type") is None
        assert (await asyncio.wait_for(held, 10)).get("type") is None
        too_long = int(answer.get("maxpause")) + 1
        refused = await client.request(attributes=f"pause='{too_long}'")
        assert condition(refused) == ("terminate", "policy-violation")
        assert await server.limit_reached("bosh.max_pause") >= 1
    finally:
        await client.close()


async def test_polling_too_often_is_a_policy_violation(server):
    client = BoshClient(server.domain)
    try:
        answer = await client.connect_to(url(server), hold=0)
        assert answer.get("hold") == "0" and int(answer.get("polling")) > 0
        for _ in range(5):  # empty polls, back to back
            answer = await client.request()
            if answer.get("type") == "terminate":
                break
        assert condition(answer) == ("terminate", "policy-violation")
        assert await server.limit_reached("bosh.polling") >= 1
    finally:
        await client.close()


async def test_the_unauthenticated_timeout_ends_the_session_with_the_stream_error(make_xmppd):
    server = make_xmppd(c2s_section="unauthenticated_timeout = 1.0").start()
    client = BoshClient(server.domain)
    try:
        await client.connect_to(url(server))
        client.start_polling()
        answer = await terminated(client)
        assert condition(answer) == ("terminate", "remote-stream-error")
        assert answer.find("{urn:ietf:params:xml:ns:xmpp-streams}connection-timeout") is not None
    finally:
        await client.close()


async def test_a_shutdown_tells_bosh_clients(make_xmppd):
    server = make_xmppd().start()
    (jid,) = create_accounts(server, [unique("web")])
    client = await BoshClient(server.domain).login_to(url(server), jid.split("@")[0], "secret")
    try:
        stopping = asyncio.create_task(asyncio.to_thread(server.stop))
        assert condition(await terminated(client)) == ("terminate", "system-shutdown")
        assert await stopping == 0
    finally:
        await client.close()


async def test_resumption_after_a_lost_bosh_session(make_xmppd):
    """XEP-0198 over BOSH: a session dropped for inactivity hibernates, and a new BOSH
    session resumes it and gets what came meanwhile."""
    server = make_xmppd(extra_config="[bosh]\ninactivity = 2\npolling = 1\n").start()
    web_jid, tcp_jid = create_accounts(server, [unique("phone"), unique("friend")])
    user = web_jid.split("@")[0]
    # No poller: once <enabled/> is answered no request is left waiting, and the client
    # vanishes.
    web = await BoshClient(server.domain).login_to(url(server), user, "secret", resource="phone", polling=False)
    await web.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
    sm_id = re.search(r"id=\"([^\"]+)\"", (await web.expect(r"<enabled [^>]*/>")).group(0)).group(1)
    await server.wait_for_log(f"event=connection-lost jid={web_jid}/phone", timeout=20)
    tcp, _ = await online(server, tcp_jid)
    again = BoshClient(server.domain)
    try:
        tcp.send_message(mto=f"{web_jid}/phone", mbody="while you were away", mtype="chat")
        await again.connect_to(url(server))
        again.start_polling()
        await again.expect(r"<stream:features[^>]*>.*?</stream:features>")
        await again.authenticate(user, "secret", "SCRAM-SHA-256")
        await again.request(attributes=f"to='{server.domain}' xmpp:restart='true'")
        await again.expect(r"<stream:features[^>]*>.*?</stream:features>")
        await again.send(f"<resume xmlns='urn:xmpp:sm:3' previd='{sm_id}' h='0'/>")
        await again.expect(r"<resumed [^>]*/>")
        await again.expect(r"<message [^>]*>.*?<body>while you were away</body>")
    finally:
        tcp.disconnect()
        await web.close()
        await again.close()


async def test_a_legacy_client_gets_http_error_codes(server):
    """Without 'ver' in its creation request a client is legacy (XEP-0124 section 19.1):
    its binding errors come with their HTTP codes."""
    client = BoshClient(server.domain)
    try:
        answer = await client.connect_to(url(server), attributes="")
        assert answer.get("ver") is None
        status, content, _ = await client.post(client.body(rid=client.rid + 10))
        assert status == 404 and condition(etree.fromstring(content)) == ("terminate", "item-not-found")
    finally:
        await client.close()


async def test_admission_per_address_holds_for_bosh_sessions(make_xmppd):
    """Past max_unauthenticated_per_ip the oldest unauthenticated session is ended, as a
    TCP connection would be (xmppd/admission.py)."""
    server = make_xmppd(c2s_section="max_unauthenticated_per_ip = 2").start()
    clients = [BoshClient(server.domain) for _ in range(3)]
    try:
        for client in clients:
            await client.connect_to(url(server))
        clients[0].start_polling()
        answer = await terminated(clients[0])
        assert condition(answer) == ("terminate", "remote-stream-error")
        assert answer.find("{urn:ietf:params:xml:ns:xmpp-streams}policy-violation") is not None
        assert await server.limit_reached("c2s.max_unauthenticated_per_ip") >= 1
    finally:
        for client in clients:
            await client.close()


async def test_an_empty_path_turns_bosh_off(make_xmppd):
    server = make_xmppd(extra_config='[bosh]\npath = ""\n').start()
    async with aiohttp.ClientSession() as session:
        async with session.post(url(server), data=b"<body/>", ssl=client_context()) as response:
            assert response.status == 404
        base = f"https://127.0.0.1:{server.https_port}/.well-known"
        async with session.get(f"{base}/host-meta.json", ssl=client_context()) as response:
            rels = [link["rel"] for link in (await response.json(content_type=None))["links"]]
    assert rels == ["urn:xmpp:alt-connections:websocket"]


@pytest.mark.parametrize("to, expected", [("to='elsewhere.example'", "host-unknown"), ("", "improper-addressing")])
async def test_a_creation_request_for_no_domain_of_ours_is_refused(server, to, expected):
    client = BoshClient(server.domain)
    client.http = aiohttp.ClientSession()
    client.address = url(server)
    try:
        status, content, _ = await client.post(client.body(attributes=f"{to} wait='5' hold='1' ver='1.11'"))
        assert status == 200 and condition(etree.fromstring(content)) == ("terminate", expected)
    finally:
        await client.close()


async def test_a_secure_session_takes_no_plain_http_request_and_goes_on(server):
    """XEP-0124 section 20.1: the plain connection is closed, the session not ended."""
    client = BoshClient(server.domain)
    try:
        await client.connect_to(url(server))
        plain = client.body(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>AGJhZABiYWQ=</auth>", client.rid + 1)
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectionError):
                async with session.post(url(server, tls=False), data=plain.encode()) as response:
                    await response.read()
        answer = await client.request(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>AGJhZABiYWQ=</auth>")
        assert answer.get("type") is None
        await client.expect(r"<failure ")
    finally:
        await client.close()


async def test_login_throttles_hold_over_bosh(make_xmppd):
    server = make_xmppd(c2s_section="auth_failure_delay = 0\nauth_failures_per_account = 2").start()
    (jid,) = create_accounts(server, [unique("guessed")])
    user = jid.split("@")[0]
    for guess in ("pencil", "crayon"):
        client = BoshClient(server.domain)
        await client.connect_to(url(server))
        client.start_polling()
        with pytest.raises(AssertionError, match="not-authorized"):
            await client.authenticate(user, guess, "SCRAM-SHA-256")
        await client.close()
    late = BoshClient(server.domain)
    try:
        await late.connect_to(url(server))
        late.start_polling()
        with pytest.raises(AssertionError, match="temporary-auth-failure"):
            await late.authenticate(user, "secret", "PLAIN")
    finally:
        await late.close()
