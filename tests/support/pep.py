"""Helpers for the PEP, OMEMO and profile end-to-end tests: users online with their
'+notify' interests in their caps, contacts, pubsub requests and their errors."""

from __future__ import annotations

import itertools
from xml.sax.saxutils import quoteattr

import pytest
from lxml import etree

from tests.support.inbox import MESSAGE, PRESENCE, Inbox, presence, roster_push
from tests.support.muc import User
from xmppd.client import Client

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_OWNER = NS_PUBSUB + "#owner"
NS_EVENT = NS_PUBSUB + "#event"
NS_ERRORS = NS_PUBSUB + "#errors"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_DELAY = "urn:xmpp:delay"
PUBLISH_OPTIONS = NS_PUBSUB + "#publish-options"
NODE_CONFIG = NS_PUBSUB + "#node_config"

_ids = itertools.count()


READY = "urn:xmpp:xmppd:test:ready"


async def login(server, jid: str, resource: str | None = None, *, interests=(), plugins=None) -> User:
    """A user online, whose caps (XEP-0115) carry '<node>+notify' for each of `interests`.

    The server learns those interests from the client (disco#info) after the presence:
    to know that it has, the user also shows interest in a node of its own, READY, and
    publishes to it; the notification comes once the server knows (at once, or as the
    last item when the caps are resolved)."""
    options = {"plugins": plugins} if plugins is not None else {}
    client = Client(f"{jid}/{resource}" if resource else jid, "secret", verify_tls=False, **options)
    client.auto_authorize = None
    client.auto_subscribe = False
    inbox = Inbox(client)
    await client.login("127.0.0.1", server.port)
    for node in (*interests, READY) if interests else ():
        client.plugin["xep_0030"].add_feature(f"{node}+notify")
    await client.get_roster()
    await client.plugin["xep_0115"].update_caps(broadcast=False)
    client.send_presence()
    await inbox.wait(lambda s: s.tag == PRESENCE and s.get("from") == str(client.boundjid) and s.get("type") is None)
    user = User(str(client.boundjid), client, inbox)
    if interests:
        await user.iq("set", jid, publish(READY, f"<ready xmlns='{READY}'/>", "current", access_model="whitelist"))
        await inbox.wait(event_from(jid, READY))
    return user


async def befriend(a: User, b: User) -> None:
    """A mutual presence subscription between two online users."""
    a_bare, b_bare = a.jid.split("/")[0], b.jid.split("/")[0]
    for asker, asker_bare, asked, asked_bare in ((a, a_bare, b, b_bare), (b, b_bare, a, a_bare)):
        await asker.send(f"<presence to='{asked_bare}' type='subscribe'/>")
        await asked.inbox.wait(presence("subscribe", from_=asker_bare))
        await asked.send(f"<presence to='{asker_bare}' type='subscribed'/>")
        await asker.inbox.wait(presence("subscribed", from_=asked_bare))
    await a.inbox.wait(roster_push(b_bare, subscription="both"))
    await b.inbox.wait(roster_push(a_bare, subscription="both"))


def form(form_type: str, fields: dict[str, str | list[str]]) -> str:
    rows = "".join(
        f"<field var={quoteattr(var)}>"
        + "".join(f"<value>{value}</value>" for value in (values if isinstance(values, list) else [values]))
        + "</field>"
        for var, values in fields.items()
    )
    return (
        f"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
        f"<value>{form_type}</value></field>{rows}</x>"
    )


def publish(node: str, payload: str, item_id: str | None = None, **options) -> str:
    """A publish request; `options` (access_model='open'...) become publish options."""
    attribute = f" id={quoteattr(item_id)}" if item_id else ""
    extra = ""
    if options:
        extra = f"<publish-options>{form(PUBLISH_OPTIONS, {f'pubsub#{k}': v for k, v in options.items()})}</publish-options>"
    return f"<pubsub xmlns='{NS_PUBSUB}'><publish node={quoteattr(node)}><item{attribute}>{payload}</item></publish>{extra}</pubsub>"


def items_request(node: str, *, max_items: int | None = None, ids=()) -> str:
    limit = f" max_items='{max_items}'" if max_items else ""
    wanted = "".join(f"<item id={quoteattr(i)}/>" for i in ids)
    return f"<pubsub xmlns='{NS_PUBSUB}'><items node={quoteattr(node)}{limit}>{wanted}</items></pubsub>"


def item_ids(answer: etree._Element) -> list[str]:
    return [item.get("id") for item in answer.iter(f"{{{NS_PUBSUB}}}item")]


def error_of(answer: etree._Element) -> tuple[str | None, str | None]:
    """(stanza error condition, pubsub#errors condition) of an error reply."""
    assert answer.get("type") == "error", etree.tostring(answer)
    error = answer.find("{jabber:client}error")
    condition = next(
        (
            etree.QName(c).localname
            for c in error
            if etree.QName(c).namespace == NS_STANZAS and etree.QName(c).localname != "text"
        ),
        None,
    )
    specific = next((etree.QName(c).localname for c in error if etree.QName(c).namespace == NS_ERRORS), None)
    return condition, specific


def event_from(owner: str, node: str):
    """A predicate: a pubsub event notification about `node` from the service `owner`."""

    def match(stanza):
        return (
            stanza.tag == MESSAGE
            and stanza.get("from") == owner
            and stanza.find(f"{{{NS_EVENT}}}event/*[@node={quoteattr(node)}]") is not None
        )

    return match


async def round_trip(user: User) -> None:
    """Everything the server sent `user` for its earlier stanzas has arrived."""
    await user.client.plugin["xep_0199"].send_ping(user.client.boundjid.domain, timeout=10)


@pytest.fixture
async def online(server):
    """`await online(jid, resource=None, **options)`: a user logged in by `login`,
    logged out after the test (import this fixture into a test module)."""
    opened = []

    async def online(jid, resource=None, **options):
        user = await login(server, jid, resource, **options)
        opened.append(user.client)
        return user

    yield online
    for client in opened:
        if client.is_connected():
            await client.logout()
