"""SASL2 (XEP-0388) with Bind 2 (XEP-0386) and FAST (XEP-0484) end to end, from a raw
client that follows the XEPs: SCRAM without a stream restart, a resource from the
client's tag, XEP-0198 and carbons enabled inline, the same failures and login budgets
as RFC 6120 SASL; tokens issued, used, rotated, invalidated and expired."""

import asyncio
import base64
import calendar
import re
import time
import uuid

import pytest

from tests.conftest import unique
from tests.support.inbox import online
from tests.support.raw import NS_SASL2, RawClient
from tests.support.smacks import ping
from xmppd.client import Client

NS_BIND2 = "urn:xmpp:bind:0"
NS_SM = "urn:xmpp:sm:3"
NS_CARBONS = "urn:xmpp:carbons:2"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_FAST = "urn:xmpp:fast:0"
NS_CSI = "urn:xmpp:csi:0"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.support.server import XmppdProcess

    process = XmppdProcess(tmp_path_factory.mktemp("sasl2"), c2s_section="auth_failure_delay = 0").start()
    yield process
    process.stop()


def bind2(tag: str | None = None, inline: str = "") -> str:
    tag = f"<tag>{tag}</tag>" if tag else ""
    return f"<bind xmlns='{NS_BIND2}'>{tag}{inline}</bind>"


def user_agent(agent_id: str) -> str:
    return f"<user-agent id='{agent_id}'><software>raw</software><device>test</device></user-agent>"


async def secured(server, source: str | None = None) -> tuple[RawClient, str]:
    raw = RawClient(source=source)
    return raw, await raw.secure(server.port)


async def test_features_offer_sasl2_and_bind2_with_its_inline_features(server):
    raw, features = await secured(server)
    authentication = re.search(rf"<authentication xmlns=.{NS_SASL2}.>(.*?)</authentication>", features).group(1)
    mechanisms = re.findall(r"<mechanism>([^<]+)</mechanism>", authentication)
    assert {"SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"} <= set(mechanisms)
    inline = re.search(rf"<inline><bind xmlns=.{NS_BIND2}.><inline>(.*?)</inline></bind>(.*)</inline>", authentication)
    assert set(re.findall(r"<feature var=.([^'\"]+).\s*/>", inline.group(1))) == {NS_SM, NS_CARBONS, NS_CSI}
    fast = re.search(rf"<fast xmlns=.{NS_FAST}.>(.*?)</fast>", inline.group(2)).group(1)  # XEP-0484
    assert re.findall(r"<mechanism>([^<]+)</mechanism>", fast) == [  # TLS 1.3: no tls-unique
        "HT-SHA-256-EXPR",
        "HT-SHA-256-ENDP",
        "HT-SHA-256-NONE",
    ]
    assert "<sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'>" in features  # XEP-0440
    await raw.close()


async def test_scram_and_bind2_with_inline_sm_and_carbons_then_chat(server):
    user, friend = unique(), unique()
    jid, friend_jid = server.adduser(user), server.adduser(friend)
    raw, _ = await secured(server)
    outcome = await raw.authenticate2(
        user,
        "secret",
        "SCRAM-SHA-256",
        user_agent(str(uuid.uuid4()))
        + bind2("RawChat", f"<enable xmlns='{NS_SM}' resume='true'/><enable xmlns='{NS_CARBONS}'/>"),
    )
    assert outcome.group(1) == "success", outcome.group(0)
    success = outcome.group(2)
    # The server proved it knows the password: its SCRAM final message is the additional data.
    data = re.search(r"<additional-data>([^<]+)</additional-data>", success).group(1)
    assert base64.b64decode(data) == b"v=" + base64.b64encode(raw.server_signature)
    # The full JID: the tag, '/', a server-generated suffix.
    full_jid = re.search(r"<authorization-identifier>([^<]+)</authorization-identifier>", success).group(1)
    assert re.fullmatch(rf"{re.escape(jid)}/RawChat/[^/]+", full_jid), full_jid
    bound = re.search(rf"<bound xmlns=.{NS_BIND2}.>(.*)</bound>", success).group(1)
    assert re.search(rf"<enabled xmlns=.{NS_SM}.[^>]*resume=.true.", bound), bound
    assert re.search(r"<metadata xmlns=.urn:xmpp:mam:2./>", bound), bound  # an empty archive
    # No stream restart: the features of the bound stream follow at once, without a header.
    features = await raw.expect(r"<stream:features>(.*?)</stream:features>|<stream:features/>")
    assert "<stream:stream" not in raw.buffer and "xmpp-bind" not in (features.group(1) or "")
    assert NS_SM not in (features.group(1) or "")  # enabled already: not offered again

    await raw.send(f"<presence/><message to='{friend_jid}' type='chat' id='m1'><body>hello</body></message>")
    friend_client, friend_inbox = await online(server, friend_jid, "desk")
    await raw.send(f"<message to='{friend_jid}' type='chat' id='m2'><body>hello again</body></message>")
    received = await friend_inbox.wait(lambda s: s.get("id") == "m2")
    assert received.get("from") == full_jid
    friend_client.send_raw(f"<message to='{full_jid}' type='chat' id='m3'><body>hi</body></message>")
    await raw.expect(r"<message [^>]*id=.m3.[^>]*>.*?<body>hi</body>")
    # Stream management counts from the inline <enable/>: presence and two messages.
    await raw.send(f"<r xmlns='{NS_SM}'/>")
    await raw.expect(rf"<a xmlns=.{NS_SM}. h=.3./>")
    # Carbons were enabled inline: what another resource of the user sends is copied.
    other, _ = await online(server, jid, "phone")
    other.send_raw(f"<message to='{friend_jid}' type='chat' id='m4'><body>from my phone</body></message>")
    await raw.expect(rf"<sent xmlns=.{NS_CARBONS}.>.*?id=.m4.")
    await other.logout()
    await friend_client.logout()
    await raw.close()
    # The next Bind 2 tells where the archive stands (XEP-0386 3.2, XEP-0313 metadata).
    raw, _ = await secured(server)
    outcome = await raw.authenticate2(user, "secret", extra=bind2("RawChat"))
    assert re.search(
        r"<metadata xmlns=.urn:xmpp:mam:2.><start id=.[^']+. timestamp=.[^']+./>"
        r"<end id=.[^']+. timestamp=.[^']+./></metadata>",
        outcome.group(2),
    ), outcome.group(2)
    await raw.close()


async def test_sasl2_without_bind2_names_the_bare_jid_and_offers_rfc6120_bind(server):
    user = unique()
    jid = server.adduser(user)
    raw, _ = await secured(server)
    outcome = await raw.authenticate2(user, "secret", "SCRAM-SHA-1")
    assert outcome.group(1) == "success"
    assert f"<authorization-identifier>{jid}</authorization-identifier>" in outcome.group(2)
    await raw.expect(r"<stream:features>.*?<bind xmlns=.urn:ietf:params:xml:ns:xmpp-bind./>.*?</stream:features>")
    await raw.send(
        "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>legacy</resource></bind></iq>"
    )
    await raw.expect(rf"<jid>{re.escape(jid)}/legacy</jid>")
    await raw.close()


async def test_wrong_password_fails_binds_nothing_and_counts_against_the_login_budget(make_xmppd):
    server = make_xmppd(c2s_section="auth_failures_per_ip = 2\nauth_failure_delay = 0").start()
    user = unique()
    server.adduser(user, "pencil")
    raw, _ = await secured(server, "127.0.0.21")
    for _ in range(2):
        outcome = await raw.authenticate2(user, "crayon", "SCRAM-SHA-256", bind2("Guess"))
        assert outcome.group(1) == "failure"
        assert f"<not-authorized xmlns='{NS_SASL}'/>" in outcome.group(2)
    assert "bound" not in raw.buffer
    assert await server.metric('xmppd_auth_failures_total{mechanism="SCRAM-SHA-256"}') == 2
    await raw.close()
    # The address used up its budget: even the right password is not checked now.
    raw, _ = await secured(server, "127.0.0.21")
    initial = base64.b64encode(f"n,,n={user},r=abcdefgh".encode()).decode()
    await raw.send(
        f"<authenticate xmlns='{NS_SASL2}' mechanism='SCRAM-SHA-256'>"
        f"<initial-response>{initial}</initial-response>{bind2('Guess')}</authenticate>"
    )
    refused = await raw.expect(rf"<failure xmlns=.{NS_SASL2}.>(.*?)</failure>")
    assert f"<temporary-auth-failure xmlns='{NS_SASL}'/>" in refused.group(1)
    assert await server.limit_reached("c2s.auth_failures_per_ip") == 1
    await raw.close()
    # From elsewhere the user logs in.
    raw, _ = await secured(server, "127.0.0.22")
    assert (await raw.authenticate2(user, "pencil", "SCRAM-SHA-256", bind2("Right"))).group(1) == "success"
    await raw.close()


async def test_bind2_before_authentication_is_refused(server):
    raw, _ = await secured(server)
    await raw.send(bind2("Sneaky"))
    text = await raw.closed()
    assert "<not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in text and "bound" not in text


async def test_bind2_after_rfc6120_sasl_is_refused(server):
    user = unique()
    server.adduser(user)
    raw, _ = await secured(server)
    await raw.authenticate(user, "secret", "SCRAM-SHA-256")
    await raw.open_stream()
    await raw.send(bind2("Late"))
    text = await raw.closed()
    assert "<stream:error>" in text and "bound" not in text


async def test_mechanism_not_offered_gets_invalid_mechanism(server):
    raw, _ = await secured(server)
    await raw.send(f"<authenticate xmlns='{NS_SASL2}' mechanism='CRAM-MD5'/>")
    failure = await raw.expect(rf"<failure xmlns=.{NS_SASL2}.>(.*?)</failure>")
    assert f"<invalid-mechanism xmlns='{NS_SASL}'/>" in failure.group(1)
    await raw.close()


async def test_a_new_session_of_the_same_client_ends_its_earlier_one(server):
    """XEP-0386 3.2: the <user-agent/> id identifies the client; each resource is new."""
    user = unique()
    jid = server.adduser(user)
    agent = user_agent(str(uuid.uuid4()))
    first, _ = await secured(server)
    assert (await first.authenticate2(user, "secret", extra=agent + bind2("Same"))).group(1) == "success"
    other, _ = await online(server, jid, "other")  # another client of the user stays
    second, _ = await secured(server)
    outcome = await second.authenticate2(user, "secret", extra=agent + bind2("Same"))
    assert outcome.group(1) == "success"
    assert "<conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in await first.closed()
    assert other.is_connected()
    await other.logout()
    await second.close()


async def test_rfc6120_login_still_works(server):
    jid = server.adduser(unique())
    client = Client(jid, "secret", verify_tls=False, sasl_mech="SCRAM-SHA-256")
    await client.login("127.0.0.1", server.port)
    assert client.boundjid.bare == jid
    await client.logout()


# ------------------------------------------------------------------ XEP-0484 FAST


def fast(extra: str = "") -> str:
    return f"<fast xmlns='{NS_FAST}'{extra}/>"


def request_token(mechanism: str = "HT-SHA-256-NONE") -> str:
    return f"<request-token xmlns='{NS_FAST}' mechanism='{mechanism}'/>"


def token_in(success: str) -> tuple[str, str] | None:
    """The (token, expiry) of a <token/> in a <success/>."""
    match = re.search(rf"<token xmlns=.{NS_FAST}.([^>]*)/>", success)
    if match is None:
        return None
    attributes = dict(re.findall(r"(\w+)=['\"]([^'\"]*)['\"]", match.group(1)))
    return attributes["token"], attributes["expiry"]


async def token_login(
    server, user: str, token: str, agent: str, mechanism: str = "HT-SHA-256-NONE", extra: str = ""
) -> tuple[str, str]:
    """A FAST login on a fresh connection: (success | failure, its content)."""
    raw, _ = await secured(server)
    outcome = await raw.authenticate_token(user, token, mechanism, user_agent(agent) + fast() + extra)
    if outcome.group(1) == "success":
        data = re.search(r"<additional-data>([^<]+)</additional-data>", outcome.group(2)).group(1)
        assert base64.b64decode(data) == raw.server_signature  # the server holds the token too
    await raw.close()
    return outcome.group(1), outcome.group(2)


async def password_login_with_token(
    server, user: str, agent: str, mechanism: str = "HT-SHA-256-NONE"
) -> tuple[str, str]:
    raw, _ = await secured(server)
    outcome = await raw.authenticate2(user, "secret", extra=user_agent(agent) + request_token(mechanism))
    assert outcome.group(1) == "success", outcome.group(0)
    await raw.close()
    return token_in(outcome.group(2))


async def test_a_token_asked_for_logs_in_for_its_client_and_mechanism_only(server):
    user = unique()
    jid = server.adduser(user)
    agent = str(uuid.uuid4())
    token, expiry = await password_login_with_token(server, user, agent)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", expiry)  # XEP-0082
    outcome, success = await token_login(server, user, token, agent, extra=bind2("Fast"))
    assert outcome == "success" and re.search(rf"<authorization-identifier>{re.escape(jid)}/Fast/", success)
    assert token_in(success) is None  # not due for rotation
    failures = await server.metric('xmppd_auth_failures_total{mechanism="HT-SHA-256-NONE"}')
    # Another client, another mechanism, another token: refused, and counted as failed logins.
    assert (await token_login(server, user, token, str(uuid.uuid4())))[0] == "failure"
    assert (await token_login(server, user, token, agent, "HT-SHA-256-EXPR"))[0] == "failure"
    outcome, failure = await token_login(server, user, "not" + token, agent)
    assert outcome == "failure" and f"<not-authorized xmlns='{NS_SASL}'/>" in failure
    assert await server.metric('xmppd_auth_failures_total{mechanism="HT-SHA-256-NONE"}') == failures + 2
    # Invalidated by its client, the token logs in no more.
    raw, _ = await secured(server)
    outcome = await raw.authenticate_token(user, token, extra=user_agent(agent) + fast(" invalidate='true'"))
    assert outcome.group(1) == "success" and token_in(outcome.group(2)) is None
    await raw.close()
    assert (await token_login(server, user, token, agent))[0] == "failure"


async def test_rotated_token_is_refused_once_its_successor_was_used(make_xmppd):
    server = make_xmppd(extra_config="[extensions.fast]\nrotate_after = 0\n").start()
    user = unique()
    server.adduser(user)
    agent = str(uuid.uuid4())
    first, _ = await password_login_with_token(server, user, agent)
    outcome, success = await token_login(server, user, first, agent)
    assert outcome == "success"
    second, _ = token_in(success)  # rotated at once
    assert second != first
    # Until the new token is used, the old one still logs in (the new one may have been lost).
    outcome, success = await token_login(server, user, first, agent)
    assert outcome == "success"
    third, _ = token_in(success)
    assert (await token_login(server, user, second, agent))[0] == "failure"  # replaced unused
    assert (await token_login(server, user, third, agent))[0] == "success"
    assert (await token_login(server, user, first, agent))[0] == "failure"


async def test_expired_token_gets_credentials_expired(make_xmppd):
    server = make_xmppd(extra_config="[extensions.fast]\ntoken_lifetime = 1\nrotate_after = 0\n").start()
    user = unique()
    server.adduser(user)
    agent = str(uuid.uuid4())
    token, expiry = await password_login_with_token(server, user, agent)
    # The token's lifetime is over once its expiry (whole seconds) has passed.
    expires = calendar.timegm(time.strptime(expiry, "%Y-%m-%dT%H:%M:%SZ"))
    await asyncio.sleep(max(0.0, expires + 1.1 - time.time()))
    outcome, failure = await token_login(server, user, token, agent)
    assert outcome == "failure" and f"<credentials-expired xmlns='{NS_SASL}'/>" in failure


async def test_a_token_bound_to_the_channel_logs_in_over_that_channel(server):
    user = unique()
    server.adduser(user)
    agent = str(uuid.uuid4())
    token, _ = await password_login_with_token(server, user, agent, "HT-SHA-256-EXPR")
    assert (await token_login(server, user, token, agent, "HT-SHA-256-EXPR"))[0] == "success"
    assert (await token_login(server, user, token, agent, "HT-SHA-256-NONE"))[0] == "failure"


async def test_clients_with_tokens_per_account_are_bounded(make_xmppd):
    server = make_xmppd(extra_config="[extensions.fast]\nmax_clients = 1\n").start()
    user = unique()
    server.adduser(user)
    first_agent, second_agent = str(uuid.uuid4()), str(uuid.uuid4())
    first, _ = await password_login_with_token(server, user, first_agent)
    second, _ = await password_login_with_token(server, user, second_agent)
    assert (await token_login(server, user, second, second_agent))[0] == "success"
    assert (await token_login(server, user, first, first_agent))[0] == "failure"  # its tokens went
    assert await server.limit_reached("extensions.fast.max_clients") == 1


async def test_xmppctl_lists_and_revokes_a_users_tokens(server):
    user = unique()
    jid = server.adduser(user)
    phone, laptop = str(uuid.uuid4()), str(uuid.uuid4())
    phone_token, _ = await password_login_with_token(server, user, phone)
    laptop_token, _ = await password_login_with_token(server, user, laptop, "HT-SHA-256-EXPR")
    listed = [line.split("\t") for line in server.ctl("tokens", jid).stdout.splitlines()]
    assert sorted((client, slot, mechanism) for client, slot, mechanism, _, _ in listed) == sorted(
        [(phone, "new", "HT-SHA-256-NONE"), (laptop, "new", "HT-SHA-256-EXPR")]
    )
    assert server.ctl("revoke-tokens", jid, phone).returncode == 0
    assert (await token_login(server, user, phone_token, phone))[0] == "failure"
    assert (await token_login(server, user, laptop_token, laptop, "HT-SHA-256-EXPR"))[0] == "success"
    assert server.ctl("revoke-tokens", jid).returncode == 0
    assert (await token_login(server, user, laptop_token, laptop, "HT-SHA-256-EXPR"))[0] == "failure"
    assert server.ctl("tokens", jid).stdout == ""
    assert server.ctl("revoke-tokens", jid, check=False).returncode == 1


async def test_resumption_inline_in_authenticate_takes_the_session_over(server):
    """XEP-0198 <resume/> inside <authenticate/>: <resumed/> in <success/>, no new resource;
    what the old stream had unacknowledged comes after the features."""
    user, friend = unique(), unique()
    server.adduser(user)
    friend_jid = server.adduser(friend)
    raw, features = await secured(server)
    assert re.search(rf"<authentication xmlns=.{NS_SASL2}.>.*<inline>.*<sm xmlns=.{NS_SM}./>.*</inline>", features)
    outcome = await raw.authenticate2(user, "secret", extra=bind2("Phone", f"<enable xmlns='{NS_SM}' resume='true'/>"))
    full_jid = re.search(r"<authorization-identifier>([^<]+)<", outcome.group(2)).group(1)
    previd = re.search(r"<enabled [^>]*id=.([^'\"]+).", outcome.group(2)).group(1)
    await raw.send("<presence/>")
    friend_client, _ = await online(server, friend_jid, "desk")
    friend_client.send_raw(f"<message to='{full_jid}' type='chat' id='lost'><body>are you there?</body></message>")
    await raw.expect(r"id=.lost.")
    raw.writer.transport.abort()  # the network goes, unacknowledged
    again, _ = await secured(server)
    outcome = await again.authenticate2(
        user, "secret", extra=f"<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>" + bind2("Phone")
    )
    assert outcome.group(1) == "success"
    assert f"<authorization-identifier>{full_jid}</authorization-identifier>" in outcome.group(2)
    assert re.search(rf"<resumed xmlns=.{NS_SM}. h=.1. previd=.{previd}./>", outcome.group(2)), outcome.group(2)
    assert "<bound" not in outcome.group(2)
    await again.expect(r"<stream:features>.*?</stream:features>")
    await again.expect(r"<message [^>]*id=.lost.")  # resent after <success/> and the features
    # An unknown SM-ID: the <failed/> in <success/>, and Bind 2 binds a new resource.
    third, _ = await secured(server)
    outcome = await third.authenticate2(
        user, "secret", extra=f"<resume xmlns='{NS_SM}' previd='gone' h='0'/>" + bind2("Phone")
    )
    assert re.search(rf"<failed xmlns=.{NS_SM}.><item-not-found", outcome.group(2)) and "<bound" in outcome.group(2)
    await friend_client.logout()
    await again.close()
    await third.close()


async def test_a_session_begins_inactive_when_bind2_says_so(server):
    """XEP-0386 with XEP-0352: what is not urgent waits until the client is active."""
    user, friend = unique(), unique()
    server.adduser(user)
    server.adduser(friend)
    raw, _ = await secured(server)
    outcome = await raw.authenticate2(
        user, "secret", extra=bind2("Idle", f"<enable xmlns='{NS_SM}'/><inactive xmlns='{NS_CSI}'/>")
    )
    full_jid = re.search(r"<authorization-identifier>([^<]+)<", outcome.group(2)).group(1)
    contact = await RawClient().login(server.port, friend, "secret")
    await contact.send(f"<presence to='{full_jid}'><status>held</status></presence>")
    await ping(contact, "routed")
    assert "held" not in await written_so_far(raw)
    await raw.send(f"<active xmlns='{NS_CSI}'/>")
    assert "held" in await written_so_far(raw)
    await contact.close()
    await raw.close()


async def written_so_far(client: RawClient) -> str:
    """Everything the server wrote to `client` (with XEP-0198 on) before it answered an <r/>."""
    await client.send(f"<r xmlns='{NS_SM}'/>")
    match = await client.expect(r"<a [^>]*/>")
    return match.string[: match.start()]
