"""The '+notify' interests of each resource of a user (XEP-0163 section 4.2, filtered
notifications), from the XEP-0115 caps of its presence (caps.py): learned when a
resource comes online or its caps change, with a disco#info to the client when the 'ver'
is not known yet, and kept in its session. A resource that comes online, or whose caps
show a new interest, is then sent the last items it did not know of (section 4.3.3,
notifications.py).

Hooks: presence/broadcast (the presence of the user's own resources, before presence.py).
"""

from __future__ import annotations

from xmppd.caps import NS_DISCO_INFO, verification_string
from xmppd.extension import Extension, hook
from xmppd.locks import KeyedLocks
from xmppd.protocol.stanza import IQ, make_element, parse_priority, sub_element

from .caps import INTEREST, CapsCache, SessionInterest, caps_of, features_of, interests


class PepInterests(Extension):
    depends = ["pep.notifications"]

    def __init__(self, host, options):
        super().__init__(host, options)
        self.options = host.extensions["pep"].options
        self.notifications = host.extensions["pep.notifications"]
        self.lock = KeyedLocks()  # per full JID: caps updates in presence order
        self.cache = CapsCache(self.options.caps_cache_size)

    @hook("presence/broadcast", priority=1)  # before presence.py, which handles it
    async def track_caps(self, stanza) -> bool:
        """A resource's presence: learn its interests, then send it the last items it
        did not know of (XEP-0163 section 4.3.3)."""
        session = stanza.origin
        if session is None:
            return False
        if stanza.type == "unavailable":
            session.meta.pop(INTEREST, None)
        elif stanza.type is None:
            self.services.tasks.spawn(
                self._update_interest(
                    session, caps_of(stanza.element), not session.available, parse_priority(stanza.element)
                )
            )
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
        except TimeoutError:
            return frozenset()
        query = result.find(f"{{{NS_DISCO_INFO}}}query")
        if result.get("type") != "result" or query is None:
            return frozenset()
        features = features_of(query)
        if hash_name and verification_string(query, hash_name) == ver:
            self.cache.put(ver, features)
        return features
