"""End to end: what one account may store on the server is bounded (issue 20, item 6).
Each test first grows the store as an attacker would, up to the configured limit (small
here, so each test stays short), then shows the next request refused with the error its
XEP or RFC names and a <text/> naming the limit, and the refusal counted in
xmppd_limit_reached_total."""

import pytest

from tests.support.messaging import archive, bodies, connect, rsm, send, with_id
from tests.support.pep import (
    NS_STANZAS,
    error_of,
    items_request,
    online,  # noqa: F401  (fixture)
    publish,
)
from tests.support.server import XmppdProcess
from tests.support.smacks import authenticated, bind, drop, managed_login

PEP_MAX_NODES = 4
PEP_MAX_ITEM_BYTES = 2000
PEP_MAX_BYTES = 5000
ROSTER_MAX_ITEMS = 5
ROSTER_MAX_GROUPS = 3
ROSTER_MAX_TEXT = 20
MAM_MAX = 150
MAX_RESOURCES = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = XmppdProcess(
        tmp_path_factory.mktemp("quotas"),
        c2s_section=f"max_resources_per_account = {MAX_RESOURCES}",
        extra_config=f"""
        [extensions.pep]
        max_nodes = {PEP_MAX_NODES}
        max_item_bytes = {PEP_MAX_ITEM_BYTES}
        max_bytes_per_account = {PEP_MAX_BYTES}

        [extensions.roster]
        max_items = {ROSTER_MAX_ITEMS}
        max_groups_per_item = {ROSTER_MAX_GROUPS}
        max_text_length = {ROSTER_MAX_TEXT}

        [extensions.mam]
        max_messages_per_user = {MAM_MAX}
        """,
    ).start()
    yield process
    process.stop()


def text_of(answer) -> str:
    return answer.findtext(f"{{jabber:client}}error/{{{NS_STANZAS}}}text") or ""


def blob(node: str, size: int) -> str:
    """A payload of `size` bytes in `node`'s namespace."""
    head, tail = f"<b xmlns='{node}'>", "</b>"
    return head + "x" * (size - len(head) - len(tail)) + tail


# ------------------------------------------------------------------ PEP


async def test_pep_nodes_per_account_are_bounded(server, users, online):
    (alice,) = users(1)
    owner = await online(alice)
    before = await server.limit_reached("extensions.pep.max_nodes")
    for n in range(PEP_MAX_NODES):
        answer = await owner.iq("set", alice, publish(f"urn:example:node{n}", f"<n xmlns='urn:example:node{n}'/>"))
        assert answer.get("type") == "result"
    refused = await owner.iq("set", alice, publish("urn:example:one-more", "<n xmlns='urn:example:one-more'/>"))
    assert error_of(refused) == ("not-allowed", "max-nodes-exceeded")
    assert "extensions.pep.max_nodes" in text_of(refused)
    assert await server.limit_reached("extensions.pep.max_nodes") == before + 1
    # Deleting a node makes room again.
    delete = "<pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><delete node='urn:example:node0'/></pubsub>"
    assert (await owner.iq("set", alice, delete)).get("type") == "result"
    again = await owner.iq("set", alice, publish("urn:example:one-more", "<n xmlns='urn:example:one-more'/>"))
    assert again.get("type") == "result"


async def test_pep_payload_size_is_bounded(server, users, online):
    (alice,) = users(1)
    owner = await online(alice)
    node = "urn:example:big"
    before = await server.limit_reached("extensions.pep.max_item_bytes")
    assert (await owner.iq("set", alice, publish(node, blob(node, PEP_MAX_ITEM_BYTES)))).get("type") == "result"
    refused = await owner.iq("set", alice, publish(node, blob(node, PEP_MAX_ITEM_BYTES + 1)))
    assert error_of(refused) == ("not-acceptable", "payload-too-big")
    assert "extensions.pep.max_item_bytes" in text_of(refused)
    assert await server.limit_reached("extensions.pep.max_item_bytes") == before + 1


async def test_pep_bytes_per_account_are_bounded(server, users, online):
    """Items of the largest size, kept by max_items = max, fill the account's quota;
    replacing an item or retracting one frees what it held."""
    (alice,) = users(1)
    owner = await online(alice)
    node, size = "urn:example:fill", 1000
    before = await server.limit_reached("extensions.pep.max_bytes_per_account")
    for n in range(PEP_MAX_BYTES // size):
        answer = await owner.iq("set", alice, publish(node, blob(node, size), f"i{n}", max_items="max"))
        assert answer.get("type") == "result", n
    refused = await owner.iq("set", alice, publish("urn:example:other", blob("urn:example:other", size)))
    assert error_of(refused)[0] == "policy-violation"
    assert "extensions.pep.max_bytes_per_account" in text_of(refused)
    assert await server.limit_reached("extensions.pep.max_bytes_per_account") == before + 1
    # The same id replaces its item: no more bytes than before.
    assert (await owner.iq("set", alice, publish(node, blob(node, size), "i0", max_items="max"))).get(
        "type"
    ) == "result"
    retract = (
        f"<pubsub xmlns='http://jabber.org/protocol/pubsub'><retract node='{node}'><item id='i1'/></retract></pubsub>"
    )
    assert (await owner.iq("set", alice, retract)).get("type") == "result"
    other = await owner.iq("set", alice, publish("urn:example:other", blob("urn:example:other", size)))
    assert other.get("type") == "result"
    assert (
        len((await owner.iq("get", alice, items_request(node))).findall(".//{http://jabber.org/protocol/pubsub}item"))
        == 4
    )


# ------------------------------------------------------------------ roster


def roster_set(contact: str, name: str = "", groups=()) -> str:
    named = f" name='{name}'" if name else ""
    return (
        f"<query xmlns='jabber:iq:roster'><item jid='{contact}'{named}>"
        + "".join(f"<group>{group}</group>" for group in groups)
        + "</item></query>"
    )


async def test_roster_items_groups_and_names_are_bounded(server, users, online):
    """RFC 6121 2.3.3: a name or group over the size limit is not acceptable, and so are
    too many groups; a contact beyond the roster's size is not allowed."""
    (alice,) = users(1)
    owner = await online(alice)
    keys = [f"extensions.roster.{option}" for option in ("max_groups_per_item", "max_text_length", "max_items")]
    before = {key: await server.limit_reached(key) for key in keys}

    groups = [f"g{n}" for n in range(ROSTER_MAX_GROUPS + 1)]
    assert (await owner.iq("set", alice, roster_set("c0@example.net", groups=groups[:-1]))).get("type") == "result"
    refused = await owner.iq("set", alice, roster_set("c0@example.net", groups=groups))
    assert error_of(refused)[0] == "not-acceptable" and "extensions.roster.max_groups_per_item" in text_of(refused)
    long = "n" * (ROSTER_MAX_TEXT + 1)
    for request in (roster_set("c0@example.net", name=long), roster_set("c0@example.net", groups=[long])):
        refused = await owner.iq("set", alice, request)
        assert error_of(refused)[0] == "not-acceptable" and "extensions.roster.max_text_length" in text_of(refused)

    for n in range(1, ROSTER_MAX_ITEMS):
        assert (await owner.iq("set", alice, roster_set(f"c{n}@example.net"))).get("type") == "result"
    refused = await owner.iq("set", alice, roster_set("one-more@example.net"))
    assert error_of(refused)[0] == "not-allowed" and "extensions.roster.max_items" in text_of(refused)

    roster = await owner.iq("get", alice, "<query xmlns='jabber:iq:roster'/>")
    items = roster.findall(".//{jabber:iq:roster}item")
    assert len(items) == ROSTER_MAX_ITEMS
    assert max(len(item.findall("{jabber:iq:roster}group")) for item in items) == ROSTER_MAX_GROUPS
    after = {key: await server.limit_reached(key) for key in keys}
    assert [after[key] - before[key] for key in keys] == [1, 2, 1]


# ------------------------------------------------------------------ archive


async def test_an_archive_keeps_its_newest_messages_up_to_its_quota(server, users):
    """Anyone who may message a user grows the user's archive: it keeps the newest
    max_messages_per_user (checked every 100 written), every message still delivered."""
    alice, bob = users(2)
    sender, receiver = await connect(server, alice, "a"), await connect(server, bob, "b")
    before = await server.limit_reached("extensions.mam.max_messages_per_user")
    sent = 2 * MAM_MAX
    last = None
    for n in range(sent):
        last = send(sender, bob, body=f"m{n}")
    await receiver.inbox.wait(with_id(last))
    assert len(receiver.inbox.received(lambda s: s.findtext("{jabber:client}body", "").startswith("m"))) == sent

    for user in (sender, receiver):
        results, fin = await archive(user, rsm="<max>5</max>")
        assert rsm(fin, "count") == str(MAM_MAX)
        assert bodies(results) == [f"m{n}" for n in range(sent - MAM_MAX, sent - MAM_MAX + 5)]  # the oldest went
    assert await server.limit_reached("extensions.mam.max_messages_per_user") == before + 2 * (sent - MAM_MAX)
    await sender.client.logout()
    await receiver.client.logout()


# ------------------------------------------------------------------ resources


async def test_resources_per_account_are_bounded_hibernating_ones_included(server, users):
    """RFC 6120 7.6.2.1: a bind beyond the account's resources gets resource-constraint.
    A session dropped without a stream close and kept for XEP-0198 resumption counts."""
    (alice,) = users(1)
    user = alice.split("@")[0]
    before = await server.limit_reached("c2s.max_resources_per_account")
    hibernating, _ = await managed_login(server, user, "r0")
    drop(hibernating)
    await server.wait_for_log(f"event=hibernating jid={alice}/r0")
    clients = [(await managed_login(server, user, f"r{n}"))[0] for n in range(1, MAX_RESOURCES)]

    extra, _ = await authenticated(server, user)
    await extra.send(
        "<iq type='set' id='one-more'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
        "<resource>r-extra</resource></bind></iq>"
    )
    refused = await extra.expect(r"<iq[^>]*id=.one-more.[^>]*>(.*?)</iq>")
    assert "type='error'" in refused.group(0) or 'type="error"' in refused.group(0)
    assert "<resource-constraint" in refused.group(1) and "c2s.max_resources_per_account" in refused.group(1)
    assert "type='wait'" in refused.group(1) or 'type="wait"' in refused.group(1)
    assert await server.limit_reached("c2s.max_resources_per_account") == before + 1

    # The stream may bind again: a resource bound already is replaced, not added.
    assert await bind(extra, "r1") == f"{alice}/r1"
    for client in (extra, *clients):
        await client.close()
