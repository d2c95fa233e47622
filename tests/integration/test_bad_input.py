"""Bad input over raw sockets: each gets the RFC 6120 stream error, the server stays up
and another logged-in session carries on."""
import subprocess
import sys

import pytest

from tests.conftest import unique
from tests.support.raw import RawClient
from tests.support.server import XmppdProcess

HEADER = ("<?xml version='1.0'?><stream:stream to='localhost' version='1.0' "
          "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = XmppdProcess(tmp_path_factory.mktemp("bad"), c2s_section="\n".join((
        "max_stanza_bytes = 20000", "unauthenticated_timeout = 2"))).start()
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


@pytest.mark.parametrize("payload,condition", [
    ("<message><body>x</bod></message>", "not-well-formed"),
    ("<a:message xmlns:b='urn:x'/>", "not-well-formed"),
    ("<!-- a comment -->", "restricted-xml"),
    ("<?pi something?>", "restricted-xml"),
])
@pytest.mark.parametrize("authenticated", [False, True])
async def test_bad_xml_gets_stream_error(server, bystander, payload, condition, authenticated):
    text = await stream_error_for(server, payload, authenticated=authenticated)
    assert f"<{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in text
    assert text.rstrip().endswith("</stream:stream>")
    await assert_still_served(bystander, server)


@pytest.mark.parametrize("prolog", [
    "<!DOCTYPE stream [<!ENTITY a 'aaaaaaaaaa'>]>",
    "<!DOCTYPE stream [<!ENTITY a 'x'><!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;'><!ENTITY c '&b;&b;&b;&b;&b;&b;&b;&b;'>]>",
    "<!DOCTYPE stream SYSTEM 'file:///etc/passwd'>",
])
async def test_dtd_and_entities_refused_before_the_stream(server, bystander, prolog):
    raw = RawClient()
    await raw.connect(server.port)
    await raw.send("<?xml version='1.0'?>" + prolog + HEADER[len("<?xml version='1.0'?>"):])
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
    await raw.send("<?xml version='1.0'?><stream:stream to='localhost' version='1.0' "
                   "xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>")
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
    assert f"from=\"{sender}@localhost/a\"" in message or f"from='{sender}@localhost/a'" in message
    await a.close()
    await b.close()


@pytest.mark.parametrize("toml,expected", [
    ("[c2s]\nprot = 5222\n", "c2s.prot: unknown key; did you mean 'port'?"),
    ("[c2s]\nport = 'x'\n", "c2s.port: must be int"),
    ("[c2s]\nport = 70000\n", "c2s.port: must be a port number"),
    ("[serverr]\n", "serverr: unknown section; did you mean 'server'?"),
    ("[storage]\ndefault = 'nosuch'\n", "storage.nosuch: unknown storage backend"),
    ("[[hosts]]\ndomain = 'a'\n[[hosts]]\ndomain = 'a'\n", "hosts: a domain appears twice"),
    ("[c2s\n", "not valid TOML"),
    ("[extensions.muc]\ndomain = 'not a domain'\n", "extensions.muc.domain: must be a domain name"),
    ("[extensions.upload]\ndomain = 'upload.{nope}'\n", "extensions.upload.domain: must be a domain name"),
])
def test_bad_config_stops_start_up_naming_the_key(tmp_path, toml, expected):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    result = subprocess.run([sys.executable, "-m", "xmppd.cli", "--config", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert str(path) in result.stderr and expected in result.stderr
