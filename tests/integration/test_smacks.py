"""XEP-0198 Stream Management end to end, over raw sockets (and slixmpp's resumption):
acks, resumption after an abrupt TCP drop, takeover of a half-dead stream, the
hibernation timeout sending the unacknowledged message to offline storage, the limits,
and the errors of sections 3 to 6."""

import asyncio
import re

import pytest

from tests.conftest import AccountPool
from tests.support.raw import RawClient
from tests.support.server import XmppdProcess
from tests.support.smacks import NS_SM, attribute, authenticated, bind, drop, enable, managed_login, ping, send_message
from xmppd.client import DEFAULT_PLUGINS, Client

TIMEOUT = 10.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = XmppdProcess(tmp_path_factory.mktemp("smacks"), c2s_section="auth_failure_delay = 0").start()
    process.accounts = AccountPool(process)
    yield process
    process.stop()


def users(server, count=2):
    return [server.accounts.local() for _ in range(count)]


async def logged_in(server, user, resource="raw"):
    client = RawClient(server.domain)
    await client.login(server.port, user, "secret", resource=resource)
    return client


# ------------------------------------------------------------------ acks


async def test_feature_offered_after_authentication_only(server):
    (alice,) = users(server, 1)
    client = RawClient(server.domain)
    await client.connect(server.port)
    features = await client.open_stream()
    assert NS_SM not in features.group(1)
    await client.close()
    client, features = await authenticated(server, alice)
    assert f'<sm xmlns="{NS_SM}"/>' in features or f"<sm xmlns='{NS_SM}'/>" in features
    await client.close()


async def test_server_counts_handled_stanzas_and_requests_acks(server):
    alice, bob = users(server)
    client = await logged_in(server, alice)
    enabled = await enable(client, resume=False)
    assert attribute(enabled.group(1), "resume") is None and attribute(enabled.group(1), "id") is None
    await client.send(f"<r xmlns='{NS_SM}'/>")
    assert attribute((await client.expect(r"<a ([^>]*)/>")).group(1), "h") == "0"
    await send_message(client, f"{bob}@{server.domain}", "stored for later")  # bob is offline
    await client.send(f"<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq><r xmlns='{NS_SM}'/>")
    ack = await client.expect(r"<a ([^>]*)/>")
    assert attribute(ack.group(1), "h") == "2"
    # The pong went out first, then the server asked for an ack of it.
    assert re.search(rf"""<iq[^>]*id=["']p["'].*<r xmlns=["']{NS_SM}["']/>""", ack.string[: ack.start()])
    await client.send(f"<a xmlns='{NS_SM}' h='1'/>")
    await ping(client, "sync")
    await client.close()


# ------------------------------------------------------------------ resumption


async def test_resume_after_abrupt_drop_delivers_the_message_sent_meanwhile_once(server):
    alice, bob = users(server)
    phone, sm_id = await managed_login(server, alice, "phone")
    sender = await logged_in(server, bob)
    await send_message(sender, f"{alice}@{server.domain}", "first", "m1")
    await phone.expect(r"<body>first</body>")
    drop(phone)  # handled: the presence echo and "first"
    await server.wait_for_log(f"event=hibernating jid={alice}@{server.domain}/phone")
    await send_message(sender, f"{alice}@{server.domain}", "second", "m2")  # stored offline
    await ping(sender, "s1")

    phone, _ = await authenticated(server, alice)
    await phone.send(f"<resume xmlns='{NS_SM}' previd='{sm_id}' h='2'/>")
    resumed = await phone.expect(r"<resumed ([^>]*)/>")
    assert attribute(resumed.group(1), "previd") == sm_id
    assert attribute(resumed.group(1), "h") == "1"  # the client's one presence
    second = await phone.expect(r"<message[^>]*>(?:(?!</message>).)*<body>second</body>.*?</message>")
    assert re.search(r"<delay[^>]*urn:xmpp:delay", second.group(0))
    received = second.string[: second.end()] + await ping(phone, "after-resume")
    assert received.count("<body>second</body>") == 1
    assert "<body>first</body>" not in received

    await send_message(sender, f"{alice}@{server.domain}", "third")
    await phone.expect(r"<body>third</body>")  # the resumed session is the live one
    await phone.close()
    await sender.close()


async def test_acknowledged_stanzas_are_not_resent(server):
    alice, bob = users(server)
    phone, sm_id = await managed_login(server, alice, "phone")
    sender = await logged_in(server, bob)
    await send_message(sender, f"{alice}@{server.domain}", "acked")
    await phone.expect(r"<body>acked</body>")
    await phone.send(f"<a xmlns='{NS_SM}' h='2'/>")
    await ping(phone, "p1")
    drop(phone)
    phone, _ = await authenticated(server, alice)
    await phone.send(f"<resume xmlns='{NS_SM}' previd='{sm_id}' h='2'/>")
    await phone.expect(r"<resumed [^>]*/>")
    received = await ping(phone, "p2")
    assert "<body>acked</body>" not in received
    await phone.close()
    await sender.close()


async def test_resume_takes_over_a_half_dead_stream(server):
    alice, bob = users(server)
    old, sm_id = await managed_login(server, alice, "phone")
    new, _ = await authenticated(server, alice)
    await new.send(f"<resume xmlns='{NS_SM}' previd='{sm_id}' h='1'/>")
    await new.expect(r"<resumed [^>]*/>")
    closed = await old.closed()
    assert re.search(r"<stream:error><conflict", closed)
    sender = await logged_in(server, bob)
    await send_message(sender, f"{alice}@{server.domain}", "to the new stream")
    await new.expect(r"<body>to the new stream</body>")
    await new.close()
    await sender.close()


async def test_hibernation_timeout_moves_the_message_to_offline_storage(server):
    alice, bob = users(server)
    phone, sm_id = await managed_login(server, alice, "phone", max_=1)
    sender = await logged_in(server, bob)
    await send_message(sender, f"{alice}@{server.domain}", "kept safe", "m1")
    await phone.expect(r"<body>kept safe</body>")
    drop(phone)  # unacknowledged
    await server.wait_for_log(f"event=hibernation-expired jid={alice}@{server.domain}/phone")

    late, _ = await authenticated(server, alice)
    await late.send(f"<resume xmlns='{NS_SM}' previd='{sm_id}' h='2'/>")
    failed = await late.expect(r"<failed ([^>]*)>(.*?)</failed>")
    assert attribute(failed.group(1), "h") == "1"  # what the old session had handled
    assert "item-not-found" in failed.group(2)
    await bind(late, "tablet")  # the stream goes on after <failed/>
    await late.send("<presence/>")
    await late.expect(r"<body>kept safe</body>")
    received = await ping(late, "p")
    assert "kept safe" not in received  # exactly once
    await late.close()
    await sender.close()


async def test_clean_close_sends_unacknowledged_messages_to_offline_storage(server):
    alice, bob = users(server)
    phone, _ = await managed_login(server, alice, "phone")
    sender = await logged_in(server, bob)
    await send_message(sender, f"{alice}@{server.domain}", "not acked")
    await phone.expect(r"<body>not acked</body>")
    await phone.send("</stream:stream>")
    await phone.closed()
    again = await logged_in(server, alice, "again")
    await again.send("<presence/>")
    await again.expect(r"<body>not acked</body>")
    await again.close()
    await sender.close()


async def test_unacknowledged_message_goes_to_another_available_resource(server):
    alice, bob = users(server)
    desktop = await logged_in(server, alice, "desktop")
    await desktop.send("<presence/>")
    phone, _ = await managed_login(server, alice, "phone", max_=1)
    sender = await logged_in(server, bob)
    await send_message(sender, f"{alice}@{server.domain}/phone", "for the phone")
    await phone.expect(r"<body>for the phone</body>")
    drop(phone)
    returned = await desktop.expect(r"<message[^>]*>(?:(?!</message>).)*<body>for the phone</body>.*?</message>")
    assert "urn:xmpp:delay" in returned.group(0)
    await desktop.close()
    await sender.close()


async def test_while_another_resource_is_connected_the_sleeping_one_still_gets_its_message(server):
    """Only a user with every resource asleep has messages stored offline: with the
    desktop connected, a message to the hibernating phone waits for the phone's resume
    and is not handed to the desktop as an offline message."""
    alice, bob = users(server)
    desktop = await logged_in(server, alice, "desktop")
    await desktop.send("<presence/>")
    phone, sm_id = await managed_login(server, alice, "phone")
    drop(phone)
    await server.wait_for_log(f"event=hibernating jid={alice}@{server.domain}/phone")
    sender = await logged_in(server, bob)
    await send_message(sender, f"{alice}@{server.domain}/phone", "for the phone")
    await ping(sender, "routed")
    assert "for the phone" not in await ping(desktop, "nothing-for-me")

    phone, _ = await authenticated(server, alice)
    await phone.send(f"<resume xmlns='{NS_SM}' previd='{sm_id}' h='1'/>")
    await phone.expect(r"<resumed [^>]*/>")
    await phone.expect(r"<body>for the phone</body>")  # from its backlog
    assert "<body>for the phone</body>" not in await ping(phone, "after-resume")
    await phone.close()
    await desktop.close()
    await sender.close()


async def test_slixmpp_resumes_and_gets_what_was_sent_meanwhile(server):
    """slixmpp keeps its SM-ID across a reconnection of the same client object and sends
    <resume/> before binding; its unacked queue is resent by itself after <resumed/>."""
    alice, bob = users(server)
    phone = Client(
        f"{alice}@{server.domain}/phone", "secret", verify_tls=False, plugins=DEFAULT_PLUGINS + ("xep_0198",)
    )
    events = asyncio.Queue()
    phone.add_event_handler("sm_enabled", lambda stanza: events.put_nowait("enabled"))
    phone.add_event_handler("session_resumed", lambda stanza: events.put_nowait("resumed"))
    phone.add_event_handler("message", lambda message: events.put_nowait(message["body"]))
    await phone.login("127.0.0.1", server.port)
    phone.send_presence()
    assert await asyncio.wait_for(events.get(), TIMEOUT) == "enabled"
    sender = await logged_in(server, bob)
    await send_message(sender, f"{alice}@{server.domain}", "one")
    assert await asyncio.wait_for(events.get(), TIMEOUT) == "one"
    phone.transport.abort()
    await send_message(sender, f"{alice}@{server.domain}", "two")
    phone.connect("127.0.0.1", server.port)
    assert await asyncio.wait_for(events.get(), TIMEOUT) == "resumed"
    assert await asyncio.wait_for(events.get(), TIMEOUT) == "two"
    await send_message(sender, f"{alice}@{server.domain}", "three")
    assert await asyncio.wait_for(events.get(), TIMEOUT) == "three"  # "two" came once
    await phone.logout()
    await sender.close()


# ------------------------------------------------------------------ errors


async def test_enable_twice_fails_and_the_stream_goes_on(server):
    (alice,) = users(server, 1)
    client = await logged_in(server, alice)
    await enable(client)
    await client.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
    failed = await client.expect(r"<failed [^>]*>(.*?)</failed>")
    assert '<unexpected-request xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/>' in failed.group(1)
    await ping(client, "still-here")
    await client.close()


async def test_enable_before_bind_fails_and_bind_still_works(server):
    (alice,) = users(server, 1)
    client, _ = await authenticated(server, alice)
    await client.send(f"<enable xmlns='{NS_SM}'/>")
    failed = await client.expect(r"<failed [^>]*>(.*?)</failed>")
    assert "unexpected-request" in failed.group(1)
    await bind(client, "late")
    await enable(client)
    await client.close()


async def test_resume_with_unknown_id_fails_and_bind_still_works(server):
    (alice,) = users(server, 1)
    client, _ = await authenticated(server, alice)
    await client.send(f"<resume xmlns='{NS_SM}' previd='no-such-id' h='0'/>")
    failed = await client.expect(r"<failed( [^>]*)?>(.*?)</failed>")
    assert "item-not-found" in failed.group(2) and "h=" not in (failed.group(1) or "")
    await bind(client, "fresh")
    await client.close()


async def test_resume_of_another_accounts_session_is_not_found(server):
    alice, mallory = users(server)
    phone, sm_id = await managed_login(server, alice, "phone")
    thief, _ = await authenticated(server, mallory)
    await thief.send(f"<resume xmlns='{NS_SM}' previd='{sm_id}' h='0'/>")
    failed = await thief.expect(r"<failed[^>]*>(.*?)</failed>")
    assert "item-not-found" in failed.group(1)
    await ping(phone, "untouched")
    await thief.close()
    await phone.close()


async def test_resume_without_h_is_a_bad_request(server):
    (alice,) = users(server, 1)
    phone, sm_id = await managed_login(server, alice, "phone")
    other, _ = await authenticated(server, alice)
    await other.send(f"<resume xmlns='{NS_SM}' previd='{sm_id}'/>")
    failed = await other.expect(r"<failed[^>]*>(.*?)</failed>")
    assert "bad-request" in failed.group(1)
    await other.close()
    await phone.close()


async def test_resume_after_bind_is_unexpected(server):
    (alice,) = users(server, 1)
    phone, sm_id = await managed_login(server, alice, "phone")
    await phone.send(f"<resume xmlns='{NS_SM}' previd='{sm_id}' h='0'/>")
    failed = await phone.expect(r"<failed[^>]*>(.*?)</failed>")
    assert "unexpected-request" in failed.group(1)
    await ping(phone, "p")
    await phone.close()


async def test_impossible_h_on_resume_is_a_stream_error_and_loses_nothing(server):
    alice, bob = users(server)
    phone, sm_id = await managed_login(server, alice, "phone")
    sender = await logged_in(server, bob)
    await send_message(sender, f"{alice}@{server.domain}", "precious")
    await phone.expect(r"<body>precious</body>")
    drop(phone)  # two stanzas sent to it

    liar, _ = await authenticated(server, alice)
    await liar.send(f"<resume xmlns='{NS_SM}' previd='{sm_id}' h='7'/>")
    closed = await liar.closed()
    assert re.search(
        r"<stream:error><undefined-condition[^>]*/>"
        rf"<handled-count-too-high xmlns=[\"']{NS_SM}[\"'] h=[\"']7[\"'] send-count=[\"']2[\"']/>",
        closed,
    )

    phone, _ = await authenticated(server, alice)
    await phone.send(f"<resume xmlns='{NS_SM}' previd='{sm_id}' h='1'/>")
    await phone.expect(r"<resumed [^>]*/>")
    await phone.expect(r"<body>precious</body>")
    assert "<body>precious</body>" not in await ping(phone, "p")
    await phone.close()
    await sender.close()


async def test_impossible_h_in_an_ack_is_a_stream_error(server):
    (alice,) = users(server, 1)
    client = await logged_in(server, alice)
    await enable(client)
    await client.send(f"<a xmlns='{NS_SM}' h='3'/>")
    closed = await client.closed()
    assert re.search(
        rf"<undefined-condition[^>]*/><handled-count-too-high xmlns=[\"']{NS_SM}[\"'] h=[\"']3[\"'] "
        r"send-count=[\"']0[\"']/>",
        closed,
    )


# ------------------------------------------------------------------ limits


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory):
    process = XmppdProcess(
        tmp_path_factory.mktemp("smacks-strict"),
        "[extensions.smacks]\nack_timeout = 1\nwindow = 3\n",
        c2s_section="auth_failure_delay = 0",
    ).start()
    process.accounts = AccountPool(process)
    yield process
    process.stop()


async def test_unanswered_ack_request_drops_a_half_dead_connection_into_hibernation(strict_server):
    (alice,) = users(strict_server, 1)
    phone, sm_id = await managed_login(strict_server, alice, "phone")  # the echo came with an <r/>
    closed = await phone.closed()  # never answered: cut, with no stream close
    assert "</stream:stream>" not in closed and "<stream:error>" not in closed
    phone, _ = await authenticated(strict_server, alice)
    await phone.send(f"<resume xmlns='{NS_SM}' previd='{sm_id}' h='1'/>")
    await phone.expect(r"<resumed [^>]*/>")
    await phone.close()


async def test_a_full_window_waits_for_acks_instead_of_ending_the_session(strict_server):
    alice, bob = users(strict_server)
    phone, _ = await managed_login(strict_server, alice, "phone")
    await phone.send(f"<a xmlns='{NS_SM}' h='1'/>")  # the echo: nothing unacknowledged
    sender = await logged_in(strict_server, bob)
    for index in range(7):  # window = 3: four wait in the backlog
        await send_message(sender, f"{alice}@{strict_server.domain}", f"burst {index}")
    await ping(sender, "all-sent")
    for index in range(3):
        await phone.expect(rf"<body>burst {index}</body>")
    await phone.send(f"<a xmlns='{NS_SM}' h='4'/>")  # the next three come
    for index in range(3, 6):
        await phone.expect(rf"<body>burst {index}</body>")
    await phone.send(f"<a xmlns='{NS_SM}' h='7'/>")
    rest = await phone.expect(r"<body>burst 6</body>")
    assert "<stream:error>" not in rest.string
    await phone.send(f"<a xmlns='{NS_SM}' h='8'/>")
    await ping(phone, "still-open")
    await phone.close()
    await sender.close()
