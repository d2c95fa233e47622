"""XEP-0060 Publish-Subscribe: the protocol half shared by the per-account services of PEP
(XEP-0163, extensions/pep) and the service on its own domain (extensions/pubsub), as
xmppd/mam.py is for the archives. Each service keeps its own rules (who owns a node, who
may publish, which rosters the access models read, what a missing node answers); what is
the same is here:

    __init__.py      namespaces, the pubsub error conditions (section 7), reading requests
                     (actions, node, subscriber, items), answers and event notifications
    nodes.py         node configuration (section 16.4.4), XEP-0223 publish options
    affiliations.py  the owner's <affiliations/> requests (section 8.9)
"""

from __future__ import annotations

import secrets

from lxml import etree

from xmppd.ids import time_ordered_id
from xmppd.protocol.errors import (
    BadRequest,
    FeatureNotImplemented,
    NotAllowed,
    NotAuthorized,
    StanzaError,
    UnexpectedRequest,
)
from xmppd.protocol.jid import JID, InvalidJID
from xmppd.protocol.stanza import MESSAGE, delay_element, from_storage, make_element, sub_element
from xmppd.storage.interfaces import PubSubItem

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_PUBSUB_OWNER = "http://jabber.org/protocol/pubsub#owner"
NS_PUBSUB_EVENT = "http://jabber.org/protocol/pubsub#event"
NS_PUBSUB_ERRORS = "http://jabber.org/protocol/pubsub#errors"

PUBSUB = f"{{{NS_PUBSUB}}}pubsub"
OWNER = f"{{{NS_PUBSUB_OWNER}}}pubsub"
ITEM = f"{{{NS_PUBSUB}}}item"
EVENT = f"{{{NS_PUBSUB_EVENT}}}event"

MAX_ITEM_ID = 1023  # characters of an item id a publisher chooses


def pubsub_error(error: type[StanzaError], condition: str, text: str | None = None, **attributes) -> StanzaError:
    """A stanza error with its pubsub#errors condition (XEP-0060 section 7, 6.5.9...)."""
    return error(text=text, app_condition=make_element(f"{{{NS_PUBSUB_ERRORS}}}{condition}", attributes or None))


# ------------------------------------------------------------- requests


def actions(iq) -> tuple[list[etree._Element], list[str]]:
    """The actions of a <pubsub/> request (its child elements) and their local names."""
    found = [child for child in iq.element[0] if isinstance(child.tag, str)]
    return found, [etree.QName(child).localname for child in found]


def unsupported(names: list[str]) -> StanzaError:
    """The error of a request that is not one action the service takes."""
    if len(names) != 1:
        return BadRequest(text="one pubsub action is expected")
    return pubsub_error(FeatureNotImplemented, "unsupported", feature=names[0])


def node_of(action: etree._Element) -> str:
    node = action.get("node")
    if not node:
        raise pubsub_error(BadRequest, "nodeid-required")
    return node


def jid_of(value: str | None) -> JID:
    try:
        return JID.parse(value or "")
    except InvalidJID:
        raise pubsub_error(BadRequest, "invalid-jid") from None


def subscriber_of(iq, request: etree._Element) -> JID:
    """Section 6.1.3.1: one subscribes only oneself (a bare or full JID of one's own)."""
    subscriber = jid_of(request.get("jid"))
    if subscriber.bare != iq.from_.bare:
        raise pubsub_error(BadRequest, "invalid-jid")
    return subscriber


def items_wanted(request: etree._Element) -> tuple[list[str] | None, int | None]:
    """The item ids (None: any) and the most items (None: all) an <items/> request asks
    for (sections 6.5.7 and 6.5.8)."""
    ids = [item.get("id") for item in request.findall(ITEM) if item.get("id")]
    limit = request.get("max_items")
    if limit is not None and (not limit.isdigit() or int(limit) < 1):
        raise BadRequest(text="max_items must be a positive number")
    return ids or None, int(limit) if limit else None


def item_id_of(given: str | None) -> str:
    """The id of an item to publish: the publisher's (a bounded one), or a new one when it
    gives none (section 7.1.1)."""
    item_id = given or time_ordered_id()
    if len(item_id) > MAX_ITEM_ID:
        raise BadRequest(text="the item id is too long")
    return item_id


def unsubscribe(config: dict, subscriber: JID) -> None:
    """Remove the subscription of `subscriber` from a node's configuration (section 6.2)."""
    subscribers = config.get("subscribers", [])
    if str(subscriber) not in subscribers:
        raise pubsub_error(UnexpectedRequest, "not-subscribed")
    subscribers.remove(str(subscriber))


def access_denied(model: str) -> StanzaError:
    """The error of a requester that the node's access model refuses (section 6.1.3)."""
    if model == "presence":
        return pubsub_error(NotAuthorized, "presence-subscription-required")
    if model == "roster":
        return pubsub_error(NotAuthorized, "not-in-roster-group")
    return pubsub_error(NotAllowed, "closed-node")


def in_allowed_group(config: dict, groups) -> bool:
    """The roster access model: is a contact in `groups` of a node owner's roster in one of
    the groups the node allows?"""
    return bool(set(groups) & set(config.get("roster_groups_allowed") or ()))


# ------------------------------------------------------------- answers


def items_answer(node: str, found: list[PubSubItem]) -> etree._Element:
    """<pubsub><items/></pubsub> with stored items (newest first), oldest first as published."""
    answer = make_element(PUBSUB)
    listed = sub_element(answer, f"{{{NS_PUBSUB}}}items", {"node": node})
    for stored in reversed(found):
        item = sub_element(listed, ITEM, {"id": stored.id})
        if stored.payload:
            item.append(from_storage(stored.payload))
    return answer


def subscriptions_answer(requester: JID, node: str | None, configs: list[tuple[str, dict]]) -> etree._Element:
    """The subscriptions of `requester` (any of its JIDs) to the nodes of `configs` (name,
    configuration), asked for one node or for all (`node` None), section 5.6."""
    answer = make_element(PUBSUB)
    listed = sub_element(answer, f"{{{NS_PUBSUB}}}subscriptions", {"node": node})
    for name, config in configs:
        for jid in config.get("subscribers", []):
            if JID.parse(jid).bare == requester.bare:
                sub_element(
                    listed, f"{{{NS_PUBSUB}}}subscription", {"node": name, "jid": jid, "subscription": "subscribed"}
                )
    return answer


def subscribed_answer(node: str, subscriber: JID) -> etree._Element:
    """Section 6.1.2: the subscription one just made."""
    answer = make_element(PUBSUB)
    sub_element(
        answer, f"{{{NS_PUBSUB}}}subscription", {"node": node, "jid": str(subscriber), "subscription": "subscribed"}
    )
    return answer


# ------------------------------------------------------------- event notifications


def event_message(
    from_: str, to: JID, config: dict, event_child: etree._Element, when: float | None = None
) -> etree._Element:
    """The notification message of section 7.1.2 (delayed when `when` is given: a last
    published item, section 6.1.7)."""
    message = make_element(
        MESSAGE,
        {"from": from_, "to": str(to), "id": secrets.token_hex(8), "type": config.get("notification_type", "headline")},
    )
    sub_element(message, EVENT).append(event_child)
    if when is not None:
        message.append(delay_element(from_, when))
    return message


def items_event(node: str, child: etree._Element | None = None) -> etree._Element:
    """<items node=.../> of an event, around an <item/> or a <retract/>."""
    items = make_element(f"{{{NS_PUBSUB_EVENT}}}items", {"node": node})
    if child is not None:
        items.append(child)
    return items


def stored_item_event(node: str, config: dict, stored: PubSubItem) -> etree._Element:
    """The event of a stored item (the last published one), its payload included when the
    node delivers payloads."""
    item = make_element(f"{{{NS_PUBSUB_EVENT}}}item", {"id": stored.id})
    if stored.payload and config.get("deliver_payloads", True):
        item.append(from_storage(stored.payload))
    return items_event(node, item)
