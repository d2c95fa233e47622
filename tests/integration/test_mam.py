"""End to end: the users' message archive (XEP-0313 with XEP-0059 paging, XEP-0359 stanza
ids, XEP-0441 preferences), what it keeps, its errors, retention and shutdown."""

import datetime
import subprocess
import sys
import time

import pytest

from tests.support.messaging import (
    BODY,
    NS_DISCO_INFO,
    NS_HINTS,
    NS_MAM,
    NS_SID,
    archive,
    bare,
    bodies,
    connect,
    rsm,
    send,
    stanza_id,
    with_id,
)
from tests.support.muc import error_of, new_account
from tests.support.server import XmppdProcess
from xmppd.client import DEFAULT_PLUGINS, Client
from xmppd.protocol.stanza import make_element, to_storage
from xmppd.storage import open_backend
from xmppd.storage.interfaces import ArchivedStanza
from xmppd.storage.sqlite import Options as SqliteOptions

QUICK_STOP = "graceful_shutdown_timeout = 2"
NS_DATA = "jabber:x:data"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = XmppdProcess(tmp_path_factory.mktemp("mam"), server_section=QUICK_STOP).start()
    yield process
    process.stop()


async def pair(server):
    alice, bob = await new_account(server), await new_account(server)
    return await connect(server, alice, "a"), await connect(server, bob, "b")


async def exchange(a, b, count: int) -> list[str]:
    """`count` messages, alternately from a and from b; their bodies in order."""
    said = []
    for n in range(count):
        sender, receiver = (a, b) if n % 2 == 0 else (b, a)
        body = f"{'ab'[n % 2]}{n}"
        msg = send(sender, bare(receiver.jid), body=body)
        await receiver.inbox.wait(with_id(msg))  # one at a time: the order is the archive's
        said.append(body)
    return said


async def test_paging_forwards_and_backwards_over_60_messages(server):
    a, b = await pair(server)
    said = await exchange(a, b, 60)

    # Forwards, 25 at a time: complete only on the last page; count and first/last each time.
    seen, after, pages = [], None, []
    while True:
        results, fin = await archive(a, rsm="<max>25</max>" + (f"<after>{after}</after>" if after else ""))
        pages.append(len(results))
        seen += bodies(results)
        assert rsm(fin, "count") == "60"
        assert (rsm(fin, "first"), rsm(fin, "last")) == (results[0][0], results[-1][0])
        after = results[-1][0]
        if fin.get("complete") == "true":
            break
        assert fin.get("complete") is None
    assert pages == [25, 25, 10] and seen == said

    # A page past the end is empty, complete, and still counts (XEP-0059 2.2).
    results, fin = await archive(a, rsm=f"<max>25</max><after>{after}</after>")
    assert results == [] and fin.get("complete") == "true" and rsm(fin, "count") == "60"
    assert rsm(fin, "first") is None and rsm(fin, "last") is None

    # Backwards from the end (<before/>): each page in chronological order.
    seen, before, pages = [], "", []
    while True:
        results, fin = await archive(a, rsm=f"<max>25</max><before>{before}</before>")
        pages.append(len(results))
        seen = bodies(results) + seen
        before = results[0][0]
        if fin.get("complete") == "true":
            break
    assert pages == [25, 25, 10] and seen == said

    # Without <max/> the server's page size (50) applies; bob's archive holds the same 60.
    results, fin = await archive(b)
    assert bodies(results) == said[:50] and fin.get("complete") is None
    results, fin = await archive(b, rsm="<max>0</max>")
    assert results == [] and rsm(fin, "count") == "60"


async def test_results_are_forwarded_with_delay_and_ids_match_stanza_ids(server):
    a, b = await pair(server)
    msg = send(a, bare(b.jid), body="keep me")
    delivered = await b.inbox.wait(with_id(msg))
    archive_id = stanza_id(delivered, by=bare(b.jid))
    assert archive_id is not None
    ((result_id, message, wrapper),) = (await archive(b))[0]
    assert result_id == archive_id
    assert wrapper.get("from") == bare(b.jid) and wrapper.get("to") == b.jid
    assert message.get("from") == a.jid and message.findtext(BODY) == "keep me"
    assert wrapper.find(".//{urn:xmpp:delay}delay").get("stamp").endswith("Z")
    ((sent_id, sent, _),) = (await archive(a))[0]
    assert sent.get("to") == bare(b.jid) and stanza_id(sent, by=bare(a.jid)) is None  # stored as sent


async def test_forged_stanza_ids_are_removed(server):
    a, b = await pair(server)
    forged = (
        f"<stanza-id xmlns='{NS_SID}' by='{bare(b.jid)}' id='forged-b'/>"
        f"<stanza-id xmlns='{NS_SID}' by='{bare(a.jid)}' id='forged-a'/>"
        f"<stanza-id xmlns='{NS_SID}' by='elsewhere.example' id='theirs'/>"
    )
    msg = send(a, bare(b.jid), forged, body="trust me")
    delivered = await b.inbox.wait(with_id(msg))
    ids = {(s.get("by"), s.get("id")) for s in delivered.iterfind(f"{{{NS_SID}}}stanza-id")}
    assert ("elsewhere.example", "theirs") in ids
    assert {by for by, _ in ids} == {"elsewhere.example", bare(b.jid)}
    assert "forged-b" not in {i for _, i in ids}


async def test_filters(server):
    a, b = await pair(server)
    carol = await connect(server, await new_account(server), "c")
    send(carol, bare(a.jid), body="from carol")
    await a.inbox.wait(lambda s: s.findtext(BODY) == "from carol")
    said = await exchange(a, b, 6)
    results, _ = await archive(a)
    ids = [result_id for result_id, _, _ in results]
    assert bodies(results) == ["from carol"] + said

    assert bodies((await archive(a, {"with": bare(b.jid)}))[0]) == said
    assert bodies((await archive(a, {"with": bare(carol.jid)}))[0]) == ["from carol"]
    assert bodies((await archive(a, {"with": b.jid}))[0]) == [s for s in said if s.startswith("b")]  # full JID
    assert bodies((await archive(a, {"after-id": ids[2], "before-id": ids[5]}))[0]) == said[2:4]
    assert bodies((await archive(a, {"ids": [ids[4], ids[1]]}))[0]) == [said[0], said[3]]

    # Stamps have whole milliseconds, and two messages may share one: the bounds are
    # taken from the stamps so that each splits the archive.
    stamps = [
        datetime.datetime.fromisoformat(r.find(".//{urn:xmpp:delay}delay").get("stamp").replace("Z", "+00:00"))
        for _, _, r in results
    ]
    everything = bodies(results)
    start = min(stamp for stamp in stamps if stamp > stamps[0])
    from_start = [body for body, stamp in zip(everything, stamps) if stamp >= start]
    assert 0 < len(from_start) < len(everything) and "from carol" not in from_start
    assert bodies((await archive(a, {"start": start.isoformat().replace("+00:00", "Z")}))[0]) == from_start
    end = max(stamp for stamp in stamps if stamp < stamps[-1])
    until_end = [body for body, stamp in zip(everything, stamps) if stamp <= end]
    assert 0 < len(until_end) < len(everything) and "from carol" in until_end
    assert bodies((await archive(a, {"end": end.isoformat().replace("+00:00", "Z")}))[0]) == until_end

    flipped, fin = await archive(a, rsm="<max>3</max>", flip=True)
    assert bodies(flipped) == ["b1", "a0", "from carol"] and fin.get("complete") is None


async def test_what_is_archived(server):
    a, b = await pair(server)
    cases = {
        "body": ("chat", "<body>words</body>", True),
        "chat state": ("chat", "<composing xmlns='http://jabber.org/protocol/chatstates'/>", False),
        "no-store": ("chat", f"<body>secret</body><no-store xmlns='{NS_HINTS}'/>", False),
        "no-permanent-store": ("chat", f"<body>fleeting</body><no-permanent-store xmlns='{NS_HINTS}'/>", False),
        "store hint": ("normal", f"<store xmlns='{NS_HINTS}'/><x xmlns='urn:example'/>", True),
        "omemo": ("chat", "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'/></encrypted>", True),
        "reaction": (
            "chat",
            "<reactions xmlns='urn:xmpp:reactions:0' id='x'><reaction>+1</reaction></reactions>",
            True,
        ),
        "correction": ("chat", "<body>fixed</body><replace xmlns='urn:xmpp:message-correct:0' id='x'/>", True),
        "retraction": ("chat", "<retract xmlns='urn:xmpp:message-retract:1' id='x'/>", True),
        "invitation": ("normal", "<x xmlns='jabber:x:conference' jid='room@conference.localhost'/>", True),
        "headline": ("headline", "<body>news</body>", False),
    }
    names, stamped = {}, {}
    for name, (type_, payload, _) in cases.items():
        msg = send(a, bare(b.jid), payload, type_=type_)
        delivered = await b.inbox.wait(with_id(msg))
        names[msg] = name
        stamped[name] = stanza_id(delivered, by=bare(b.jid)) is not None
    expected = {name for name, (_, _, kept) in cases.items() if kept}
    for owner in (a, b):  # the sender's archive and the recipient's
        results, _ = await archive(owner)
        assert {names[message.get("id")] for _, message, _ in results} == expected
    assert {name for name, is_stamped in stamped.items() if is_stamped} == expected


async def test_preferences(server):
    a, b = await pair(server)
    friend = await connect(server, await new_account(server), "f")
    prefs = await a.iq("get", bare(a.jid), f"<prefs xmlns='{NS_MAM}'/>")
    assert prefs.find(f"{{{NS_MAM}}}prefs").get("default") == "always"
    assert prefs.find(f"{{{NS_MAM}}}prefs/{{{NS_MAM}}}always") is not None

    answer = await a.iq(
        "set",
        bare(a.jid),
        f"<prefs xmlns='{NS_MAM}' default='never'><always><jid>{bare(friend.jid)}</jid></always><never/></prefs>",
    )
    applied = answer.find(f"{{{NS_MAM}}}prefs")
    assert applied.get("default") == "never"
    assert [j.text for j in applied.iterfind(f"{{{NS_MAM}}}always/{{{NS_MAM}}}jid")] == [bare(friend.jid)]
    for sender in (b, friend):
        msg = send(sender, bare(a.jid), body=f"from {sender.jid}")
        await a.inbox.wait(with_id(msg))
    assert bodies((await archive(a))[0]) == [f"from {friend.jid}"]

    # 'roster': only contacts in the roster.
    await a.iq("set", bare(a.jid), f"<prefs xmlns='{NS_MAM}' default='roster'/>")
    await a.iq("set", bare(a.jid), f"<query xmlns='jabber:iq:roster'><item jid='{bare(b.jid)}'/></query>")
    for sender in (b, friend):  # friend is no longer listed
        msg = send(sender, bare(a.jid), body=f"again from {sender.jid}")
        await a.inbox.wait(with_id(msg))
    assert bodies((await archive(a))[0]) == [f"from {friend.jid}", f"again from {b.jid}"]

    bad = await a.iq("set", bare(a.jid), f"<prefs xmlns='{NS_MAM}' default='sometimes'/>")
    assert error_of(bad) == ("modify", "bad-request")
    bad = await a.iq(
        "set", bare(a.jid), f"<prefs xmlns='{NS_MAM}' default='always'><never><jid>@@</jid></never></prefs>"
    )
    assert error_of(bad) == ("modify", "jid-malformed")
    many = "".join(f"<jid>u{n}@example.org</jid>" for n in range(1001))
    bad = await a.iq("set", bare(a.jid), f"<prefs xmlns='{NS_MAM}' default='always'><never>{many}</never></prefs>")
    assert error_of(bad) == ("modify", "policy-violation")
    prefs = await a.iq("get", bare(a.jid), f"<prefs xmlns='{NS_MAM}'/>")
    assert prefs.find(f"{{{NS_MAM}}}prefs").get("default") == "roster"  # unchanged by the bad sets


async def test_bad_queries_get_the_xep_errors_and_lose_nothing(server):
    a, b = await pair(server)
    await exchange(a, b, 3)
    results, _ = await archive(a)
    known = results[0][0]
    for fields, rsm_set, expected in [
        ({"start": "yesterday"}, "", ("modify", "bad-request")),
        ({"with": "@@"}, "", ("modify", "bad-request")),
        ({"colour": "red"}, "", ("cancel", "feature-not-implemented")),
        (None, "<after>no-such-id</after>", ("cancel", "item-not-found")),
        (None, "<before>no-such-id</before>", ("cancel", "item-not-found")),
        ({"after-id": "no-such-id"}, "", ("cancel", "item-not-found")),
        ({"before-id": "no-such-id"}, "", ("cancel", "item-not-found")),
        ({"ids": [known, "no-such-id"]}, "", ("cancel", "item-not-found")),
        (None, "<max>lots</max>", ("modify", "bad-request")),
        (None, "<index>2</index>", ("cancel", "feature-not-implemented")),
    ]:
        assert error_of(await archive(a, fields, rsm_set)) == expected, (fields, rsm_set)
    for payload in (
        f"<x xmlns='{NS_DATA}' type='form'/>",
        f"<x xmlns='{NS_DATA}' type='submit'><field var='FORM_TYPE'><value>urn:other</value></field></x>",
    ):
        answer = await a.iq("set", bare(a.jid), f"<query xmlns='{NS_MAM}'>{payload}</query>")
        assert error_of(answer) == ("modify", "bad-request")
    results, fin = await archive(a)
    assert len(results) == 3 and rsm(fin, "count") == "3"
    # Someone else's archive is not to be read.
    assert error_of(await archive(b, to=bare(a.jid))) == ("auth", "forbidden")


async def test_form_metadata_and_disco(server):
    a, b = await pair(server)
    form = await a.iq("get", bare(a.jid), f"<query xmlns='{NS_MAM}'/>")
    fields = {f.get("var"): f.get("type") for f in form.iterfind(f".//{{{NS_DATA}}}field")}
    assert fields == {
        "FORM_TYPE": "hidden",
        "with": "jid-single",
        "start": "text-single",
        "end": "text-single",
        "before-id": "text-single",
        "after-id": "text-single",
        "ids": "text-multi",
    }
    empty = await a.iq("get", bare(a.jid), f"<metadata xmlns='{NS_MAM}'/>")
    assert len(empty.find(f"{{{NS_MAM}}}metadata")) == 0
    await exchange(a, b, 3)
    results, _ = await archive(a)
    metadata = (await a.iq("get", bare(a.jid), f"<metadata xmlns='{NS_MAM}'/>")).find(f"{{{NS_MAM}}}metadata")
    assert metadata.find(f"{{{NS_MAM}}}start").get("id") == results[0][0]
    assert metadata.find(f"{{{NS_MAM}}}end").get("id") == results[-1][0]
    info = await a.iq("get", bare(a.jid), f"<query xmlns='{NS_DISCO_INFO}'/>")
    features = {f.get("var") for f in info.iter(f"{{{NS_DISCO_INFO}}}feature")}
    assert {NS_MAM, NS_MAM + "#extended", NS_SID} <= features


async def test_slixmpp_mam_client(server):
    alice, bob = await new_account(server), await new_account(server)
    a, b = await connect(server, alice, "a"), await connect(server, bob, "b")
    said = await exchange(a, b, 12)
    client = Client(f"{alice}/reader", "secret", verify_tls=False, plugins=DEFAULT_PLUGINS + ("xep_0313",))
    await client.login("127.0.0.1", server.port)
    got = []
    async for result in client.plugin["xep_0313"].iterate(with_jid=bob, total=100, rsm={"max": 5}):
        got.append(result["mam_result"]["forwarded"]["stanza"]["body"])
    assert got == said
    await client.logout()


async def test_shutdown_commits_pending_writes_and_retention_expires_old_items(tmp_path):
    config = "[extensions.mam]\nretention_days = 30\n"
    process = XmppdProcess(tmp_path, config, server_section=QUICK_STOP).start()
    try:
        alice, bob = await new_account(process), await new_account(process)
        a, b = await connect(process, alice, "a"), await connect(process, bob, "b")
        said = await exchange(a, b, 40)
        process.stop()  # at once: the archive writes may still be under way
        # An item from long ago, as if written 31 days back.
        backend = open_backend("sqlite", SqliteOptions(), str(tmp_path / "data"))
        await backend.start()
        old = make_element("{jabber:client}message", {"from": bob, "to": alice, "type": "chat"})
        await backend.archive("archive").append(
            alice,
            ArchivedStanza("00000000-0000-7000-8000-000000000000", time.time() - 31 * 86400, bob, to_storage(old)),
        )
        await backend.close()
        process.start()
        a = await connect(process, alice, "a")
        results, fin = await archive(a, rsm="<max>100</max>")
        assert bodies(results) == said and rsm(fin, "count") == "40"
        await a.logout()
    finally:
        process.stop()


@pytest.mark.parametrize(
    "line,key",
    [
        ("default_policy = 'sometimes'", "default_policy"),
        ("retention_days = -1", "retention_days"),
        ("page_size = 500", "page_size"),
    ],
)
def test_bad_options_stop_the_server(tmp_path, line, key):
    process = XmppdProcess(tmp_path, f"[extensions.mam]\n{line}\n")
    checked = subprocess.run(
        [sys.executable, "-m", "xmppd.cli", "--check-config", "--config", str(process.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 2 and f"extensions.mam.{key}" in checked.stderr
