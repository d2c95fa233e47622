"""XEP-0191 Blocking Command: a user's block list, and the server keeping blocked
contacts out.

The list is read, extended (<block/>), shrunk (<unblock/>) or emptied (an empty
<unblock/>) with iqs to the user's own account; every change is pushed to the user's
resources that asked for the list. It is kept in the key-value store "blocklist" (one
key per blocked JID, the Unix time it was blocked as its value) and cached for the users recently seen. A listed JID matches as
XEP-0016 says: a full JID only itself, a bare JID any of its resources, a domain itself,
its users and its subdomains.

While a JID is blocked (section 3.3): what it sends to the user is refused: messages and
iq gets and sets with service-unavailable (the user looks offline), presence of any kind,
probes included, dropped without an answer; so are a room's messages that relay its words
(XEP-0045 mediated invitations and declines naming it in 'from'); what the user sends to
it is refused with not-acceptable and <blocked xmlns='urn:xmpp:blocking:errors'/>
(results and errors, and unavailable presence, are dropped); the user's own presence
broadcasts and probe answers do not reach it. Blocking sends the contact unavailable presence from each available
resource first (if the contact was subscribed to the user's presence); unblocking sends
it the current presence again and probes it on the user's behalf. The roster is left
as it is ("polite blocking", section 4).

Hooks: iq-get/iq-set self urn:xmpp:blocking blocklist, block, unblock; pre-message,
pre-presence, pre-iq to bare, full and host JIDs (outbound, priority 100);
message/bare|full, presence/bare|full, iq/bare|full (inbound, priority 100: before
everything else); user-deleted; user-data-changed-elsewhere (a list changed on another
node of a cluster: the cached copy goes).
Fires: user-data-changed after a change of a list.
"""

from __future__ import annotations

import collections
import copy
import secrets
import time
from dataclasses import dataclass

from lxml import etree

from xmppd.extension import REPLIED, Extension, hook, iq_handler
from xmppd.host import BlockQuery, UserDataChanged, blocks
from xmppd.locks import KeyedLocks
from xmppd.protocol.errors import BadRequest, JidMalformed, NotAcceptable, NotAllowed, ServiceUnavailable
from xmppd.protocol.jid import JID, InvalidJID
from xmppd.protocol.stanza import IQ, PRESENCE, error_reply, make_element, reply, sub_element
from xmppd.router import Stanza

NS_BLOCKING = "urn:xmpp:blocking"
NS_BLOCKING_ERRORS = "urn:xmpp:blocking:errors"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
# What a room relays of a user's in its own name (XEP-0045 7.8.2): invitations, declines.
RELAYED = (f"{{{NS_MUC_USER}}}invite", f"{{{NS_MUC_USER}}}decline")
ITEM = f"{{{NS_BLOCKING}}}item"
BLOCKED_ERROR = f"{{{NS_BLOCKING_ERRORS}}}blocked"
FIRST = 100  # before carbons, the archive and delivery
CACHE_SIZE = 10000  # users whose block lists stay in memory


def candidates(jid: JID) -> set[str]:
    """The block list entries that match `jid` (XEP-0191 section 4, after XEP-0016)."""
    found = {str(jid), str(jid.bare)}
    if jid.resource is not None:
        found.add(f"{jid.domain}/{jid.resource}")
    labels = jid.domain.split(".")
    found.update(".".join(labels[start:]) for start in range(len(labels)))
    return found


def blocked_error() -> NotAcceptable:
    return NotAcceptable(type="cancel", text="you have blocked this contact", app_condition=make_element(BLOCKED_ERROR))


@dataclass(frozen=True)
class Change:
    """A block list change as the iq and its pushes carry it."""

    verb: str  # block | unblock
    jids: tuple[str, ...]  # empty for "unblock all"

    def to_element(self) -> etree._Element:
        element = make_element(f"{{{NS_BLOCKING}}}{self.verb}")
        for jid in self.jids:
            sub_element(element, ITEM, {"jid": jid})
        return element


class Blocking(Extension):
    xeps = {191: "1.3"}
    features = [NS_BLOCKING]

    @dataclass(frozen=True)
    class Options:
        max_items: int = 1000  # JIDs in one user's block list

        def validate(self, where):
            where.check("max_items", self.max_items > 0, "must be positive")

    def __init__(self, host, options):
        super().__init__(host, options)
        self.lock = KeyedLocks()  # per owner: read-modify-write of the list, and its pushes
        self.cache: collections.OrderedDict[str, frozenset[str]] = collections.OrderedDict()

    async def start(self) -> None:
        self.store = self.host.open_keyvalue("blocklist")
        self.rosters = self.host.storage.rosters

    # ------------------------------------------------------------- the list

    async def blocklist(self, owner: str) -> frozenset[str]:
        jids = self.cache.get(owner)
        if jids is None:
            jids = frozenset(await self.store.keys(owner))
            # A change stored while we read has put the newer list in the cache: keep it.
            jids = self.cache.setdefault(owner, jids)
            if len(self.cache) > CACHE_SIZE:
                self.cache.popitem(last=False)
        else:
            self.cache.move_to_end(owner)
        return jids

    @hook("user-data-changed-elsewhere")
    async def forget_list(self, change: UserDataChanged) -> None:
        if change.kind == self.name:
            self.cache.pop(change.owner, None)

    async def is_blocked(self, owner: JID, jid: JID) -> bool:
        """Whether the user `owner` (a bare JID of this host) blocks `jid`."""
        jids = await self.blocklist(str(owner))
        return bool(jids) and not jids.isdisjoint(candidates(jid))

    @iq_handler("get", NS_BLOCKING, "blocklist", to=("self",))
    async def get_blocklist(self, iq):
        await iq.origin.share(self.name, True)  # this resource gets the pushes from now on
        element = make_element(f"{{{NS_BLOCKING}}}blocklist")
        for jid in sorted(await self.blocklist(str(iq.from_.bare))):
            sub_element(element, ITEM, {"jid": jid})
        return element

    @iq_handler("set", NS_BLOCKING, "block", to=("self",))
    async def block(self, iq):
        owner = iq.from_.bare
        jids = self._items(iq.element[0])
        if not jids:
            raise BadRequest(text="<block/> needs at least one item")
        if any(jid in candidates(owner) or JID.parse(jid).bare == owner for jid in jids):
            raise NotAcceptable(text="an account cannot block itself or its own server")
        async with self.lock(str(owner)):
            old = await self.blocklist(str(owner))
            new = [jid for jid in jids if jid not in old]
            if len(old) + len(new) > self.options.max_items:
                raise NotAllowed(text=f"the block list is full ({self.options.max_items} JIDs)")
            await self._say_goodbye(owner, new)  # once stored, nothing of the user's reaches them
            for jid in new:
                await self.store.set(str(owner), jid, str(int(time.time())).encode())  # when
            self.cache[str(owner)] = old | frozenset(new)
            await self.host.bus.notify("user-data-changed", UserDataChanged(self.name, str(owner)))
            self._answer_and_push(iq, Change("block", tuple(jids)))
        return REPLIED

    @iq_handler("set", NS_BLOCKING, "unblock", to=("self",))
    async def unblock(self, iq):
        owner = iq.from_.bare
        jids = self._items(iq.element[0])
        async with self.lock(str(owner)):
            old = await self.blocklist(str(owner))
            if jids:
                gone = [jid for jid in jids if jid in old]
                for jid in gone:
                    await self.store.delete(str(owner), jid)
            else:  # section 3.5: unblock everyone
                gone = sorted(old)
                await self.store.delete(str(owner))
            self.cache[str(owner)] = old - frozenset(gone)
            await self.host.bus.notify("user-data-changed", UserDataChanged(self.name, str(owner)))
            self._answer_and_push(iq, Change("unblock", tuple(jids)))
        await self._say_hello(owner, gone)
        return REPLIED

    @staticmethod
    def _items(element: etree._Element) -> list[str]:
        jids: list[str] = []
        for item in element.iterchildren(ITEM):
            value = item.get("jid")
            if not value:
                raise BadRequest(text="an item needs a jid")
            try:
                jid = str(JID.parse(value))
            except InvalidJID:
                raise JidMalformed(text=f"{value!r} is not a JID") from None
            if jid not in jids:
                jids.append(jid)
        return jids

    def _answer_and_push(self, iq, change: Change) -> None:
        """The result, then the push to every resource that asked for the list (sections
        3.3 to 3.5); under the owner's lock, so that pushes leave in the order of changes."""
        iq.origin.send(reply(iq.element))
        owner = iq.from_.bare
        for session in self.host.sessions_of(owner.local):
            if session.shared.get(self.name):
                push = make_element(
                    IQ,
                    {"type": "set", "id": f"block-{secrets.token_hex(6)}", "from": str(owner), "to": str(session.jid)},
                )
                push.append(change.to_element())
                session.send(push)

    async def _contacts_matching(self, owner: JID, jids: list[str]):
        """(contact, roster item, the entries of `jids` that match the contact)."""
        if not jids:
            return
        _, items = await self.rosters.get(str(owner))
        for contact, item in items.items():
            matched = [jid for jid in jids if jid in candidates(JID.parse(contact))]
            if matched:
                yield contact, item, matched

    async def _say_goodbye(self, owner: JID, jids: list[str]) -> None:
        """Section 3.3: unavailable presence from each available resource to the newly
        blocked contacts that receive the user's presence."""
        async for contact, item, matched in self._contacts_matching(owner, jids):
            if not item.has_from:
                continue
            for session in self.host.available_sessions(owner.local):
                for jid in matched:
                    await self.host.send(
                        make_element(
                            PRESENCE, {"type": "unavailable", "from": str(session.jid), "to": _addressee(jid, contact)}
                        )
                    )

    async def _say_hello(self, owner: JID, jids: list[str]) -> None:
        """Section 3.4: the current presence to unblocked contacts that receive the user's
        presence, and a probe of those whose presence the user receives (it was dropped)."""
        async for contact, item, matched in self._contacts_matching(owner, jids):
            for session in self.host.available_sessions(owner.local):
                if item.has_from and session.presence is not None:
                    for jid in matched:
                        presence = copy.deepcopy(session.presence)
                        presence.set("to", _addressee(jid, contact))
                        await self.host.send(presence)
                if item.has_to:
                    await self.host.send(
                        make_element(PRESENCE, {"type": "probe", "from": str(session.jid), "to": contact})
                    )

    # ------------------------------------------------------------- enforcement

    @hook("pre-message/bare", priority=FIRST)
    @hook("pre-message/full", priority=FIRST)
    @hook("pre-message/host", priority=FIRST)
    @hook("pre-presence/bare", priority=FIRST)
    @hook("pre-presence/full", priority=FIRST)
    @hook("pre-presence/host", priority=FIRST)
    @hook("pre-iq/bare", priority=FIRST)
    @hook("pre-iq/full", priority=FIRST)
    @hook("pre-iq/host", priority=FIRST)
    async def outbound(self, stanza: Stanza) -> bool:
        """Section 3.3: the user's stanzas to a JID it blocks are not routed."""
        if not await self.is_blocked(stanza.from_.bare, stanza.to):
            return False
        if stanza.type not in ("error", "result", "unavailable"):  # those are dropped
            # Straight back to the client: routed, it would come "from" the blocked JID
            # and be dropped on the way in.
            stanza.origin.send(error_reply(stanza.element, blocked_error()))
        return True

    @hook("message/bare", priority=FIRST)
    @hook("message/full", priority=FIRST)
    @hook("iq/bare", priority=FIRST)
    @hook("iq/full", priority=FIRST)
    async def inbound(self, stanza: Stanza) -> bool:
        """Section 3.3: messages and iq gets and sets from a blocked JID get
        service-unavailable, as if the user were not there; the rest is dropped. A
        room's invitation or decline that relays a blocked JID's words counts as from it."""
        senders = [stanza.from_, *relayed_authors(stanza)]
        if not any([await self.is_blocked(stanza.to.bare, jid) for jid in senders]):
            return False
        if stanza.type in ("error", "result"):
            return True
        raise ServiceUnavailable()

    @hook("presence/bare", priority=FIRST)
    @hook("presence/full", priority=FIRST)
    async def inbound_presence(self, stanza: Stanza) -> bool:
        """Presence is dropped either way: from a JID the user blocks, and from a user of
        this server to a JID it blocks (broadcasts and probe answers have no pre- event)."""
        if await self.is_blocked(stanza.to.bare, stanza.from_):
            return True
        return await blocks(self.services.directory, stanza.from_, stanza.to)

    @hook("is-blocked")
    async def answer_is_blocked(self, query: BlockQuery) -> bool:
        return await self.is_blocked(query.owner, query.contact)

    @hook("user-deleted")
    async def delete_blocklist(self, jid: JID) -> None:
        await self.store.delete(str(jid))
        self.cache.pop(str(jid), None)


def relayed_authors(stanza: Stanza) -> list[JID]:
    """The users whose invitations or declines a room relays in a message (their 'from')."""
    if stanza.kind != "message":
        return []
    authors = []
    for x in stanza.element.iterchildren(f"{{{NS_MUC_USER}}}x"):
        for relayed in x.iterchildren(*RELAYED):
            try:
                authors.append(JID.parse(relayed.get("from") or ""))
            except InvalidJID:
                pass  # not a user: nobody to block
    return authors


def _addressee(entry: str, contact: str) -> str:
    """Where presence for a block list entry goes: the entry if it is a full JID of the
    contact, else the contact's bare JID."""
    jid = JID.parse(entry)
    return entry if jid.resource is not None and str(jid.bare) == contact else contact
