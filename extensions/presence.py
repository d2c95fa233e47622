"""RFC 6121 sections 3 and 4: presence subscriptions, presence broadcast, probes and
directed presence.

Subscriptions follow the state tables of RFC 6121 Appendix A on both sides: outbound
subscription stanzas are stamped with the sender's bare JID and change the sender's
roster before they are routed; inbound ones change the addressee's roster. Every change
is a roster push (extensions/roster.py). An inbound request that awaits an answer is
kept whole, with its <status/> or XEP-0172 nick, in the key-value store "roster-pending"
and delivered again at each initial presence until it is answered (3.1.3).
Pre-approval (3.4) is supported and offered as a stream feature.

An available presence without 'to' goes to the contacts subscribed to the user (from,
both) and to the user's available resources; an initial one also probes the contacts
the user is subscribed to (to, both) and brings the new resource the presence of the
user's other resources and the pending requests. Directed presence is remembered and
followed by unavailable presence when the resource goes away, cleanly or not.

Hooks: pre-presence/bare|full|host (outbound subscriptions, directed presence),
presence/bare|full (inbound subscriptions and probes), presence/broadcast,
session-closed, roster-item-removed, user-deleted.
Fires: message/offline/deliver (the Session) when a resource becomes available with a
non-negative priority, after its presence went out, so that the offline messages come
to it (extensions/offline.py); session-changed (the Session) when its availability,
priority or presence changed, before that presence is broadcast (the cluster shares it).
"""

from __future__ import annotations

import copy
import dataclasses
import time

from lxml import etree

from xmppd.extension import Extension, hook
from xmppd.extensions.roster import RosterItemRemoved
from xmppd.protocol.errors import BadRequest, NotAllowed, ResourceConstraint
from xmppd.protocol.jid import JID
from xmppd.protocol.stanza import PRESENCE, delay_element, make_element, parse_priority, stored_stanza, to_storage
from xmppd.storage.interfaces import RosterItem

NS_PRE_APPROVAL = "urn:xmpp:features:pre-approval"
PRE_APPROVAL_FEATURE = etree.tostring(make_element(f"{{{NS_PRE_APPROVAL}}}sub"))

SUBSCRIPTION_TYPES = frozenset(("subscribe", "subscribed", "unsubscribe", "unsubscribed"))
# Subscription states that include "to" (the user receives the contact's presence) or
# "from" (the contact receives the user's), and what adding or removing one gives.
ADD_TO = {"none": "to", "from": "both", "to": "to", "both": "both"}
ADD_FROM = {"none": "from", "to": "both", "from": "from", "both": "both"}
REMOVE_TO = {"to": "none", "both": "from", "none": "none", "from": "from"}
REMOVE_FROM = {"from": "none", "both": "to", "none": "none", "to": "to"}


class Presence(Extension):
    depends = ["roster"]

    async def start(self) -> None:
        self.roster = self.host.extensions["roster"]
        self.rosters = self.host.storage.rosters
        self.pending = self.host.open_keyvalue("roster-pending")  # owner -> contact -> subscribe stanza

    def stream_features(self, authenticated: bool) -> list[bytes]:
        return [PRE_APPROVAL_FEATURE] if authenticated else []

    # ------------------------------------------------------------- outbound

    @hook("pre-presence/bare")
    @hook("pre-presence/full")
    @hook("pre-presence/host")
    async def outbound(self, stanza) -> bool:
        """A presence with a 'to' from one of our users."""
        if stanza.type in SUBSCRIPTION_TYPES:
            await self._outbound_subscription(stanza)
            return True
        if stanza.type in (None, "unavailable"):
            await self._track_directed(stanza)
        return False  # directed presence, probes and errors are routed as they are

    async def _track_directed(self, stanza) -> None:
        """RFC 6121 4.6.2: remember who got directed presence outside the broadcast."""
        session, to = stanza.origin, stanza.to
        if to.bare == session.jid.bare:
            return
        directed = session.meta.setdefault(self.name, set())
        if stanza.type == "unavailable":
            directed.discard(to)
            return
        item = await self.rosters.get_item(str(session.jid.bare), str(to.bare))
        if item is None or not item.has_from:
            directed.add(to)

    async def _outbound_subscription(self, stanza) -> None:
        owner, contact, element = stanza.from_.bare, stanza.to.bare, stanza.element
        if contact == owner:
            raise NotAllowed(text="an account is always subscribed to itself")
        element.set("from", str(owner))  # RFC 6121 3.1.2, 3.2.2, 3.3.2: the bare JIDs
        element.set("to", str(contact))
        await getattr(self, f"_send_{stanza.type}")(owner, contact, element)

    async def _send_subscribe(self, owner: JID, contact: JID, element) -> None:
        async with self.roster.lock(str(owner)):
            item = await self._item_or_new(owner, contact)
            if not item.has_to and not item.ask:
                await self.roster.save(owner, dataclasses.replace(item, ask=True))
        await self.host.send(element)

    async def _send_subscribed(self, owner: JID, contact: JID, element) -> None:
        async with self.roster.lock(str(owner)):
            request = await self.pending.get(str(owner), str(contact))
            item = await self.rosters.get_item(str(owner), str(contact))
            if request is not None:
                item = item or await self._item_or_new(owner, contact)
                await self.roster.save(
                    owner, dataclasses.replace(item, subscription=ADD_FROM[item.subscription], approved=False)
                )
                await self.pending.delete(str(owner), str(contact))
            elif item is None or not item.has_from:
                item = item or await self._item_or_new(owner, contact)
                if not item.approved:  # RFC 6121 3.4: pre-approval, nothing is routed
                    await self.roster.save(owner, dataclasses.replace(item, approved=True))
        if request is not None:
            await self.host.send(element)
            await self._send_current_presence(owner, contact)  # RFC 6121 3.1.5

    async def _send_unsubscribe(self, owner: JID, contact: JID, element) -> None:
        async with self.roster.lock(str(owner)):
            item = await self.rosters.get_item(str(owner), str(contact))
            if item is not None and (item.ask or item.has_to):
                await self.roster.save(
                    owner, dataclasses.replace(item, subscription=REMOVE_TO[item.subscription], ask=False)
                )
        await self.host.send(element)

    async def _send_unsubscribed(self, owner: JID, contact: JID, element) -> None:
        async with self.roster.lock(str(owner)):
            if await self.pending.get(str(owner), str(contact)) is not None:
                await self.pending.delete(str(owner), str(contact))  # a request denied
            item = await self.rosters.get_item(str(owner), str(contact))
            was_subscribed = item is not None and item.has_from
            if was_subscribed or (item is not None and item.approved):
                await self.roster.save(
                    owner, dataclasses.replace(item, subscription=REMOVE_FROM[item.subscription], approved=False)
                )
        await self.host.send(element)
        if was_subscribed:
            await self._send_unavailable(owner, contact)  # RFC 6121 3.2.2

    async def _item_or_new(self, owner: JID, contact: JID) -> RosterItem:
        """The roster item of `contact`, or a new one if the roster has room."""
        item = await self.rosters.get_item(str(owner), str(contact))
        if item is None:
            await self.roster.check_room(owner)
            item = RosterItem(str(contact))
        return item

    # ------------------------------------------------------------- inbound

    @hook("presence/bare")
    @hook("presence/full")
    async def inbound(self, stanza) -> bool:
        """A presence to one of our users; RFC 6121 8.5.3 treats subscription stanzas
        and probes to a full JID as sent to the bare JID."""
        if stanza.type == "probe":
            await self._probed(stanza.to.bare, stanza.from_)
            return True
        if stanza.type in SUBSCRIPTION_TYPES:
            stanza.element.set("to", str(stanza.to.bare))
            await getattr(self, f"_received_{stanza.type}")(stanza.to.bare, stanza.from_.bare, stanza.element)
            return True
        return False  # presence and errors: the core delivers them

    async def _received_subscribe(self, owner: JID, user: JID, element) -> None:
        """RFC 6121 3.1.3, with `owner` the contact asked for a subscription by `user`."""
        if not await self.host.user_exists(owner.local):
            await self._send_type(owner, user, "unsubscribed")  # RFC 6121 8.5.1
            return
        approved = ask_owner = False
        async with self.roster.lock(str(owner)):
            item = await self.rosters.get_item(str(owner), str(user))
            if item is not None and item.has_from:
                approved = True  # already subscribed: answer again
            elif item is not None and item.approved:
                await self.roster.save(
                    owner, dataclasses.replace(item, subscription=ADD_FROM[item.subscription], approved=False)
                )
                approved = True
            elif await self.pending.get(str(owner), str(user)) is None:
                # One request per contact is kept and shown, against subscription spam.
                if len(await self.pending.keys(str(owner))) >= self.roster.options.max_items:
                    raise ResourceConstraint(text="too many subscription requests are waiting")
                await self.pending.set(str(owner), str(user), to_storage(element))
                ask_owner = True
        if approved:
            await self._send_type(owner, user, "subscribed")
            await self._send_current_presence(owner, user)
        elif ask_owner:
            self._deliver(owner, element)

    async def _received_subscribed(self, owner: JID, contact: JID, element) -> None:
        """RFC 6121 3.1.6: only an answer to a request of ours changes anything."""
        async with self.roster.lock(str(owner)):
            item = await self.rosters.get_item(str(owner), str(contact))
            changed = item is not None and item.ask and not item.has_to
            if changed:
                await self.roster.save(
                    owner, dataclasses.replace(item, subscription=ADD_TO[item.subscription], ask=False)
                )
        if changed:
            self._deliver(owner, element)

    async def _received_unsubscribe(self, owner: JID, user: JID, element) -> None:
        """RFC 6121 3.3.3: `user` no longer wants `owner`'s presence (or withdraws a request)."""
        async with self.roster.lock(str(owner)):
            withdrawn = await self.pending.get(str(owner), str(user)) is not None
            if withdrawn:
                await self.pending.delete(str(owner), str(user))
            item = await self.rosters.get_item(str(owner), str(user))
            was_subscribed = item is not None and item.has_from
            if was_subscribed:
                await self.roster.save(owner, dataclasses.replace(item, subscription=REMOVE_FROM[item.subscription]))
        if was_subscribed or withdrawn:
            self._deliver(owner, element)
        if was_subscribed:
            await self._send_unavailable(owner, user)

    async def _received_unsubscribed(self, owner: JID, contact: JID, element) -> None:
        """RFC 6121 3.2.3: a request denied or a subscription cancelled; a pre-approval stays."""
        async with self.roster.lock(str(owner)):
            item = await self.rosters.get_item(str(owner), str(contact))
            changed = item is not None and (item.ask or item.has_to)
            if changed:
                await self.roster.save(
                    owner, dataclasses.replace(item, subscription=REMOVE_TO[item.subscription], ask=False)
                )
        if changed:
            self._deliver(owner, element)

    async def _probed(self, owner: JID, prober: JID) -> None:
        """RFC 6121 4.3.2: the last presence of each available resource to a subscriber,
        unavailable presence when there is none, and 'unsubscribed' to anyone else."""
        if prober.bare != owner:
            item = await self.rosters.get_item(str(owner), str(prober.bare))
            if item is None or not item.has_from:
                await self._send_type(owner, prober.bare, "unsubscribed")
                return
        if self.host.available_sessions(owner.local):
            await self._send_current_presence(owner, prober)
        else:
            await self._send_type(owner, prober, "unavailable")

    def _deliver(self, owner: JID, element) -> None:
        """A subscription stanza to the owner's available resources (RFC 6121 8.5.2.1)."""
        for session in self.host.available_sessions(owner.local):
            session.send(element)

    # ------------------------------------------------------------- broadcast

    @hook("presence/broadcast")
    async def broadcast(self, stanza) -> bool:
        """A presence without 'to' from one of our users (RFC 6121 4.2, 4.4, 4.5)."""
        if stanza.type is None:
            await self._available(stanza.origin, stanza.element)
        elif stanza.type == "unavailable":
            await self._unavailable(stanza.origin, stanza.element)
        elif stanza.type != "error":
            raise BadRequest(text=f"a presence of type {stanza.type} needs a 'to'")
        return True

    async def _available(self, session, element) -> None:
        owner = session.jid.bare
        initial, was_negative = not session.available, session.priority < 0
        session.available = True
        session.priority = parse_priority(element)
        stored = copy.deepcopy(element)  # what probes and new resources get later, with its time
        stored.append(delay_element(self.host.domain, time.time()))
        session.presence = stored
        await self.host.bus.notify("session-changed", session)
        _, items = await self.rosters.get(str(owner))
        await self._broadcast(session, element, items, to_self=True)
        if session.closed:
            return
        if initial:
            for contact, item in items.items():  # RFC 6121 4.2.2
                if item.has_to:
                    await self.host.send(
                        make_element(PRESENCE, {"type": "probe", "from": str(session.jid), "to": contact})
                    )
            for other in self.host.available_sessions(owner.local):
                if other is not session and other.presence is not None:
                    session.send(self._addressed(other.presence, session.jid))
            for contact in await self.pending.keys(str(owner)):  # RFC 6121 3.1.3
                data = await self.pending.get(str(owner), contact)
                if data is None:
                    continue
                request = stored_stanza(data, self.log, owner=owner, contact=contact)
                if request is not None:
                    session.send(request)
                else:  # it would stand in for the contact's next request
                    await self.pending.delete(str(owner), contact)
        if session.priority >= 0 and (initial or was_negative) and not session.closed:
            await self.host.bus.fire("message/offline/deliver", session)

    async def _unavailable(self, session, element, *, to_self: bool = True) -> None:
        if session.available:
            session.available = False
            session.presence = None
            await self.host.bus.notify("session-changed", session)
            _, items = await self.rosters.get(str(session.jid.bare))
            await self._broadcast(session, element, items, to_self=to_self)
        await self._end_directed(session, element)

    @hook("session-closed")
    async def went_away(self, session) -> None:
        """RFC 6121 4.5.2 and 4.6.3: a resource that closed its stream or lost its
        connection without unavailable presence is unavailable to everyone it told."""
        element = make_element(PRESENCE, {"type": "unavailable", "from": str(session.jid)})
        await self._unavailable(session, element, to_self=False)

    async def _broadcast(self, session, element, items: dict[str, RosterItem], *, to_self: bool) -> None:
        """To the contacts subscribed to the user, then to the user's available
        resources, the sending one included when `to_self` (RFC 6121 4.2.2)."""
        for contact, item in items.items():
            if item.has_from:
                await self.host.send(self._addressed(element, contact))
        for other in self.host.available_sessions(session.jid.local):
            if other is not session:
                other.send(self._addressed(element, other.jid))
        if to_self and not session.closed:
            session.send(self._addressed(element, session.jid))

    async def _end_directed(self, session, element) -> None:
        for to in session.meta.pop(self.name, ()):
            await self.host.send(self._addressed(element, to))

    # ------------------------------------------------------------- helpers

    @staticmethod
    def _addressed(element, to) -> etree._Element:
        """A copy of `element` to `to`: each copy may sit in a queue of its own."""
        out = copy.deepcopy(element)
        out.set("to", str(to))
        return out

    async def _send_type(self, from_: JID, to: JID, type_: str) -> None:
        await self.host.send(make_element(PRESENCE, {"type": type_, "from": str(from_), "to": str(to)}))

    async def _send_current_presence(self, owner: JID, to: JID) -> None:
        for session in self.host.available_sessions(owner.local):
            if session.presence is not None:
                await self.host.send(self._addressed(session.presence, to))

    async def _send_unavailable(self, owner: JID, to: JID) -> None:
        for session in self.host.available_sessions(owner.local):
            await self.host.send(
                make_element(PRESENCE, {"type": "unavailable", "from": str(session.jid), "to": str(to)})
            )

    # ------------------------------------------------------------- removal

    @hook("roster-item-removed")
    async def end_subscriptions(self, event: RosterItemRemoved) -> None:
        """RFC 6121 2.5.2: removing a contact ends the subscriptions both ways."""
        async with self.roster.lock(str(event.owner)):
            request = await self.pending.get(str(event.owner), event.item.jid)
            if request is not None:
                await self.pending.delete(str(event.owner), event.item.jid)
        await self._cancel(event.owner, JID.parse(event.item.jid), event.item, requested=request is not None)

    @hook("user-deleted", priority=1)  # before roster.py deletes the roster
    async def leave_contacts(self, jid: JID) -> None:
        owner = str(jid)
        _, items = await self.rosters.get(owner)
        requests = set(await self.pending.keys(owner))
        for contact in set(items) | requests:
            await self._cancel(jid, JID.parse(contact), items.get(contact), requested=contact in requests)
        await self.pending.delete(owner)

    async def _cancel(self, owner: JID, contact: JID, item: RosterItem | None, *, requested: bool) -> None:
        if item is not None and (item.ask or item.has_to):
            await self._send_type(owner, contact, "unsubscribe")
        if requested or (item is not None and item.has_from):
            await self._send_type(owner, contact, "unsubscribed")
        if item is not None and item.has_from:
            await self._send_unavailable(owner, contact)
