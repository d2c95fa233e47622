"""End to end: XEP-0191 blocking: the list and its pushes, and blocked contacts kept out
both ways (messages, iqs, presence), on a real xmppd."""

import pytest
from lxml import etree

from tests.support.inbox import IQ, PRESENCE, presence
from tests.support.messaging import (
    BODY,
    archive,
    bare,
    bodies,
    connect,
    error_to,
    round_trip,
    send,
    subscribe_both,
    with_id,
)
from tests.support.muc import error_of, new_account
from tests.support.server import XmppdProcess
from xmppd.client import DEFAULT_PLUGINS, Client

NS_BLOCKING = "urn:xmpp:blocking"
NS_BLOCKING_ERRORS = "urn:xmpp:blocking:errors"
MAX_ITEMS = 5


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = XmppdProcess(
        tmp_path_factory.mktemp("blocking"),
        f"[extensions.blocking]\nmax_items = {MAX_ITEMS}\n",
        server_section="graceful_shutdown_timeout = 1",
    ).start()
    yield process
    process.stop()


def items(jids) -> str:
    return "".join(f"<item jid='{jid}'/>" for jid in jids)


async def block(user, *jids) -> etree._Element:
    return await user.iq("set", bare(user.jid), f"<block xmlns='{NS_BLOCKING}'>{items(jids)}</block>")


async def unblock(user, *jids) -> etree._Element:
    return await user.iq("set", bare(user.jid), f"<unblock xmlns='{NS_BLOCKING}'>{items(jids)}</unblock>")


async def blocklist(user) -> list[str]:
    result = await user.iq("get", bare(user.jid), f"<blocklist xmlns='{NS_BLOCKING}'/>")
    return [item.get("jid") for item in result.iterfind(f"{{{NS_BLOCKING}}}blocklist/{{{NS_BLOCKING}}}item")]


def push(verb: str, *jids):
    """A predicate: a block list push of `verb` with exactly these items."""

    def match(stanza):
        element = stanza.find(f"{{{NS_BLOCKING}}}{verb}")
        return (
            stanza.tag == IQ
            and stanza.get("type") == "set"
            and element is not None
            and [item.get("jid") for item in element] == list(jids)
        )

    return match


def blocked_error(stanza) -> bool:
    return (
        error_of(stanza) == ("cancel", "not-acceptable")
        and stanza.find(f"{{jabber:client}}error/{{{NS_BLOCKING_ERRORS}}}blocked") is not None
    )


async def test_block_list_pushes_and_persistence(server):
    alice, bob, carol = [await new_account(server) for _ in range(3)]
    a1 = await connect(server, alice, "a1")
    a2 = await connect(server, alice, "a2")
    quiet = await connect(server, alice, "quiet")  # never asks for the list: no pushes
    assert await blocklist(a1) == [] and await blocklist(a2) == []

    assert (await block(a1, bob, carol)).get("type") == "result"
    for user in (a1, a2):
        await user.inbox.wait(push("block", bob, carol))
    assert sorted(await blocklist(a2)) == sorted([bob, carol])
    assert (await unblock(a2, carol)).get("type") == "result"
    for user in (a1, a2):
        await user.inbox.wait(push("unblock", carol))
    assert (await unblock(a1, "nobody@localhost")).get("type") == "result"  # not listed: nothing to do

    a3 = await connect(server, alice, "a3")  # a new session finds the list stored
    assert await blocklist(a3) == [bob]
    assert (await unblock(a3)).get("type") == "result"  # unblock all
    for user in (a1, a2, a3):
        await user.inbox.wait(push("unblock"))
    assert await blocklist(a1) == []
    await round_trip(quiet)
    assert not quiet.inbox.received(lambda s: s.tag == IQ and s.get("type") == "set")
    for user in (a1, a2, a3, quiet):
        await user.logout()


async def test_blocked_contact_is_kept_out_both_ways(server):
    alice, bob = await new_account(server), await new_account(server)
    a, b = await connect(server, alice, "a"), await connect(server, bob, "b")
    await subscribe_both(a, b)
    await block(a, bob)
    # Section 3.3: bob sees alice go offline...
    await b.inbox.wait(presence("unavailable", from_=a.jid))

    # ...his messages bounce as if she were not there, and are not archived for her...
    msg = send(b, alice, body="let me in")
    assert error_of(await b.inbox.wait(error_to(msg))) == ("cancel", "service-unavailable")
    ping = await b.iq("get", a.jid, "<ping xmlns='urn:xmpp:ping'/>")
    assert error_of(ping) == ("cancel", "service-unavailable")
    # ...and hers to him are refused with <blocked/>.
    msg = send(a, bob, body="go away")
    assert blocked_error(await a.inbox.wait(error_to(msg)))
    assert blocked_error(await a.iq("get", b.jid, "<ping xmlns='urn:xmpp:ping'/>"))
    assert blocked_error(await a.inbox.wait(error_to(send(a, f"{bob}/b", body="to his resource"))))

    # Presence is not exchanged: broadcasts either way, probes unanswered.
    await a.send("<presence><show>away</show></presence>")
    await b.send("<presence><show>dnd</show></presence>")
    b2 = await connect(server, bob, "b2")  # its initial presence probes alice
    await round_trip(a)
    await round_trip(b)
    await round_trip(b2)
    assert not a.inbox.received(
        lambda s: (
            s.tag == PRESENCE
            and bare(s.get("from", "")) == bob
            and s.get("type") is None
            and s.findtext("{jabber:client}show") == "dnd"
        )
    )
    for user in (b, b2):
        assert not user.inbox.received(
            lambda s: (
                s.tag == PRESENCE
                and bare(s.get("from", "")) == alice
                and s.get("type") != "unavailable"
                and s.findtext("{jabber:client}show") == "away"
            )
        )
    assert not a.inbox.received(lambda s: s.findtext(BODY) == "let me in")
    assert "let me in" not in bodies((await archive(a))[0])

    # Unblocking: presence both ways again (hers sent, his probed), messages flow.
    await unblock(a, bob)
    await b.inbox.wait(
        lambda s: s.tag == PRESENCE and s.get("from") == a.jid and s.findtext("{jabber:client}show") == "away"
    )
    await a.inbox.wait(
        lambda s: s.tag == PRESENCE and s.get("from") == b.jid and s.findtext("{jabber:client}show") == "dnd"
    )
    msg = send(b, alice, body="friends again")
    await a.inbox.wait(with_id(msg))
    for user in (a, b, b2):
        await user.logout()


async def test_blocking_in_both_directions(server):
    alice, bob = await new_account(server), await new_account(server)
    a, b = await connect(server, alice, "a"), await connect(server, bob, "b")
    await block(a, bob)
    await block(b, alice)
    assert blocked_error(await a.inbox.wait(error_to(send(a, bob, body="x"))))
    assert blocked_error(await b.inbox.wait(error_to(send(b, alice, body="y"))))
    await unblock(a, bob)  # bob still blocks alice: she reaches nobody
    assert error_of(await a.inbox.wait(error_to(send(a, bob, body="z")))) == ("cancel", "service-unavailable")
    await unblock(b, alice)
    msg = send(a, bob, body="hello again")
    await b.inbox.wait(with_id(msg))
    for user in (a, b):
        await user.logout()


async def test_domain_and_full_jid_entries(server):
    alice, bob = await new_account(server), await new_account(server)
    a = await connect(server, alice, "a")
    b_work, b_home = await connect(server, bob, "work"), await connect(server, bob, "home")
    await block(a, f"{bob}/work", "conference.localhost")
    assert blocked_error(await a.inbox.wait(error_to(send(a, "room@conference.localhost", body="hi"))))  # a subdomain
    blocked = send(b_work, a.jid, body="from work")
    assert error_of(await b_work.inbox.wait(error_to(blocked))) == ("cancel", "service-unavailable")
    allowed = send(b_home, a.jid, body="from home")
    await a.inbox.wait(with_id(allowed))
    for user in (a, b_work, b_home):
        await user.logout()


@pytest.mark.parametrize(
    "payload,expected",
    [
        (f"<block xmlns='{NS_BLOCKING}'/>", ("modify", "bad-request")),  # section 3.3
        (f"<block xmlns='{NS_BLOCKING}'><item/></block>", ("modify", "bad-request")),
        (f"<block xmlns='{NS_BLOCKING}'><item jid='@@'/></block>", ("modify", "jid-malformed")),
        (f"<block xmlns='{NS_BLOCKING}'><item jid='localhost'/></block>", ("modify", "not-acceptable")),
        (
            f"<block xmlns='{NS_BLOCKING}'>" + items(f"u{n}@example.org" for n in range(MAX_ITEMS + 1)) + "</block>",
            ("cancel", "not-allowed"),
        ),
    ],
)
async def test_bad_requests(server, payload, expected):
    alice = await new_account(server)
    a = await connect(server, alice, "a")
    assert (await block(a, "kept@example.org")).get("type") == "result"
    assert error_of(await a.iq("set", alice, payload)) == expected
    assert await blocklist(a) == ["kept@example.org"]  # nothing lost
    assert error_of(await block(a, alice)) == ("modify", "not-acceptable")
    await a.logout()


async def test_with_the_slixmpp_plugin_and_disco(server):
    alice, bob = await new_account(server), await new_account(server)
    client = Client(f"{alice}/app", "secret", verify_tls=False, plugins=DEFAULT_PLUGINS + ("xep_0191",))
    await client.login("127.0.0.1", server.port)
    info = await client.plugin["xep_0030"].get_info(jid=server.domain)
    assert NS_BLOCKING in info["disco_info"]["features"]
    assert await client.plugin["xep_0191"].get_blocked_jids() == set()
    await client.plugin["xep_0191"].block([bob])
    assert {str(jid) for jid in await client.plugin["xep_0191"].get_blocked_jids()} == {bob}
    await client.plugin["xep_0191"].unblock([bob])
    assert await client.plugin["xep_0191"].get_blocked_jids() == set()
    await client.logout()
