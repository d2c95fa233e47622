"""RFC 6121 section 2 roster management, with XEP-0237 roster versioning.

A user reads and edits their own roster (name and groups of each contact); the
subscription states change only through presence (extensions/presence.py), which
uses `lock`, `save` and `push` here. Every change is pushed to the user's interested
resources (those that asked for the roster) with the new roster version; a roster get
that names the current version is answered with an empty result.

Limits per account (counted in xmppd_limit_reached_total): contacts per roster, groups per
contact and characters of a name or group; a roster lives in the roster cache
(xmppd/roster_cache.py) too, so they bound its memory as well.

Hooks: iq-get and iq-set self|bare/jabber:iq:roster:query, user-deleted.
Fires: roster-item-removed (RosterItemRemoved, a notification) after a roster set
with subscription='remove', so that presence.py ends the subscriptions (RFC 6121 2.5.2);
session-changed (the Session) when a resource becomes interested in roster pushes.
"""

from __future__ import annotations

import copy
import dataclasses
import secrets
from dataclasses import dataclass

from lxml import etree

from xmppd.extension import REPLIED, Extension, hook, iq_handler
from xmppd.locks import KeyedLocks
from xmppd.protocol.errors import BadRequest, Forbidden, ItemNotFound, JidMalformed, NotAcceptable, NotAllowed
from xmppd.protocol.jid import JID, InvalidJID
from xmppd.protocol.stanza import IQ, make_element, reply, sub_element
from xmppd.storage.interfaces import RosterItem

NS_ROSTER = "jabber:iq:roster"
NS_ROSTER_VERSIONING = "urn:xmpp:features:rosterver"

QUERY = f"{{{NS_ROSTER}}}query"
ITEM = f"{{{NS_ROSTER}}}item"
GROUP = f"{{{NS_ROSTER}}}group"
VERSIONING_FEATURE = etree.tostring(make_element(f"{{{NS_ROSTER_VERSIONING}}}ver"))


@dataclass(frozen=True)
class RosterItemRemoved:
    owner: JID  # the user's bare JID
    item: RosterItem  # the item as it was before the removal


def item_element(item: RosterItem) -> etree._Element:
    """The <item/> of a roster result or push (RFC 6121 2.1.2)."""
    element = make_element(
        ITEM,
        {
            "jid": item.jid,
            "name": item.name or None,
            "subscription": item.subscription,
            "ask": "subscribe" if item.ask else None,
            "approved": "true" if item.approved else None,
        },
    )
    for group in item.groups:
        sub_element(element, GROUP, text=group)
    return element


def removed_element(contact: str) -> etree._Element:
    return make_element(ITEM, {"jid": contact, "subscription": "remove"})


class Roster(Extension):
    xeps = {237: "1.3"}

    @dataclass(frozen=True)
    class Options:
        max_items: int = 1000  # contacts per roster; a set over it gets not-allowed
        max_text_length: int = 255  # characters of an item name or a group name
        max_groups_per_item: int = 16  # groups of one contact

        def validate(self, where):
            for name in ("max_items", "max_text_length", "max_groups_per_item"):
                where.check(name, getattr(self, name) > 0, "must be positive")

    def __init__(self, host, options):
        super().__init__(host, options)
        self.lock = KeyedLocks()  # per owner (bare JID string): read-modify-write of a roster
        self.rosters = host.storage.rosters

    def stream_features(self, authenticated: bool) -> list[bytes]:
        return [VERSIONING_FEATURE] if authenticated else []

    # ------------------------------------------------------------- the protocol

    @iq_handler("get", NS_ROSTER, "query", to=("self", "bare"))
    async def get_roster(self, iq):
        owner = self._own_roster(iq)
        async with self.lock(str(owner)):  # no push between the roster read and its result
            version, items = await self.rosters.get(str(owner))
            if not iq.origin.interested:
                iq.origin.interested = True
                await self.host.bus.notify("session-changed", iq.origin)
            if iq.element[0].get("ver") == str(version):
                self._answer(iq)  # XEP-0237: the client's copy is current; pushes follow
                return REPLIED
            query = make_element(QUERY, {"ver": str(version)})
            for contact in sorted(items):
                query.append(item_element(items[contact]))
            self._answer(iq, query)
        return REPLIED

    @iq_handler("set", NS_ROSTER, "query", to=("self", "bare"))
    async def set_roster(self, iq):
        owner = self._own_roster(iq)
        element = self._single_item(iq.element[0])
        contact = self._contact(element, owner)
        if element.get("subscription") == "remove":  # RFC 6121 2.1.2.5: other values are ignored
            await self._remove(iq, owner, contact)
            return REPLIED
        name, groups = self._name_and_groups(element)
        async with self.lock(str(owner)):
            old = await self.rosters.get_item(str(owner), contact)
            if old is None:
                await self.check_room(owner)
                item = RosterItem(contact, name=name, groups=groups)
            else:
                item = dataclasses.replace(old, name=name, groups=groups)
            version = await self.rosters.put_item(str(owner), item)
            self._answer(iq)
            self.push(owner, item_element(item), version)
        return REPLIED

    async def _remove(self, iq, owner: JID, contact: str) -> None:
        async with self.lock(str(owner)):
            old = await self.rosters.get_item(str(owner), contact)
            if old is None:
                raise ItemNotFound()  # RFC 6121 2.5.3
            version = await self.rosters.remove_item(str(owner), contact)
            self.push(owner, removed_element(contact), version)
        await self.host.bus.notify("roster-item-removed", RosterItemRemoved(owner, old))
        # After the subscriptions ended: the result tells the client the contact has been
        # sent its unsubscribe/unsubscribed (as Prosody does), not only that the item is gone.
        self._answer(iq)

    def _answer(self, iq, payload: etree._Element | None = None) -> None:
        # Straight to the sender, under the roster lock: a result comes before the
        # pushes of later changes (RFC 6121 2.3.2) and pushes leave in version order.
        iq.origin.send(reply(iq.element, payload))

    # ------------------------------------------------------------- for presence.py

    async def check_room(self, owner: JID) -> None:
        """Refuse a new item when the roster is full."""
        _, items = await self.rosters.get(str(owner))
        if len(items) >= self.options.max_items:
            raise NotAllowed(
                text=f"the roster is full: {self.options.max_items} contacts ({self.limit_reached('max_items')})"
            )

    async def save(self, owner: JID, item: RosterItem) -> None:
        """Store `item` and push it; the caller holds `self.lock(str(owner))`."""
        version = await self.rosters.put_item(str(owner), item)
        self.push(owner, item_element(item), version)

    def push(self, owner: JID, item: etree._Element, version: int) -> None:
        """A roster push of `item` to every interested resource of `owner` (RFC 6121 2.1.6)."""
        for session in self.host.sessions_of(owner.local):
            if not session.interested:
                continue
            iq = make_element(
                IQ, {"type": "set", "id": f"push-{secrets.token_hex(6)}", "from": str(owner), "to": str(session.jid)}
            )
            sub_element(iq, QUERY, {"ver": str(version)}).append(copy.deepcopy(item))
            session.send(iq)

    @hook("user-deleted")
    async def delete_roster(self, jid: JID) -> None:
        await self.rosters.delete(str(jid))

    # ------------------------------------------------------------- validation

    @staticmethod
    def _own_roster(iq) -> JID:
        if iq.target != "self":
            raise Forbidden(text="only the account itself reads or changes its roster")
        return iq.from_.bare

    @staticmethod
    def _single_item(query: etree._Element) -> etree._Element:
        children = [child for child in query if isinstance(child.tag, str)]
        if len(children) != 1 or children[0].tag != ITEM:
            raise BadRequest(text="a roster set holds exactly one item")
        return children[0]

    @staticmethod
    def _contact(element: etree._Element, owner: JID) -> str:
        value = element.get("jid")
        if not value:
            raise BadRequest(text="the item has no jid")
        try:
            contact = JID.parse(value)
        except InvalidJID:
            raise JidMalformed() from None
        if contact.resource is not None:
            raise BadRequest(text="roster items are bare JIDs")
        if contact == owner:
            raise NotAllowed(text="an account is not a contact of itself")
        return str(contact)

    def _name_and_groups(self, element: etree._Element) -> tuple[str | None, tuple[str, ...]]:
        """RFC 6121 2.3.3: duplicate groups are a bad request; an empty or over-long
        group name or an over-long item name is not acceptable, and so (a limit of
        the same kind, which the RFC does not name) are too many groups."""
        limit = self.options.max_text_length
        name = element.get("name") or None
        if name is not None and len(name) > limit:
            raise NotAcceptable(
                text=f"the name is longer than {limit} characters ({self.limit_reached('max_text_length')})"
            )
        groups: list[str] = []
        for group in element.iterchildren(GROUP):
            text = group.text or ""
            if not text:
                raise NotAcceptable(text="a group name is empty")
            if len(text) > limit:
                raise NotAcceptable(
                    text=f"a group name is longer than {limit} characters ({self.limit_reached('max_text_length')})"
                )
            if text in groups:
                raise BadRequest(text=f"the group {text!r} is given twice")
            groups.append(text)
        if len(groups) > self.options.max_groups_per_item:
            raise NotAcceptable(
                text=f"a contact is in at most {self.options.max_groups_per_item} groups "
                f"({self.limit_reached('max_groups_per_item')})"
            )
        return name, tuple(groups)
