"""XEP-0115 Entity Capabilities as a PEP service reads them: which '+notify' features a
client's caps stand for (XEP-0163 section 4.2, filtered notifications).

A client's presence carries <c node ver hash/>. The features behind a 'ver' are learned
once, by disco#info to the client (node 'node#ver'), and cached by 'ver' only when the
reply hashes to it (XEP-0115 section 5.4), so that no client can poison the cache for
others; an unverifiable reply serves that client's session only. What a resource wants
is kept in its session (`wants`); when it comes online, or its caps show a new interest,
it is sent the last items it did not know of (notifications.py, section 4.3.2).

Hooks: presence/broadcast (the presence of the user's own resources).
"""
from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass

from lxml import etree

from xmppd.caps import NS_CAPS, NS_DISCO_INFO, verification_string
from xmppd.extension import Extension, hook
from xmppd.extensions.presence import parse_priority
from xmppd.locks import KeyedLocks
from xmppd.protocol.stanza import IQ, make_element, sub_element

CAPS = f"{{{NS_CAPS}}}c"
NOTIFY = "+notify"
INTEREST = "pep"                       # the key of a session's SessionInterest in session.meta


@dataclass(frozen=True)
class SessionInterest:
    """What a resource's caps told: its 'ver' and the nodes it wants notifications of."""
    ver: str | None
    nodes: frozenset[str]


def wants(session, node: str) -> bool:
    """Does this resource want notifications of `node`? (None go to a negative priority.)"""
    interest = session.meta.get(INTEREST)
    return interest is not None and node in interest.nodes and session.priority >= 0


def caps_of(presence: etree._Element) -> tuple[str, str, str | None] | None:
    """(node, ver, hash) of a presence's caps, None without caps."""
    c = presence.find(CAPS)
    if c is None or not c.get("node") or not c.get("ver"):
        return None
    return c.get("node"), c.get("ver"), c.get("hash")


def features_of(query: etree._Element) -> frozenset[str]:
    return frozenset(f.get("var", "") for f in query.iterchildren(f"{{{NS_DISCO_INFO}}}feature"))


def interests(features: frozenset[str]) -> frozenset[str]:
    """The nodes a client wants notifications of: its features ending in '+notify'."""
    return frozenset(f[:-len(NOTIFY)] for f in features if f.endswith(NOTIFY))


class CapsCache:
    """Verified 'ver' strings and their features, the least recently used dropped first."""

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict[str, frozenset[str]] = OrderedDict()

    def get(self, ver: str) -> frozenset[str] | None:
        features = self._entries.get(ver)
        if features is not None:
            self._entries.move_to_end(ver)
        return features

    def put(self, ver: str, features: frozenset[str]) -> None:
        self._entries[ver] = features
        self._entries.move_to_end(ver)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


class PepCaps(Extension):
    depends = ["pep.notifications"]

    def __init__(self, host, options):
        super().__init__(host, options)
        self.options = host.extensions["pep"].options
        self.notifications = host.extensions["pep.notifications"]
        self.lock = KeyedLocks()           # per full JID: caps updates in presence order
        self.cache = CapsCache(self.options.caps_cache_size)

    @hook("presence/broadcast", priority=1)          # before presence.py, which handles it
    async def track_caps(self, stanza) -> bool:
        """A resource's presence: learn its interests, then send it the last items it
        did not know of (XEP-0163 section 4.3.2)."""
        session = stanza.origin
        if session is None:
            return False
        if stanza.type == "unavailable":
            session.meta.pop(INTEREST, None)
        elif stanza.type is None:
            self.server.spawn(self._update_interest(session, caps_of(stanza.element), not session.available,
                                                    parse_priority(stanza.element)))
        return False

    async def _update_interest(self, session, caps, initial: bool, priority: int) -> None:
        async with self.lock(str(session.jid)):
            old = session.meta.get(INTEREST)
            if caps is None:
                interest = SessionInterest(None, frozenset())
            elif old is not None and old.ver == caps[1]:
                interest = old
            else:
                interest = SessionInterest(caps[1], interests(await self._features(session, caps)))
            if session.closed:
                return
            session.meta[INTEREST] = interest
            new = interest.nodes if initial or old is None else interest.nodes - old.nodes
            if priority >= 0 and new:
                await self.notifications.send_last_items(session, new)

    async def _features(self, session, caps) -> frozenset[str]:
        """The disco#info features behind a resource's caps, cached when verified."""
        node, ver, hash_name = caps
        cached = self.cache.get(ver) if hash_name else None
        if cached is not None:
            return cached
        iq = make_element(IQ, {"type": "get", "to": str(session.jid), "from": str(session.jid.bare)})
        sub_element(iq, f"{{{NS_DISCO_INFO}}}query", {"node": f"{node}#{ver}"})
        try:
            result = await self.host.request(iq, timeout=self.options.caps_timeout)
        except asyncio.TimeoutError:
            return frozenset()
        query = result.find(f"{{{NS_DISCO_INFO}}}query")
        if result.get("type") != "result" or query is None:
            return frozenset()
        features = features_of(query)
        if hash_name and verification_string(query, hash_name) == ver:
            self.cache.put(ver, features)
        return features
