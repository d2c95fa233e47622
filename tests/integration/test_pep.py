"""End to end: XEP-0163 PEP over XEP-0060, with XEP-0223 publish options and XEP-0115
filtered notifications, on a real xmppd."""

import asyncio

import pytest

from tests.support.inbox import IQ, MESSAGE
from tests.support.pep import (
    NODE_CONFIG,
    NS_DELAY,
    NS_DISCO_INFO,
    NS_DISCO_ITEMS,
    NS_EVENT,
    NS_OWNER,
    NS_PUBSUB,
    befriend,
    error_of,
    event_from,
    form,
    item_ids,
    items_request,
    online,  # noqa: F401  (fixture)
    publish,
    round_trip,
)
from tests.support.server import XmppdProcess

MAX_ITEM_BYTES = 4000
MAX_ITEMS = 10
TUNE = "http://jabber.org/protocol/tune"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = XmppdProcess(
        tmp_path_factory.mktemp("pep"),
        extra_config=f"""
        [extensions.pep]
        max_item_bytes = {MAX_ITEM_BYTES}
        max_items = {MAX_ITEMS}
        """,
    ).start()
    yield process
    process.stop()


def tune(title: str) -> str:
    return f"<tune xmlns='{TUNE}'><title>{title}</title></tune>"


def titles(stanza) -> list[str]:
    return [title.text for title in stanza.iter(f"{{{TUNE}}}title")]


async def test_account_answers_disco_with_the_pep_identity(users, online):
    (alice,) = users(1)
    user = await online(alice)
    info = await user.iq("get", alice, f"<query xmlns='{NS_DISCO_INFO}'/>")
    identities = {(i.get("category"), i.get("type")) for i in info.iter(f"{{{NS_DISCO_INFO}}}identity")}
    features = {f.get("var") for f in info.iter(f"{{{NS_DISCO_INFO}}}feature")}
    assert ("pubsub", "pep") in identities and ("account", "registered") in identities
    assert {
        f"{NS_PUBSUB}#{name}"
        for name in (
            "publish",
            "publish-options",
            "auto-create",
            "access-presence",
            "access-open",
            "access-whitelist",
            "access-roster",
            "filtered-notifications",
            "retrieve-items",
            "subscribe",
            "config-node-max",
        )
    } <= features


async def test_publish_notifies_owner_and_interested_contacts(users, online):
    alice, bob, carol, dave = users(4)
    owner = await online(alice, "a", interests=[TUNE])
    watcher = await online(bob, "b")
    plain = await online(carol, "c")  # a contact without the interest
    stranger = await online(dave, "d", interests=[TUNE])
    await befriend(owner, watcher)
    await befriend(owner, plain)
    await watcher.client.logout()

    first = await owner.iq("set", alice, publish(TUNE, tune("first")))
    assert first.get("type") == "result" and item_ids(first)
    assert titles(await owner.inbox.wait(event_from(alice, TUNE))) == ["first"]

    # Coming online with the interest brings the last item, with its time (XEP-0163 4.3.2).
    watcher = await online(bob, "b2", interests=[TUNE])
    last = await watcher.inbox.wait(event_from(alice, TUNE))
    assert titles(last) == ["first"] and last.find(f"{{{NS_DELAY}}}delay") is not None
    assert last.get("type") == "headline" and last.get("to") == watcher.jid

    second = await owner.iq("set", alice, publish(TUNE, tune("second"), "two"))
    assert item_ids(second) == ["two"]
    event = await watcher.inbox.wait(event_from(alice, TUNE))
    assert titles(event) == ["second"] and event.find(f"{{{NS_DELAY}}}delay") is None
    assert event.find(f"{{{NS_EVENT}}}event/{{{NS_EVENT}}}items/{{{NS_EVENT}}}item").get("id") == "two"
    assert titles(await owner.inbox.wait(event_from(alice, TUNE))) == ["second"]
    for other in (plain, stranger):
        await round_trip(other)
        assert not other.inbox.received(event_from(alice, TUNE))


async def test_access_models_are_enforced(users, online):
    alice, bob, dave = users(3)
    owner = await online(alice)
    contact = await online(bob)
    stranger = await online(dave)
    await befriend(owner, contact)
    await owner.iq(
        "set", alice, f"<query xmlns='jabber:iq:roster'><item jid='{bob}'><group>Friends</group></item></query>"
    )
    for node, model, extra in (
        ("urn:example:presence", "presence", {}),
        ("urn:example:open", "open", {}),
        ("urn:example:whitelist", "whitelist", {}),
        ("urn:example:roster", "roster", {"roster_groups_allowed": "Friends"}),
    ):
        answer = await owner.iq("set", alice, publish(node, f"<x xmlns='{node}'/>", "i", access_model=model, **extra))
        assert answer.get("type") == "result", node

    async def fetch(user, node):
        return await user.iq("get", alice, items_request(node))

    assert item_ids(await fetch(contact, "urn:example:presence")) == ["i"]
    assert error_of(await fetch(stranger, "urn:example:presence")) == (
        "not-authorized",
        "presence-subscription-required",
    )
    assert item_ids(await fetch(stranger, "urn:example:open")) == ["i"]
    assert error_of(await fetch(contact, "urn:example:whitelist")) == ("not-allowed", "closed-node")
    assert item_ids(await fetch(owner, "urn:example:whitelist")) == ["i"]
    assert item_ids(await fetch(contact, "urn:example:roster")) == ["i"]
    assert error_of(await fetch(stranger, "urn:example:roster")) == ("not-authorized", "not-in-roster-group")
    assert error_of(await fetch(contact, "urn:example:nothing-here")) == ("item-not-found", None)

    async def listed(user):
        answer = await user.iq("get", alice, f"<query xmlns='{NS_DISCO_ITEMS}'/>")
        return {item.get("node") for item in answer.iter(f"{{{NS_DISCO_ITEMS}}}item")}

    assert await listed(contact) == {"urn:example:presence", "urn:example:open", "urn:example:roster"}
    assert await listed(stranger) == {"urn:example:open"}
    info = await contact.iq("get", alice, f"<query xmlns='{NS_DISCO_INFO}' node='urn:example:whitelist'/>")
    assert error_of(info) == ("item-not-found", None)


async def test_nobody_publishes_to_another_account(users, online):
    alice, bob = users(2)
    owner = await online(alice)
    other = await online(bob)
    await owner.iq("set", alice, publish(TUNE, tune("mine"), "x", access_model="open"))
    for request in (
        publish(TUNE, tune("theirs"), "x"),
        f"<pubsub xmlns='{NS_PUBSUB}'><retract node='{TUNE}'><item id='x'/></retract></pubsub>",
        f"<pubsub xmlns='{NS_OWNER}'><delete node='{TUNE}'/></pubsub>",
    ):
        assert error_of(await other.iq("set", alice, request))[0] == "forbidden"
    assert titles(await other.iq("get", alice, items_request(TUNE))) == ["mine"]


async def test_publish_options_are_preconditions(users, online):
    (alice,) = users(1)
    owner = await online(alice)
    node = "urn:example:settings"
    assert (
        await owner.iq(
            "set",
            alice,
            publish(
                node, "<s xmlns='urn:example:settings'>1</s>", "current", access_model="whitelist", persist_items="true"
            ),
        )
    ).get("type") == "result"
    mismatch = await owner.iq(
        "set", alice, publish(node, "<s xmlns='urn:example:settings'>2</s>", "current", access_model="open")
    )
    assert error_of(mismatch) == ("conflict", "precondition-not-met")
    unknown = await owner.iq(
        "set", alice, publish(node, "<s xmlns='urn:example:settings'>3</s>", "current", frobnicate="1")
    )
    assert error_of(unknown) == ("conflict", "precondition-not-met")
    stored = await owner.iq("get", alice, items_request(node))
    assert [s.text for s in stored.iter("{urn:example:settings}s")] == ["1"]
    matching = await owner.iq(
        "set", alice, publish(node, "<s xmlns='urn:example:settings'>4</s>", "current", access_model="whitelist")
    )
    assert matching.get("type") == "result"
    config = await owner.iq("get", alice, f"<pubsub xmlns='{NS_OWNER}'><configure node='{node}'/></pubsub>")
    values = {f.get("var"): f.findtext("{jabber:x:data}value") for f in config.iter("{jabber:x:data}field")}
    assert values["pubsub#access_model"] == "whitelist" and values["FORM_TYPE"] == NODE_CONFIG
    bad = await owner.iq("set", alice, publish("urn:example:new", "<n xmlns='urn:example:new'/>", access_model="bogus"))
    assert error_of(bad) == ("not-acceptable", "unsupported-access-model")
    assert error_of(await owner.iq("get", alice, items_request("urn:example:new"))) == ("item-not-found", None)


async def test_an_item_over_the_size_limit_is_refused_and_nothing_changes(users, online):
    (alice,) = users(1)
    owner = await online(alice)
    await owner.iq("set", alice, publish(TUNE, tune("small"), "current"))
    big = await owner.iq("set", alice, publish(TUNE, tune("x" * MAX_ITEM_BYTES), "current"))
    assert error_of(big) == ("not-acceptable", "payload-too-big")
    assert titles(await owner.iq("get", alice, items_request(TUNE))) == ["small"]


async def test_malformed_requests_get_the_xep_0060_errors(users, online):
    (alice,) = users(1)
    owner = await online(alice)
    await owner.iq("set", alice, publish(TUNE, tune("t"), "current"))
    cases = [
        (f"<pubsub xmlns='{NS_PUBSUB}'><publish node='{TUNE}'/></pubsub>", ("bad-request", "item-required")),
        (
            f"<pubsub xmlns='{NS_PUBSUB}'><publish node='{TUNE}'><item/></publish></pubsub>",
            ("bad-request", "payload-required"),
        ),
        (
            f"<pubsub xmlns='{NS_PUBSUB}'><publish node='{TUNE}'><item><a xmlns='urn:a'/><b xmlns='urn:b'/></item>"
            "</publish></pubsub>",
            ("bad-request", "invalid-payload"),
        ),
        (
            f"<pubsub xmlns='{NS_PUBSUB}'><publish><item>{tune('t')}</item></publish></pubsub>",
            ("bad-request", "nodeid-required"),
        ),
        (
            f"<pubsub xmlns='{NS_PUBSUB}'><retract node='{TUNE}'><item id='nope'/></retract></pubsub>",
            ("item-not-found", None),
        ),
        (f"<pubsub xmlns='{NS_PUBSUB}'><retract node='{TUNE}'/></pubsub>", ("bad-request", "item-required")),
        (f"<pubsub xmlns='{NS_OWNER}'><delete node='urn:example:none'/></pubsub>", ("item-not-found", None)),
        (f"<pubsub xmlns='{NS_PUBSUB}'><create node='{TUNE}'/></pubsub>", ("conflict", None)),
        (f"<pubsub xmlns='{NS_PUBSUB}'><affiliations/></pubsub>", ("feature-not-implemented", "unsupported")),
    ]
    for request, expected in cases:
        assert error_of(await owner.iq("set", alice, request)) == expected, request
    assert titles(await owner.iq("get", alice, items_request(TUNE))) == ["t"]


async def test_max_items_retract_and_delete_notify(users, online):
    alice, bob = users(2)
    owner = await online(alice)
    contact = await online(bob, interests=["urn:example:log"])
    await befriend(owner, contact)
    node = "urn:example:log"
    for n in range(3):
        await owner.iq("set", alice, publish(node, f"<e xmlns='{node}'>{n}</e>", f"e{n}", max_items="2"))
        await contact.inbox.wait(event_from(alice, node))
    assert item_ids(await contact.iq("get", alice, items_request(node))) == ["e1", "e2"]
    assert item_ids(await contact.iq("get", alice, items_request(node, max_items=1))) == ["e2"]
    assert item_ids(await contact.iq("get", alice, items_request(node, ids=["e1"]))) == ["e1"]

    node_max = "urn:example:many"
    for n in range(MAX_ITEMS + 2):
        await owner.iq("set", alice, publish(node_max, f"<e xmlns='{node_max}'>{n}</e>", f"m{n}", max_items="max"))
    assert len(item_ids(await owner.iq("get", alice, items_request(node_max)))) == MAX_ITEMS

    retract = f"<pubsub xmlns='{NS_PUBSUB}'><retract node='{node}' notify='true'><item id='e2'/></retract></pubsub>"
    assert (await owner.iq("set", alice, retract)).get("type") == "result"
    retracted = await contact.inbox.wait(event_from(alice, node))
    assert retracted.find(f".//{{{NS_EVENT}}}retract").get("id") == "e2"
    assert (await owner.iq("set", alice, f"<pubsub xmlns='{NS_OWNER}'><delete node='{node}'/></pubsub>")).get(
        "type"
    ) == "result"
    deleted = await contact.inbox.wait(event_from(alice, node))
    assert deleted.find(f"{{{NS_EVENT}}}event/{{{NS_EVENT}}}delete") is not None
    assert error_of(await contact.iq("get", alice, items_request(node))) == ("item-not-found", None)


async def test_a_non_contact_subscribes_to_an_open_node(users, online):
    alice, dave = users(2)
    owner = await online(alice)
    stranger = await online(dave)
    node = "urn:example:public"
    await owner.iq("set", alice, publish(node, f"<p xmlns='{node}'>1</p>", "one", access_model="open"))
    await owner.iq("set", alice, publish(TUNE, tune("private"), "t"))
    subscribe = f"<pubsub xmlns='{NS_PUBSUB}'><subscribe node='{node}' jid='{dave}'/></pubsub>"
    answer = await stranger.iq("set", alice, subscribe)
    subscription = answer.find(f"{{{NS_PUBSUB}}}pubsub/{{{NS_PUBSUB}}}subscription")
    assert subscription.get("subscription") == "subscribed" and subscription.get("jid") == dave
    last = await stranger.inbox.wait(event_from(alice, node))  # the last item
    assert last.find(f".//{{{NS_EVENT}}}item").get("id") == "one"
    await owner.iq("set", alice, publish(node, f"<p xmlns='{node}'>2</p>", "two"))
    event = await stranger.inbox.wait(event_from(alice, node))
    assert event.find(f".//{{{NS_EVENT}}}item").get("id") == "two"

    refused = await stranger.iq(
        "set", alice, f"<pubsub xmlns='{NS_PUBSUB}'><subscribe node='{TUNE}' jid='{dave}'/></pubsub>"
    )
    assert error_of(refused) == ("not-authorized", "presence-subscription-required")
    spoofed = await stranger.iq(
        "set", alice, f"<pubsub xmlns='{NS_PUBSUB}'><subscribe node='{node}' jid='{alice}'/></pubsub>"
    )
    assert error_of(spoofed) == ("bad-request", "invalid-jid")
    unsubscribe = f"<pubsub xmlns='{NS_PUBSUB}'><unsubscribe node='{node}' jid='{dave}'/></pubsub>"
    assert (await stranger.iq("set", alice, unsubscribe)).get("type") == "result"
    assert error_of(await stranger.iq("set", alice, unsubscribe)) == ("unexpected-request", "not-subscribed")
    await owner.iq("set", alice, publish(node, f"<p xmlns='{node}'>3</p>", "three"))
    await round_trip(stranger)
    assert len(stranger.inbox.received(event_from(alice, node))) == 2


async def test_a_stranger_cannot_tell_an_account_from_none(users, online):
    """Issue 20 item 9: to someone the account shares no presence with, an unknown node of
    an existing account is answered as any node of an account that does not exist:
    service-unavailable (RFC 6121 8.5.1); a contact still gets item-not-found."""
    alice, bob, dave = users(3)
    owner, contact, stranger = await online(alice), await online(bob), await online(dave)
    await befriend(owner, contact)
    await owner.iq("set", alice, publish(TUNE, tune("private"), "t", access_model="whitelist"))
    nobody = f"nobody-{dave.split('@')[0]}@{dave.split('@')[1]}"
    requests = [
        ("get", items_request("urn:example:none")),
        ("set", f"<pubsub xmlns='{NS_PUBSUB}'><subscribe node='urn:example:none' jid='{dave}'/></pubsub>"),
        ("set", f"<pubsub xmlns='{NS_PUBSUB}'><unsubscribe node='urn:example:none' jid='{dave}'/></pubsub>"),
        ("get", f"<pubsub xmlns='{NS_PUBSUB}'><subscriptions node='urn:example:none'/></pubsub>"),
        ("get", f"<query xmlns='{NS_DISCO_INFO}' node='urn:example:none'/>"),
        ("get", f"<query xmlns='{NS_DISCO_INFO}' node='{TUNE}'/>"),  # exists, not for the stranger's eyes
        ("get", f"<query xmlns='{NS_DISCO_ITEMS}' node='urn:example:none'/>"),
        ("get", f"<query xmlns='{NS_DISCO_ITEMS}'/>"),
    ]
    for type_, request in requests:
        existing, missing = await stranger.iq(type_, alice, request), await stranger.iq(type_, nobody, request)
        assert error_of(missing) == ("service-unavailable", None), request
        assert error_of(existing) == error_of(missing), request
        assert existing.find("{jabber:client}error").get("type") == missing.find("{jabber:client}error").get("type")
    assert error_of(await contact.iq("get", alice, items_request("urn:example:none"))) == ("item-not-found", None)


async def test_owner_configures_a_node(users, online):
    alice, dave = users(2)
    owner = await online(alice)
    stranger = await online(dave)
    node = "urn:example:configured"
    create = (
        f"<pubsub xmlns='{NS_PUBSUB}'><create node='{node}'/>"
        f"<configure>{form(NODE_CONFIG, {'pubsub#access_model': 'whitelist'})}</configure></pubsub>"
    )
    assert (await owner.iq("set", alice, create)).get("type") == "result"
    await owner.iq("set", alice, publish(node, f"<c xmlns='{node}'/>", "c"))
    assert error_of(await stranger.iq("get", alice, items_request(node))) == ("not-allowed", "closed-node")
    configure = f"<pubsub xmlns='{NS_OWNER}'><configure node='{node}'>{form(NODE_CONFIG, {'pubsub#access_model': 'open'})}</configure></pubsub>"
    assert error_of(await stranger.iq("set", alice, configure))[0] == "forbidden"
    assert (await owner.iq("set", alice, configure)).get("type") == "result"
    assert item_ids(await stranger.iq("get", alice, items_request(node))) == ["c"]
    bad = f"<pubsub xmlns='{NS_OWNER}'><configure node='{node}'>{form(NODE_CONFIG, {'pubsub#max_items': 'lots'})}</configure></pubsub>"
    assert error_of(await owner.iq("set", alice, bad))[0] == "not-acceptable"
    default = await owner.iq("get", alice, f"<pubsub xmlns='{NS_OWNER}'><default/></pubsub>")
    values = {f.get("var"): f.findtext("{jabber:x:data}value") for f in default.iter("{jabber:x:data}field")}
    assert (
        values["pubsub#access_model"] == "presence"
        and values["pubsub#send_last_published_item"] == "on_sub_and_presence"
    )


async def test_transient_node_notifies_without_storing(users, online):
    (alice,) = users(1)
    owner = await online(alice, interests=["urn:example:now"])
    node = "urn:example:now"
    await owner.iq("set", alice, publish(node, f"<n xmlns='{node}'>x</n>", "n", persist_items="false"))
    assert (await owner.inbox.wait(event_from(alice, node))).find(f".//{{{node}}}n").text == "x"
    assert item_ids(await owner.iq("get", alice, items_request(node))) == []


async def test_caps_query_goes_to_the_client_once_per_verified_ver(users, online):
    alice, bob = users(2)
    first = await online(alice, "one", interests=["urn:example:caps"])
    query = await first.inbox.wait(
        lambda s: s.tag == IQ and s.get("type") == "get" and s.find(f"{{{NS_DISCO_INFO}}}query") is not None
    )
    assert query.get("from") == alice and "#" in query.find(f"{{{NS_DISCO_INFO}}}query").get("node")
    node = "urn:example:caps"
    await first.iq("set", alice, publish(node, f"<c xmlns='{node}'/>", "c"))
    await first.inbox.wait(event_from(alice, node))
    # Same software, same caps: the server knows them already and asks nothing.
    second = await online(bob, "two", interests=["urn:example:caps"])
    await second.iq("set", bob, publish(node, f"<c xmlns='{node}'/>", "c"))
    await second.inbox.wait(event_from(bob, node))
    assert not second.inbox.received(
        lambda s: s.tag == IQ and s.get("type") == "get" and s.find(f"{{{NS_DISCO_INFO}}}query") is not None
    )
    assert not [s for s in first.inbox.stanzas if s.tag == MESSAGE and s.get("type") == "error"]


async def test_no_notifications_to_a_contact_the_owner_blocks(users, online):
    alice, bob = users(2)
    owner = await online(alice)
    contact = await online(bob, interests=[TUNE])
    await befriend(owner, contact)
    await owner.iq("set", alice, publish(TUNE, tune("seen"), "s"))
    await contact.inbox.wait(event_from(alice, TUNE))
    block = f"<block xmlns='urn:xmpp:blocking'><item jid='{bob}'/></block>"
    assert (await owner.iq("set", alice, block)).get("type") == "result"
    await owner.iq("set", alice, publish(TUNE, tune("hidden"), "h"))
    await round_trip(contact)
    assert titles(contact.inbox.received(event_from(alice, TUNE))[0]) == ["seen"]
    assert len(contact.inbox.received(event_from(alice, TUNE))) == 1


async def test_owner_shrinks_and_purges_a_node(users, online):
    """XEP-0060 8.2: a smaller max_items drops the oldest items at once, a cancelled
    configuration changes nothing; 8.5: a purge removes every item and is notified."""
    alice, bob = users(2)
    node = "urn:example:journal"
    owner = await online(alice)
    contact = await online(bob, interests=[node])
    await befriend(owner, contact)
    for n in range(3):
        await owner.iq("set", alice, publish(node, f"<j xmlns='{node}'>{n}</j>", f"j{n}", max_items="5"))
        await contact.inbox.wait(event_from(alice, node))
    assert item_ids(await owner.iq("get", alice, items_request(node))) == ["j0", "j1", "j2"]

    def configure(x: str) -> str:
        return f"<pubsub xmlns='{NS_OWNER}'><configure node='{node}'>{x}</configure></pubsub>"

    assert (await owner.iq("set", alice, configure(form(NODE_CONFIG, {"pubsub#max_items": "2"})))).get(
        "type"
    ) == "result"
    assert item_ids(await owner.iq("get", alice, items_request(node))) == ["j1", "j2"]
    cancelled = configure("<x xmlns='jabber:x:data' type='cancel'/>")
    assert (await owner.iq("set", alice, cancelled)).get("type") == "result"
    config = await owner.iq("get", alice, configure(""))
    values = {f.get("var"): f.findtext("{jabber:x:data}value") for f in config.iter("{jabber:x:data}field")}
    assert values["pubsub#max_items"] == "2"

    purge = f"<pubsub xmlns='{NS_OWNER}'><purge node='{node}'/></pubsub>"
    assert error_of(await contact.iq("set", alice, purge))[0] == "forbidden"
    assert (await owner.iq("set", alice, purge)).get("type") == "result"
    purged = await contact.inbox.wait(event_from(alice, node))
    assert purged.find(f"{{{NS_EVENT}}}event/{{{NS_EVENT}}}purge") is not None
    assert item_ids(await contact.iq("get", alice, items_request(node))) == []
    again = await owner.iq("set", alice, publish(node, f"<j xmlns='{node}'>3</j>", "j3"))
    assert again.get("type") == "result"
    assert item_ids(await contact.iq("get", alice, items_request(node))) == ["j3"]


async def test_a_deleted_account_takes_its_nodes(server, users, online):
    """An account removed (XEP-0077 <remove/>) leaves no node behind: made again, it has none."""
    (alice,) = users(1)
    owner = await online(alice)
    await owner.iq("set", alice, publish(TUNE, tune("old"), "t", access_model="open"))
    removed = asyncio.ensure_future(owner.client.plugin["xep_0077"].cancel_registration())
    await asyncio.wait({removed}, timeout=10)  # the stream closes as the answer comes
    assert removed.done()
    server.adduser(alice.split("@")[0])
    again = await online(alice)
    assert error_of(await again.iq("get", alice, items_request(TUNE))) == ("item-not-found", None)
    listed = await again.iq("get", alice, f"<query xmlns='{NS_DISCO_ITEMS}'/>")
    assert listed.get("type") == "result" and listed.find(f".//{{{NS_DISCO_ITEMS}}}item") is None
