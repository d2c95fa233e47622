"""Bad input over raw sockets: each gets the RFC 6120 stream error, the server stays up
and another logged-in session carries on."""

import asyncio
import resource
import subprocess
import sys

import pytest

from tests.conftest import unique
from tests.support.accounts import create_accounts
from tests.support.raw import RawClient
from tests.support.server import XmppdProcess

HEADER = (
    "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' "
    "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = XmppdProcess(
        tmp_path_factory.mktemp("bad"),
        c2s_section="\n".join(("max_stanza_bytes = 20000", "unauthenticated_timeout = 2")),
    ).start()
    yield process
    process.stop()


@pytest.fixture
async def bystander(server):
    """A logged-in session that must keep working whatever the others send."""
    user = unique("bystander")
    server.adduser(user, "pencil")
    client = await RawClient().login(server.port, user, "pencil")
    yield client
    await client.close()


async def assert_still_served(bystander, server):
    await bystander.send("<iq type='get' id='alive' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    await bystander.expect(r"<iq(?=[^>]*id=.alive.)(?=[^>]*type=.result.)[^>]*>")
    assert server.process.poll() is None


async def stream_error_for(server, payload: str, *, authenticated: bool = False) -> str:
    raw = RawClient()
    if authenticated:
        user = unique()
        server.adduser(user, "pencil")
        await raw.login(server.port, user, "pencil")
    else:
        await raw.connect(server.port)
        await raw.send(HEADER)
        await raw.expect(r"</stream:features>")
    await raw.send(payload)
    return await raw.closed()


@pytest.mark.parametrize(
    "payload,condition",
    [
        ("<message><body>x</bod></message>", "not-well-formed"),
        ("<a:message xmlns:b='urn:x'/>", "not-well-formed"),
        ("<!-- a comment -->", "restricted-xml"),
        ("<?pi something?>", "restricted-xml"),
    ],
)
@pytest.mark.parametrize("authenticated", [False, True])
async def test_bad_xml_gets_stream_error(server, bystander, payload, condition, authenticated):
    text = await stream_error_for(server, payload, authenticated=authenticated)
    assert f"<{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in text
    assert text.rstrip().endswith("</stream:stream>")
    await assert_still_served(bystander, server)


@pytest.mark.parametrize(
    "prolog",
    [
        "<!DOCTYPE stream [<!ENTITY a 'aaaaaaaaaa'>]>",
        "<!DOCTYPE stream [<!ENTITY a 'x'><!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;'><!ENTITY c '&b;&b;&b;&b;&b;&b;&b;&b;'>]>",
        "<!DOCTYPE stream SYSTEM 'file:///etc/passwd'>",
    ],
)
async def test_dtd_and_entities_refused_before_the_stream(server, bystander, prolog):
    raw = RawClient()
    await raw.connect(server.port)
    await raw.send("<?xml version='1.0'?>" + prolog + HEADER[len("<?xml version='1.0'?>") :])
    text = await raw.closed()
    assert "<restricted-xml xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in text
    assert "root:" not in text and "aaaaaaaaaa" not in text
    await assert_still_served(bystander, server)


async def test_entity_reference_in_a_stanza_is_refused(server, bystander):
    text = await stream_error_for(server, "<message to='x@localhost'><body>&xxe;</body></message>", authenticated=True)
    assert "xmpp-streams" in text and "<stream:error>" in text
    await assert_still_served(bystander, server)


async def test_oversized_stanza_gets_policy_violation_before_it_ends(server, bystander):
    raw = RawClient()
    user = unique()
    server.adduser(user, "pencil")
    await raw.login(server.port, user, "pencil")
    # Never closed: the limit must trip while the stanza is still incomplete.
    await raw.send("<message to='x@localhost'><body>" + "a" * 30000)
    text = await raw.closed()
    assert "<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in text
    await assert_still_served(bystander, server)


async def test_unauthenticated_connection_is_closed_after_the_timeout(server, bystander):
    raw = RawClient()
    await raw.connect(server.port)
    await raw.send(HEADER)
    text = await raw.closed(timeout=15)
    assert "<connection-timeout xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in text
    await assert_still_served(bystander, server)


async def test_silent_connection_is_closed_after_the_timeout(server, bystander):
    raw = RawClient()
    await raw.connect(server.port)
    await raw.closed(timeout=15)
    await assert_still_served(bystander, server)


async def test_bad_stream_namespace(server, bystander):
    raw = RawClient()
    await raw.connect(server.port)
    await raw.send(
        "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' "
        "xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>"
    )
    assert "<invalid-namespace xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in await raw.closed()
    await assert_still_served(bystander, server)


async def test_unsupported_version(server, bystander):
    raw = RawClient()
    await raw.connect(server.port)
    await raw.send(HEADER.replace("to='localhost' version='1.0'", "to='localhost' version='2.0'"))
    assert "<unsupported-version xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in await raw.closed()
    await assert_still_served(bystander, server)


async def test_stanza_errors_for_bad_stanzas(server, bystander):
    user = unique()
    server.adduser(user, "pencil")
    raw = await RawClient().login(server.port, user, "pencil")
    await raw.send("<iq type='get' id='two'><ping xmlns='urn:xmpp:ping'/><ping xmlns='urn:xmpp:ping'/></iq>")
    assert "<bad-request" in (await raw.expect(r"<iq(?=[^>]*id=.two.)[^>]*>.*?</iq>")).group(0)
    await raw.send("<message to='not a jid@@localhost' id='m1'><body>x</body></message>")
    assert "<jid-malformed" in (await raw.expect(r"<message(?=[^>]*id=.m1.)[^>]*>.*?</message>")).group(0)
    await raw.send("<iq type='get' id='unknown' to='localhost'><query xmlns='urn:example:nothing'/></iq>")
    assert "<service-unavailable" in (await raw.expect(r"<iq(?=[^>]*id=.unknown.)[^>]*>.*?</iq>")).group(0)
    await raw.send("<message to='somebody@elsewhere.example' id='m2'><body>x</body></message>")
    assert "<remote-server-not-found" in (await raw.expect(r"<message(?=[^>]*id=.m2.)[^>]*>.*?</message>")).group(0)
    await raw.send("<foo xmlns='urn:example:nothing'/>")
    assert "<unsupported-stanza-type" in await raw.closed()
    await assert_still_served(bystander, server)


async def test_from_is_stamped_by_the_server(server):
    sender, receiver = unique(), unique()
    server.adduser(sender, "pencil")
    server.adduser(receiver, "pencil")
    a = await RawClient().login(server.port, sender, "pencil", resource="a")
    b = await RawClient().login(server.port, receiver, "pencil", resource="b")
    await b.send("<presence/>")
    await a.send(f"<message to='{receiver}@localhost/b' from='admin@localhost' type='chat'><body>hi</body></message>")
    message = (await b.expect(r"<message[^>]*>.*?</message>")).group(0)
    assert f'from="{sender}@localhost/a"' in message or f"from='{sender}@localhost/a'" in message
    await a.close()
    await b.close()


# ------------------------------------------------------------------ connections per address


async def open_idle(server, source: str, count: int) -> list[RawClient]:
    """`count` connections from `source` that never authenticate, a few at a time
    (the listen backlog is short)."""
    gate = asyncio.Semaphore(50)

    async def one():
        async with gate:
            return await RawClient(source=source).connect(server.port)

    return await asyncio.wait_for(asyncio.gather(*(one() for _ in range(count))), 120)


async def closed_by_the_server(clients: list[RawClient], count: int, timeout: float = 60) -> list[str]:
    """Wait until `count` of `clients` (whichever: a connection delayed in the listen
    backlog is accepted late) are closed by the server; what each was sent."""
    tasks = [asyncio.ensure_future(client.closed(timeout)) for client in clients]
    texts = []
    try:
        for closed in asyncio.as_completed(tasks, timeout=timeout):
            texts.append(await closed)
            if len(texts) == count:
                return texts
    finally:
        for task in tasks:
            task.cancel()


def raise_open_file_limit(needed: int) -> None:
    """This process holds the client ends of the sockets (xmppd raises its own limit to
    the hard one at start-up)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


async def test_idle_unauthenticated_sockets_do_not_lock_logins_out(make_xmppd):
    """Issue 13 item 4: 200 idle sockets from one address locked every login from it out.
    Now the oldest unauthenticated connection of the address makes room for a new one."""
    raise_open_file_limit(4096)
    server = make_xmppd().start()  # the default limits
    user = unique()
    server.adduser(user, "pencil")
    idle = await open_idle(server, "127.0.0.3", 1000)
    same_address = await RawClient(source="127.0.0.3").login(server.port, user, "pencil", resource="a")
    elsewhere = await RawClient(source="127.0.0.4").login(server.port, user, "pencil", resource="b")
    # The oldest idle ones (1000 - max_unauthenticated_per_ip, one more for the login from
    # 127.0.0.3) were closed with a stream error.
    texts = await closed_by_the_server(idle, 901)
    assert all(
        "<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in text
        and "too many unauthenticated connections from your address" in text
        for text in texts
    )
    assert await server.limit_reached("c2s.max_unauthenticated_per_ip") >= 900
    for raw in (same_address, elsewhere):
        await raw.send("<iq type='get' id='alive' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        await raw.expect(r"<iq(?=[^>]*id=.alive.)(?=[^>]*type=.result.)[^>]*>")
    for raw in [*idle, same_address, elsewhere]:
        await raw.close()


async def test_sockets_idle_before_the_direct_tls_handshake_are_closed_and_lock_nobody_out(make_xmppd):
    """XEP-0368's port: a socket that never starts its TLS handshake is closed after
    TLS_HANDSHAKE_TIMEOUT seconds, and meanwhile takes nobody's place: a login from the
    same address goes through."""
    from xmppd.server import TLS_HANDSHAKE_TIMEOUT

    server = make_xmppd(c2s_section="max_unauthenticated_per_ip = 20").start()
    user = unique()
    server.adduser(user, "pencil")
    idle = [await RawClient(source="127.0.0.10").connect(server.tls_port) for _ in range(50)]
    raw = await RawClient(source="127.0.0.10").login(server.tls_port, user, "pencil", direct_tls=True)
    await assert_still_served(raw, server)
    assert len(await closed_by_the_server(idle, 50, timeout=TLS_HANDSHAKE_TIMEOUT + 20)) == 50
    for client in [*idle, raw]:
        await client.close()


async def test_unauthenticated_connections_are_capped_over_all_addresses(make_xmppd):
    server = make_xmppd(c2s_section="max_unauthenticated = 20\nmax_unauthenticated_per_ip = 1000").start()
    user = unique()
    server.adduser(user, "pencil")
    idle = await open_idle(server, "127.0.0.5", 30)
    raw = await RawClient(source="127.0.0.6").login(server.port, user, "pencil")
    texts = await closed_by_the_server(idle, 11)
    assert all("<resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in text for text in texts)
    assert await server.limit_reached("c2s.max_unauthenticated") >= 11
    for client in [*idle, raw]:
        await client.close()


async def test_300_authenticated_sessions_from_one_address(make_xmppd):
    """Issue 13 item 4: the 101st device behind one NAT address was refused."""
    raise_open_file_limit(4096)
    server = make_xmppd().start()
    users = create_accounts(server, [unique() for _ in range(30)], "pencil")  # ten devices each
    gate = asyncio.Semaphore(20)

    async def login(n):
        async with gate:
            return await RawClient(source="127.0.0.7").login(
                server.port, users[n % 30].split("@")[0], "pencil", resource=f"device{n}"
            )

    sessions = await asyncio.wait_for(asyncio.gather(*(login(n) for n in range(300))), 180)
    assert len({raw.jid for raw in sessions}) == 300
    await assert_still_served(sessions[0], server)
    for raw in sessions:
        await raw.close()


async def test_configured_session_cap_counts_hibernating_sessions(make_xmppd):
    server = make_xmppd(c2s_section="max_sessions_per_ip = 3").start()
    user = unique()
    server.adduser(user, "pencil")
    live = [await RawClient(source="127.0.0.8").login(server.port, user, "pencil", resource=f"r{n}") for n in range(2)]
    dropped = await RawClient(source="127.0.0.8").login(server.port, user, "pencil", resource="dropped")
    await dropped.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
    await dropped.expect(r"<enabled[^>]*resume=.true.")
    dropped.writer.transport.abort()  # gone without a stream close
    await server.wait_for_log(f"event=hibernating jid={dropped.jid}")
    refused = RawClient(source="127.0.0.8")
    await refused.secure(server.port)
    await refused.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AHVzZXIAcGVuY2ls</auth>")
    text = await refused.closed()
    assert "<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in text
    assert "too many sessions from your address" in text and "<success" not in text
    assert await server.limit_reached("c2s.max_sessions_per_ip") == 1
    other = await RawClient(source="127.0.0.9").login(server.port, user, "pencil", resource="elsewhere")
    for raw in [*live, other]:
        await raw.close()


def test_the_removed_connection_cap_names_its_replacements(tmp_path):
    path = tmp_path / "old.toml"
    path.write_text("[c2s]\nmax_connections_per_ip = 100\n")
    result = subprocess.run(
        [sys.executable, "-m", "xmppd.cli", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert (
        "c2s.max_connections_per_ip: no longer exists; use max_unauthenticated_per_ip, "
        "max_unauthenticated and max_sessions_per_ip instead"
    ) in result.stderr


@pytest.mark.parametrize(
    "toml,expected",
    [
        ("[c2s]\nprot = 5222\n", "c2s.prot: unknown key; did you mean 'port'?"),
        ("[c2s]\nport = 'x'\n", "c2s.port: must be int"),
        ("[c2s]\nport = 70000\n", "c2s.port: must be a port number"),
        ("[serverr]\n", "serverr: unknown section; did you mean 'server'?"),
        ("[storage]\ndefault = 'nosuch'\n", "storage.nosuch: unknown storage backend"),
        ("[[hosts]]\ndomain = 'a'\n[[hosts]]\ndomain = 'a'\n", "hosts: a domain appears twice"),
        ("[c2s\n", "not valid TOML"),
        ("[extensions.muc]\ndomain = 'not a domain'\n", "extensions.muc.domain: must be a domain name"),
        ("[extensions.upload]\ndomain = 'upload.{nope}'\n", "extensions.upload.domain: must be a domain name"),
    ],
)
def test_bad_config_stops_start_up_naming_the_key(tmp_path, toml, expected):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    result = subprocess.run(
        [sys.executable, "-m", "xmppd.cli", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert str(path) in result.stderr and expected in result.stderr
