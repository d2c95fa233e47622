"""XEP-0077 In-Band Registration end to end: registration before login (open, closed and
throttled servers), password change and account removal after login."""

import asyncio

import pytest
import slixmpp
from lxml import etree

from tests.conftest import unique
from tests.support.raw import RawClient
from tests.support.server import XmppdProcess, can_log_in
from xmppd.client import Client

NS_REGISTER = "jabber:iq:register"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_DATA = "jabber:x:data"
FEATURE = "<register xmlns='http://jabber.org/features/iq-register'/>"


def server_with(tmp_path_factory, name, options):
    directory = tmp_path_factory.mktemp(name)
    return XmppdProcess(
        directory,
        f"[extensions.register]\n{options}\n",
        # Its tests check that logins fail, all from 127.0.0.1.
        c2s_section="auth_failure_delay = 0\nauth_failures_per_ip = 1000",
    ).start()


@pytest.fixture(scope="module")
def open_server(tmp_path_factory):
    server = server_with(
        tmp_path_factory, "register-open", "allow_registration = true\nregistration_throttle_seconds = 0"
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def closed_server(tmp_path_factory):
    server = server_with(tmp_path_factory, "register-closed", "allow_unregister = false")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def throttled_server(tmp_path_factory):
    server = server_with(
        tmp_path_factory, "register-throttled", "allow_registration = true\nregistration_throttle_seconds = 3600"
    )
    yield server
    server.stop()


# ------------------------------------------------------------------ raw helpers


async def unauthenticated(server, source: str = "127.0.0.1") -> tuple[RawClient, str]:
    """A raw client past STARTTLS, not logged in; returns it and the features offered."""
    client = RawClient(server.domain)
    client.reader, client.writer = await asyncio.open_connection("127.0.0.1", server.port, local_addr=(source, 0))
    await client.open_stream()
    features = await client.starttls()
    return client, features.group(1)


async def request(client: RawClient, iq_id: str, payload: str, type_: str = "set", to: str = "") -> etree._Element:
    """Send an iq and return its reply, parsed (the iq itself is in no namespace)."""
    address = f" to='{to}'" if to else ""
    await client.send(f"<iq type='{type_}' id='{iq_id}'{address}>{payload}</iq>")
    match = await client.expect(rf"<iq\b[^>]*\bid=['\"]{iq_id}['\"][^>]*?(?:/>|>.*?</iq>)")
    return etree.fromstring(match.group(0))


def error_of(iq: etree._Element) -> etree._Element | None:
    """The <error/> child (the stream's default namespace is not declared on the iq)."""
    return next((child for child in iq if etree.QName(child).localname == "error"), None)


def condition(iq: etree._Element) -> str | None:
    error = error_of(iq)
    if error is None:
        return None
    return next(etree.QName(child).localname for child in error if etree.QName(child).namespace == NS_STANZAS)


def legacy(username: str | None, password: str | None) -> str:
    fields = "" if username is None else f"<username>{username}</username>"
    fields += "" if password is None else f"<password>{password}</password>"
    return f"<query xmlns='{NS_REGISTER}'>{fields}</query>"


async def register(server, username, password, source="127.0.0.1") -> etree._Element:
    client, _ = await unauthenticated(server, source)
    try:
        return await request(client, "reg", legacy(username, password))
    finally:
        await client.close()


async def account(server, user: str, password: str) -> str:
    """Create an account in-band (faster than a run of xmppctl)."""
    assert (await register(server, user, password)).get("type") == "result"
    return f"{user}@{server.domain}"


# ------------------------------------------------------------------ open registration


async def test_feature_offered_after_tls_only(open_server):
    client = RawClient(open_server.domain)
    await client.connect(open_server.port)
    before_tls = (await client.open_stream()).group(1)
    assert "iq-register" not in before_tls
    after_tls = (await client.starttls()).group(1)
    assert FEATURE in after_tls
    await client.close()


async def test_slixmpp_registers_then_logs_in(open_server):
    """The usual client path: the <register/> feature, the form, the fields, then SASL."""
    jid = f"{unique('slix')}@{open_server.domain}"
    client = Client(jid, "correct horse", verify_tls=False)
    client.plugin["xep_0077"].force_registration = True
    registered = asyncio.get_running_loop().create_future()

    async def fill_in(form):
        assert form["register"]["fields"] >= {"username", "password"}
        answer = client.Iq()
        answer["type"] = "set"
        answer["register"]["username"] = client.boundjid.user
        answer["register"]["password"] = client.password
        await answer.send()
        registered.set_result(True)

    client.add_event_handler("register", fill_in)
    await client.login("127.0.0.1", open_server.port)
    assert registered.result() and client.boundjid.bare == jid
    await client.logout()
    assert await can_log_in(open_server, jid.split("@")[0], "correct horse")


async def test_registration_form_has_fields_and_data_form(open_server):
    client, _ = await unauthenticated(open_server)
    answer = await request(client, "form", f"<query xmlns='{NS_REGISTER}'/>", type_="get")
    await client.close()
    assert answer.get("type") == "result"
    query = answer.find(f"{{{NS_REGISTER}}}query")
    for name in ("instructions", "username", "password"):
        assert query.find(f"{{{NS_REGISTER}}}{name}") is not None
    assert query.find(f"{{{NS_REGISTER}}}registered") is None
    x = query.find(f"{{{NS_DATA}}}x")
    fields = {f.get("var"): f for f in x.iter(f"{{{NS_DATA}}}field")}
    assert fields["FORM_TYPE"].get("type") == "hidden"
    assert fields["FORM_TYPE"].findtext(f"{{{NS_DATA}}}value") == NS_REGISTER
    assert fields["password"].get("type") == "text-private"
    assert fields["username"].find(f"{{{NS_DATA}}}required") is not None


async def test_register_with_data_form(open_server):
    user = unique("form")
    client, _ = await unauthenticated(open_server)
    submitted = (
        f"<query xmlns='{NS_REGISTER}'><x xmlns='{NS_DATA}' type='submit'>"
        f"<field var='FORM_TYPE'><value>{NS_REGISTER}</value></field>"
        f"<field var='username'><value>{user}</value></field>"
        "<field var='password'><value>by the form</value></field></x></query>"
    )
    answer = await request(client, "reg", submitted)
    assert answer.get("type") == "result", etree.tostring(answer)
    # XEP-0077 3.1.1: the same stream goes on to authenticate with the new account.
    await client.authenticate(user, "by the form")
    await client.close()


async def test_existing_username_is_a_conflict_and_keeps_the_password(open_server):
    user = unique("taken")
    await account(open_server, user, "first password")
    answer = await register(open_server, user.upper(), "second password")  # nodeprep: the same account
    assert answer.get("type") == "error" and condition(answer) == "conflict"
    assert await can_log_in(open_server, user, "first password")


@pytest.mark.parametrize(
    "username,password",
    [
        (None, "a good password"),
        ("", "a good password"),
        ("{user}", None),
        ("{user}", ""),
        ("{user}", "short"),
        ("bad@name", "a good password"),
        ("bad/name", "a good password"),
    ],
)
async def test_incomplete_or_unacceptable_registration(open_server, username, password):
    user = unique("bad")
    answer = await register(open_server, username and username.format(user=user), password)
    assert answer.get("type") == "error" and condition(answer) == "not-acceptable"
    assert error_of(answer).get("type") == "modify"
    assert not await can_log_in(open_server, user, password or "a good password")


async def test_remove_before_login_is_unexpected(open_server):
    client, _ = await unauthenticated(open_server)
    answer = await request(client, "rm", f"<query xmlns='{NS_REGISTER}'><remove/></query>")
    assert condition(answer) == "unexpected-request"
    await client.close()


async def test_other_iq_before_login_closes_the_stream(open_server):
    client, _ = await unauthenticated(open_server)
    await client.send("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert "<not-authorized" in await client.closed()


# ------------------------------------------------------------------ logged in


async def test_registered_user_gets_registered_element(open_server):
    user = unique("info")
    await account(open_server, user, "pencil12")
    client = await RawClient().login(open_server.port, user, "pencil12")
    answer = await request(client, "info", f"<query xmlns='{NS_REGISTER}'/>", type_="get")
    query = answer.find(f"{{{NS_REGISTER}}}query")
    assert query.find(f"{{{NS_REGISTER}}}registered") is not None
    assert query.findtext(f"{{{NS_REGISTER}}}username") == user
    assert not query.findtext(f"{{{NS_REGISTER}}}password")  # never given out
    await client.close()


async def test_password_change_then_login_with_the_new_one(open_server):
    user = unique("change")
    jid = await account(open_server, user, "old password")
    client = Client(jid, "old password", verify_tls=False)
    await client.login("127.0.0.1", open_server.port)
    await client.plugin["xep_0077"].change_password("new password", jid=open_server.domain)
    await client.logout()
    assert await can_log_in(open_server, user, "new password")
    assert not await can_log_in(open_server, user, "old password")


@pytest.mark.parametrize(
    "payload,expected",
    [
        (legacy("someone-else", "a good password"), "bad-request"),
        (legacy(None, "a good password"), "bad-request"),
        (legacy("{user}", ""), "bad-request"),
        (legacy("{user}", "short"), "not-acceptable"),
    ],
)
async def test_bad_password_change_keeps_the_password(open_server, payload, expected):
    user = unique("keep")
    await account(open_server, user, "pencil12")
    client = await RawClient().login(open_server.port, user, "pencil12")
    answer = await request(client, "pw", payload.format(user=user))
    assert condition(answer) == expected
    await client.close()
    assert await can_log_in(open_server, user, "pencil12")


async def test_cancel_registration_closes_every_session(open_server):
    user = unique("leaving")
    await account(open_server, user, "pencil12")
    other = await RawClient().login(open_server.port, user, "pencil12", resource="other")
    client = await RawClient().login(open_server.port, user, "pencil12")
    # No 'to': XEP-0077 3.2 says a client cancelling with its own server leaves it out.
    answer = await request(client, "bye", f"<query xmlns='{NS_REGISTER}'><remove/></query>")
    assert answer.get("type") == "result"
    assert "<not-authorized" in await client.closed()
    assert "<not-authorized" in await other.closed()
    assert not await can_log_in(open_server, user, "pencil12")


async def test_remove_with_other_children_is_a_bad_request(open_server):
    user = unique("stay")
    await account(open_server, user, "pencil12")
    client = await RawClient().login(open_server.port, user, "pencil12")
    answer = await request(client, "rm", f"<query xmlns='{NS_REGISTER}'><remove/><username>{user}</username></query>")
    assert condition(answer) == "bad-request"
    await client.close()
    assert await can_log_in(open_server, user, "pencil12")


async def test_advertised_in_disco(open_server):
    jid = await account(open_server, unique(), "pencil12")
    client = Client(jid, "pencil12", verify_tls=False)
    await client.login("127.0.0.1", open_server.port)
    info = await client.plugin["xep_0030"].get_info(jid=open_server.domain)
    assert NS_REGISTER in info["disco_info"]["features"]
    await client.logout()


# ------------------------------------------------------------------ closed registration


async def test_closed_server_offers_no_registration(closed_server):
    client, features = await unauthenticated(closed_server)
    assert "iq-register" not in features
    for iq_id, type_, payload in (
        ("get", "get", f"<query xmlns='{NS_REGISTER}'/>"),
        ("set", "set", legacy(unique("nope"), "a good password")),
    ):
        answer = await request(client, iq_id, payload, type_=type_)
        assert condition(answer) == "service-unavailable"
    await client.close()


async def test_closed_server_stores_nothing(closed_server):
    user = unique("nope")
    answer = await register(closed_server, user, "a good password")
    assert condition(answer) == "service-unavailable"
    assert f"{user}@" not in closed_server.ctl("users").stdout


async def test_password_change_works_with_registration_closed(closed_server):
    user = unique("closed")
    jid = closed_server.adduser(user, "old password")
    client = Client(jid, "old password", verify_tls=False)
    await client.login("127.0.0.1", closed_server.port)
    await client.plugin["xep_0077"].change_password("new password")
    await client.logout()
    assert await can_log_in(closed_server, user, "new password")


async def test_unregister_not_allowed_when_switched_off(closed_server):
    user = unique("kept")
    jid = closed_server.adduser(user, "pencil12")
    client = Client(jid, "pencil12", verify_tls=False)
    await client.login("127.0.0.1", closed_server.port)
    with pytest.raises(slixmpp.exceptions.IqError) as refused:
        await client.plugin["xep_0077"].cancel_registration()
    assert refused.value.condition == "not-allowed"
    await client.logout()
    assert await can_log_in(closed_server, user, "pencil12")


# ------------------------------------------------------------------ throttling


async def test_registrations_are_throttled_per_address(throttled_server):
    first, second, elsewhere = unique("t"), unique("t"), unique("t")
    assert (await register(throttled_server, first, "a good password", "127.0.0.7")).get("type") == "result"
    refused = await register(throttled_server, second, "a good password", "127.0.0.7")
    assert condition(refused) == "not-acceptable"
    assert error_of(refused).get("type") == "wait"
    assert (await register(throttled_server, elsewhere, "a good password", "127.0.0.8")).get("type") == "result"
    assert not await can_log_in(throttled_server, second, "a good password")
