"""End to end on the memory storage backend (``[storage] default = "memory"``): users
register in-band, log in, subscribe to each other, leave offline messages and read the
archive, on a server that writes no database; and nothing is left after a restart."""

import asyncio

import pytest

from tests.conftest import unique
from tests.support.inbox import NS_ROSTER, message
from tests.support.messaging import archive, bare, bodies, connect, round_trip, send, subscribe_both, with_id
from tests.support.server import XmppdProcess, can_log_in
from xmppd.client import Client

NS_DELAY = "urn:xmpp:delay"
PASSWORD = "secret"  # what tests.support.inbox.online logs in with

MEMORY_CONFIG = f"""
[storage]
default = "memory"

[extensions.register]
allow_registration = true
registration_throttle_seconds = 0
min_password_length = {len(PASSWORD)}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = XmppdProcess(
        tmp_path_factory.mktemp("memory"), MEMORY_CONFIG, server_section="graceful_shutdown_timeout = 1"
    ).start()
    yield process
    process.stop()


async def register(server) -> str:
    """A new account, registered in-band (XEP-0077) the way a client does: the form
    first, then the username and password; its bare JID."""
    jid = f"{unique('mem')}@{server.domain}"
    client = Client(jid, PASSWORD, verify_tls=False)
    client.plugin["xep_0077"].force_registration = True
    registered = asyncio.get_running_loop().create_future()

    async def fill_in(form):
        answer = client.Iq()
        answer["type"] = "set"
        answer["register"]["username"] = client.boundjid.user
        answer["register"]["password"] = client.password
        await answer.send()
        registered.set_result(True)

    client.add_event_handler("register", fill_in)
    await client.login("127.0.0.1", server.port)
    assert await asyncio.wait_for(registered, 10)
    await client.logout()
    return jid


@pytest.fixture
async def login(server):
    """Log users in (tests.support.messaging.connect); log them out after the test."""
    opened = []

    async def login(jid, resource="phone"):
        user = await connect(server, jid, resource)
        opened.append(user)
        return user

    yield login
    for user in opened:
        if user.client.is_connected():
            await user.logout()


def files_in(server) -> list[str]:
    data = server.directory / "data"
    return sorted(path.name for path in data.iterdir()) if data.exists() else []


async def test_memory_offline_message_is_delivered_at_login_and_archived(server, login):
    alice, bob = await register(server), await register(server)
    a = await login(alice)
    said = [f"while you were away {n}" for n in range(3)]
    for body in said:
        send(a, bob, body=body)
    await round_trip(a)

    b = await login(bob)
    for body in said:
        got = await b.inbox.wait(message(from_=a.jid, body=body))
        assert got.find(f"{{{NS_DELAY}}}delay") is not None  # it waited offline
    assert [s.findtext("{jabber:client}body") for s in b.inbox.received(message(from_=a.jid))] == said

    # MAM: both archives hold the messages, in order, with the other party.
    for user in (a, b):
        results, fin = await archive(user, {"with": bare(alice if user is b else bob)})
        assert bodies(results) == said and fin.get("complete") == "true"
    # The answer goes both ways, and is archived too.
    reply = send(b, alice, body="back now")
    await a.inbox.wait(with_id(reply))
    results, _ = await archive(a)
    assert bodies(results) == said + ["back now"]
    assert not [name for name in files_in(server) if "sqlite" in name]  # no database was written


async def test_memory_roster_subscription_and_version(server, login):
    alice, bob = await register(server), await register(server)
    a, b = await login(alice), await login(bob)
    await subscribe_both(a, b)
    result = await a.iq("get", bare(a.jid), f"<query xmlns='{NS_ROSTER}'/>")
    items = {item.get("jid"): item.get("subscription") for item in result.iter(f"{{{NS_ROSTER}}}item")}
    assert items == {bob: "both"}
    version = result.find(f"{{{NS_ROSTER}}}query").get("ver")
    again = await a.iq("get", bare(a.jid), f"<query xmlns='{NS_ROSTER}' ver='{version}'/>")
    assert again.get("type") == "result" and len(again) == 0  # XEP-0237: nothing new


async def test_memory_keeps_nothing_across_a_restart(server):
    """The last test of the module: it restarts the server."""
    jid = await register(server)
    assert await can_log_in(server, jid, PASSWORD)
    server.stop()
    server.start()
    assert not await can_log_in(server, jid, PASSWORD)
