"""End to end: the XEP-0060 pubsub service on pubsub.<domain>, driven by the bundled
slixmpp client's xep_0060 plugin (raw stanzas where the plugin hides an error): node
creation, items, subscriptions and notifications, the owner use cases, access models,
who may create nodes, and the limits."""

import asyncio

import pytest
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

from tests.support.pep import NS_ERRORS
from tests.support.server import XmppdProcess
from xmppd.client import Client

SERVICE = "pubsub.localhost"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_TUNE = "http://jabber.org/protocol/tune"
MAX_NODES = 3
MAX_ITEMS = 4
MAX_ITEM_BYTES = 2000
MAX_SUBSCRIBERS = 2
TIMEOUT = 10


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = XmppdProcess(
        tmp_path_factory.mktemp("pubsub"),
        extra_config=f"""
        [extensions.pubsub]
        max_nodes_per_user = {MAX_NODES}
        max_items = {MAX_ITEMS}
        max_item_bytes = {MAX_ITEM_BYTES}
        max_subscribers = {MAX_SUBSCRIBERS}
        """,
    ).start()
    yield process
    process.stop()


@pytest.fixture
async def online(server):
    """`await online(jid)`: a client logged in and available (notifications to a bare
    JID go to available resources), with its pubsub events gathered in `client.events`
    (a queue of (kind, message)); logged out after the test."""
    opened = []

    async def online(jid, *, on=server):
        client = Client(jid, "secret", verify_tls=False)
        client.events = asyncio.Queue()
        for kind in ("publish", "retract", "purge", "delete"):
            client.add_event_handler(f"pubsub_{kind}", lambda msg, kind=kind: client.events.put_nowait((kind, msg)))
        await client.login("127.0.0.1", on.port)
        opened.append(client)
        available = asyncio.get_running_loop().create_future()
        client.add_event_handler(
            "presence_available",
            lambda presence: (
                presence["from"] == client.boundjid and not available.done() and available.set_result(None)
            ),
        )
        client.send_presence()
        await asyncio.wait_for(available, TIMEOUT)
        return client

    yield online
    for client in opened:
        if client.is_connected():
            await client.logout()


def tune(title: str) -> ET.Element:
    element = ET.Element(f"{{{NS_TUNE}}}tune")
    ET.SubElement(element, f"{{{NS_TUNE}}}title").text = title
    return element


async def event(client, kind: str):
    got, message = await asyncio.wait_for(client.events.get(), TIMEOUT)
    assert got == kind, (got, message)
    return message


async def refused(call) -> tuple[str, str | None]:
    """(stanza error condition, pubsub#errors condition) of a request the service refuses."""
    with pytest.raises(IqError) as caught:
        await call
    error = caught.value.iq.xml.find("{jabber:client}error")
    specific = next((child.tag.split("}")[1] for child in error if child.tag.startswith(f"{{{NS_ERRORS}}}")), None)
    return caught.value.condition, specific


def node_name(prefix: str = "node") -> str:
    return f"{prefix}-{next(_nodes)}"


_nodes = iter(range(10**6))


async def test_the_service_is_discovered_on_the_server(online, users):
    (alice,) = users(1)
    client = await online(alice)
    disco = client.plugin["xep_0030"]
    assert SERVICE in {item[0] for item in (await disco.get_items("localhost"))["disco_items"]["items"]}
    info = (await disco.get_info(SERVICE))["disco_info"]
    assert ("pubsub", "service") in {identity[:2] for identity in info["identities"]}
    assert {
        NS_PUBSUB,
        f"{NS_PUBSUB}#create-nodes",
        f"{NS_PUBSUB}#access-whitelist",
        f"{NS_PUBSUB}#instant-nodes",
        f"{NS_PUBSUB}#modify-affiliations",
        f"{NS_PUBSUB}#manage-subscriptions",
    } <= set(info["features"])


async def test_publish_subscribe_retract_purge_delete(online, users):
    alice, bob = users(2)
    owner, subscriber = await online(alice), await online(bob)
    pubsub = owner.plugin["xep_0060"]
    node = node_name()
    await pubsub.create_node(SERVICE, node)
    assert node in {item[1] for item in (await owner.plugin["xep_0030"].get_items(SERVICE))["disco_items"]["items"]}
    answer = await subscriber.plugin["xep_0060"].subscribe(SERVICE, node)
    assert answer["pubsub"]["subscription"]["subscription"] == "subscribed"

    await pubsub.publish(SERVICE, node, id="one", payload=tune("first"))
    published = await event(subscriber, "publish")
    assert published["from"] == SERVICE and published["pubsub_event"]["items"]["node"] == node
    item = published["pubsub_event"]["items"]["item"]
    assert item["id"] == "one" and item["payload"].find(f"{{{NS_TUNE}}}title").text == "first"

    items = await subscriber.plugin["xep_0060"].get_items(SERVICE, node)  # persistent
    assert [i["id"] for i in items["pubsub"]["items"]] == ["one"]
    await pubsub.retract(SERVICE, node, "one", notify=True)
    assert (await event(subscriber, "retract"))["pubsub_event"]["items"]["retract"]["id"] == "one"
    assert len((await subscriber.plugin["xep_0060"].get_items(SERVICE, node))["pubsub"]["items"]) == 0

    await pubsub.publish(SERVICE, node, id="two", payload=tune("second"))
    await event(subscriber, "publish")
    await pubsub.purge(SERVICE, node)
    await event(subscriber, "purge")
    assert len((await subscriber.plugin["xep_0060"].get_items(SERVICE, node))["pubsub"]["items"]) == 0

    await subscriber.plugin["xep_0060"].unsubscribe(SERVICE, node)
    assert await refused(subscriber.plugin["xep_0060"].unsubscribe(SERVICE, node)) == (
        "unexpected-request",
        "not-subscribed",
    )
    await subscriber.plugin["xep_0060"].subscribe(SERVICE, node)
    await pubsub.delete_node(SERVICE, node)
    assert (await event(subscriber, "delete"))["pubsub_event"]["delete"]["node"] == node
    assert (await refused(subscriber.plugin["xep_0060"].get_items(SERVICE, node)))[0] == "item-not-found"


async def test_the_last_item_comes_on_subscription_and_items_survive_a_restart(make_xmppd, online):
    process = make_xmppd().start()
    alice, bob = process.adduser("alice"), process.adduser("bob")
    owner = await online(alice, on=process)
    await owner.plugin["xep_0060"].create_node(SERVICE, "news")
    await owner.plugin["xep_0060"].publish(SERVICE, "news", id="old", payload=tune("old"))
    await owner.plugin["xep_0060"].publish(SERVICE, "news", id="new", payload=tune("new"))
    await owner.logout()
    process.stop()
    process.start()
    subscriber = await online(bob, on=process)
    await subscriber.plugin["xep_0060"].subscribe(SERVICE, "news")
    last = await event(subscriber, "publish")
    assert last["pubsub_event"]["items"]["item"]["id"] == "new"
    assert last.xml.find("{urn:xmpp:delay}delay") is not None
    items = await subscriber.plugin["xep_0060"].get_items(SERVICE, "news")
    assert [i["id"] for i in items["pubsub"]["items"]] == ["old", "new"]


async def test_instant_nodes_and_the_default_configuration(online, users):
    (alice,) = users(1)
    client = await online(alice)
    pubsub = client.plugin["xep_0060"]
    answer = await pubsub.create_node(SERVICE, None)
    node = answer["pubsub"]["create"]["node"]
    assert node
    assert node in {a["node"] for a in (await pubsub.get_affiliations(SERVICE))["pubsub"]["affiliations"]}
    default = (await pubsub.get_node_config(SERVICE))["pubsub_owner"]["default"]["config"]
    assert default["values"]["pubsub#access_model"] == "open"
    await pubsub.delete_node(SERVICE, node)


async def test_owner_configures_and_manages_affiliations_and_subscriptions(online, users):
    alice, bob, carol = users(3)
    owner, member, other = await online(alice), await online(bob), await online(carol)
    pubsub = owner.plugin["xep_0060"]
    node = node_name("whitelist")
    await pubsub.create_node(SERVICE, node)
    form = (await pubsub.get_node_config(SERVICE, node))["pubsub_owner"]["configure"]["form"]
    form["type"] = "submit"
    form.field["pubsub#access_model"]["value"] = "whitelist"
    form.field["pubsub#max_items"]["value"] = "2"
    await pubsub.set_node_config(SERVICE, node, form)
    assert (await pubsub.get_node_config(SERVICE, node))["pubsub_owner"]["configure"]["form"]["values"][
        "pubsub#access_model"
    ] == "whitelist"

    # Whitelist: only affiliated entities subscribe and retrieve (XEP-0060 4.5).
    assert await refused(member.plugin["xep_0060"].subscribe(SERVICE, node)) == ("not-allowed", "closed-node")
    assert await refused(member.plugin["xep_0060"].get_items(SERVICE, node)) == ("not-allowed", "closed-node")
    await pubsub.modify_affiliations(SERVICE, node, [(bob, "member"), (carol, "outcast")])
    listed = {
        a["jid"]: a["affiliation"]
        for a in (await pubsub.get_node_affiliations(SERVICE, node))["pubsub_owner"]["affiliations"]
    }
    assert listed == {alice: "owner", bob: "member", carol: "outcast"}
    await member.plugin["xep_0060"].subscribe(SERVICE, node)
    assert (await refused(other.plugin["xep_0060"].get_items(SERVICE, node)))[0] == "forbidden"

    # Only owners configure, and only publishers and owners publish.
    assert (await refused(member.plugin["xep_0060"].get_node_config(SERVICE, node)))[0] == "forbidden"
    assert (await refused(member.plugin["xep_0060"].publish(SERVICE, node, payload=tune("x"))))[0] == "forbidden"
    await pubsub.modify_affiliations(SERVICE, node, [(bob, "publisher")])
    for number in range(3):
        await member.plugin["xep_0060"].publish(SERVICE, node, id=f"i{number}", payload=tune(str(number)))
        await event(member, "publish")
    items = await pubsub.get_items(SERVICE, node)
    assert [i["id"] for i in items["pubsub"]["items"]] == ["i1", "i2"]  # max_items = 2

    # Subscriptions managed by the owner (XEP-0060 8.8).
    subscriptions = (await pubsub.get_node_subscriptions(SERVICE, node))["pubsub_owner"]["subscriptions"]
    assert [(s["jid"], s["subscription"]) for s in subscriptions] == [(bob, "subscribed")]
    await pubsub.modify_subscriptions(SERVICE, node, [(bob, "none")])
    assert len((await member.plugin["xep_0060"].get_subscriptions(SERVICE, node))["pubsub"]["subscriptions"]) == 0
    # An owner subscribes no one else: the notifications would reach them unasked.
    assert (await refused(pubsub.modify_subscriptions(SERVICE, node, [(bob, "subscribed")])))[0] == "not-allowed"
    assert await refused(pubsub.modify_affiliations(SERVICE, node, [(alice, "none")])) == ("not-acceptable", None)
    await pubsub.delete_node(SERVICE, node)


async def test_publish_errors_follow_the_node_type(online, users):
    """XEP-0060 7.1.3.6: item-required, payload-required, item-forbidden."""
    (alice,) = users(1)
    client = await online(alice)
    pubsub = client.plugin["xep_0060"]
    persistent, transient = node_name(), node_name("transient")
    await pubsub.create_node(SERVICE, persistent)
    assert await refused(pubsub.publish(SERVICE, persistent)) == ("bad-request", "item-required")
    assert await refused(pubsub.publish(SERVICE, persistent, id="empty")) == ("bad-request", "payload-required")
    form = (await pubsub.get_node_config(SERVICE))["pubsub_owner"]["default"]["config"]
    form["type"] = "submit"
    form.field["pubsub#persist_items"]["value"] = False
    form.field["pubsub#deliver_payloads"]["value"] = False
    await pubsub.create_node(SERVICE, transient, config=form)
    await pubsub.publish(SERVICE, transient)
    assert await refused(pubsub.publish(SERVICE, transient, id="x", payload=tune("x"))) == (
        "bad-request",
        "item-forbidden",
    )


async def test_node_creation_is_for_local_users_by_default_and_configurable(make_xmppd):
    admins_only = make_xmppd("""
        [extensions.pubsub]
        node_creation = "admins"
        """).start()
    user = admins_only.adduser("someone")
    client = Client(user, "secret", verify_tls=False)
    await client.login("127.0.0.1", admins_only.port)
    try:
        assert (await refused(client.plugin["xep_0060"].create_node(SERVICE, "mine")))[0] == "forbidden"
        # Publishing to a missing node is no way around it (auto-create is for creators only).
        assert (await refused(client.plugin["xep_0060"].publish(SERVICE, "mine", payload=tune("x"))))[
            0
        ] == "item-not-found"
    finally:
        await client.logout()


async def test_limits_refuse_with_the_xep_errors_and_are_counted(server, online, users):
    alice, bob, carol, dave = users(4)
    owner = await online(alice)
    pubsub = owner.plugin["xep_0060"]
    # Being made an owner by someone else uses up none of one's own allowance.
    given = node_name("given")
    await (await online(bob)).plugin["xep_0060"].create_node(SERVICE, given)
    await (await online(bob)).plugin["xep_0060"].modify_affiliations(SERVICE, given, [(alice, "owner")])
    created = [node_name("quota") for _ in range(MAX_NODES)]
    for node in created:
        await pubsub.create_node(SERVICE, node)
    before = await server.limit_reached("extensions.pubsub.max_nodes_per_user")
    with pytest.raises(IqError) as caught:
        await pubsub.create_node(SERVICE, node_name("quota"))
    assert caught.value.condition == "not-allowed" and "nodes" in caught.value.text
    assert await server.limit_reached("extensions.pubsub.max_nodes_per_user") == before + 1

    big = ET.Element("{urn:example:big}blob")
    big.text = "x" * MAX_ITEM_BYTES
    assert await refused(pubsub.publish(SERVICE, created[0], payload=big)) == ("not-acceptable", "payload-too-big")
    assert await server.limit_reached("extensions.pubsub.max_item_bytes") >= 1

    for jid in (bob, carol):
        await (await online(jid)).plugin["xep_0060"].subscribe(SERVICE, created[0])
    with pytest.raises(IqError) as caught:
        await (await online(dave)).plugin["xep_0060"].subscribe(SERVICE, created[0])
    assert caught.value.condition == "not-allowed" and "subscriptions" in caught.value.text
    assert await server.limit_reached("extensions.pubsub.max_subscribers") >= 1

    answer = await owner.plugin["xep_0060"].get_node_config(SERVICE, created[0])
    form = answer["pubsub_owner"]["configure"]["form"]
    form["type"] = "submit"
    form.field["pubsub#max_items"]["value"] = str(MAX_ITEMS + 1)
    assert (await refused(pubsub.set_node_config(SERVICE, created[0], form)))[0] == "not-acceptable"
    for node in (*created, given):
        await pubsub.delete_node(SERVICE, node)


async def test_the_service_holds_at_most_max_nodes(make_xmppd, online):
    small = make_xmppd("""
        [extensions.pubsub]
        max_nodes = 2
        """).start()
    first, second = await online(small.adduser("first"), on=small), await online(small.adduser("second"), on=small)
    await first.plugin["xep_0060"].create_node(SERVICE, "a")
    await first.plugin["xep_0060"].create_node(SERVICE, "b")
    with pytest.raises(IqError) as caught:
        await second.plugin["xep_0060"].create_node(SERVICE, "c")
    assert caught.value.condition == "not-allowed" and "nodes" in caught.value.text
    assert await small.limit_reached("extensions.pubsub.max_nodes") == 1
    await first.plugin["xep_0060"].delete_node(SERVICE, "a")
    await second.plugin["xep_0060"].create_node(SERVICE, "c")


async def test_a_deleted_account_takes_its_nodes_subscriptions_and_affiliations(server, online, users):
    alice, bob = users(2)
    leaving, staying = await online(alice), await online(bob)
    own, other = node_name("leaving"), node_name("staying")
    await leaving.plugin["xep_0060"].create_node(SERVICE, own)
    await staying.plugin["xep_0060"].subscribe(SERVICE, own)
    await staying.plugin["xep_0060"].create_node(SERVICE, other)
    await staying.plugin["xep_0060"].modify_affiliations(SERVICE, other, [(alice, "publisher")])
    await leaving.plugin["xep_0060"].subscribe(SERVICE, other)
    removed = asyncio.ensure_future(leaving.plugin["xep_0077"].cancel_registration())  # XEP-0077 <remove/>
    assert (await event(staying, "delete"))["pubsub_event"]["delete"]["node"] == own
    await asyncio.wait({removed}, timeout=TIMEOUT)  # the stream closes as the answer comes
    pubsub = staying.plugin["xep_0060"]
    listed = (await pubsub.get_node_affiliations(SERVICE, other))["pubsub_owner"]["affiliations"]
    assert {str(a["jid"]) for a in listed} == {bob}
    assert len((await pubsub.get_node_subscriptions(SERVICE, other))["pubsub_owner"]["subscriptions"]) == 0
    await pubsub.delete_node(SERVICE, other)


# ------------------------------------------------------------------ PEP: the whitelist access model


async def test_pep_whitelist_admits_only_the_members_the_owner_names(online, users):
    """XEP-0060 4.5 and 8.9 on a PEP node (what XEP-0373 secret key backups use)."""
    alice, bob = users(2)
    owner, member = await online(alice), await online(bob)
    pubsub = owner.plugin["xep_0060"]
    node = "urn:xmpp:openpgp:0:secret-key"
    form = (await pubsub.get_node_config(alice))["pubsub_owner"]["default"]["config"]
    form["type"] = "submit"
    form.field["pubsub#access_model"]["value"] = "whitelist"
    await pubsub.create_node(alice, node, config=form)
    await pubsub.publish(alice, node, id="current", payload=tune("secret"))
    assert await refused(member.plugin["xep_0060"].get_items(alice, node)) == ("not-allowed", "closed-node")

    await pubsub.modify_affiliations(alice, node, [(bob, "member")])
    listed = {
        a["jid"]: a["affiliation"]
        for a in (await pubsub.get_node_affiliations(alice, node))["pubsub_owner"]["affiliations"]
    }
    assert listed == {alice: "owner", bob: "member"}
    items = await member.plugin["xep_0060"].get_items(alice, node)
    assert [i["id"] for i in items["pubsub"]["items"]] == ["current"]

    assert (await refused(pubsub.modify_affiliations(alice, node, [(bob, "publisher")])))[0] == "not-acceptable"
    assert (await refused(member.plugin["xep_0060"].modify_affiliations(alice, node, [(bob, "none")])))[
        0
    ] == "forbidden"
    await pubsub.modify_affiliations(alice, node, [(bob, "none")])
    assert await refused(member.plugin["xep_0060"].get_items(alice, node)) == ("not-allowed", "closed-node")


async def test_the_server_domain_lists_peps_pubsub_features_for_smack(online, users):
    """Smack looks on the server's domain, not on the account: OmemoManager.
    serverSupportsOmemo for pubsub, OpenPgpManager.serverSupportsSecretKeyBackups for
    access-whitelist."""
    (alice,) = users(1)
    client = await online(alice)
    info = (await client.plugin["xep_0030"].get_info("localhost"))["disco_info"]
    assert {NS_PUBSUB, f"{NS_PUBSUB}#access-whitelist"} <= set(info["features"])
