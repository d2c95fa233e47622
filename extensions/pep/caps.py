"""XEP-0115 Entity Capabilities as a PEP service reads them: which '+notify' features a
client's caps stand for (XEP-0163 section 4.2, filtered notifications).

A client's presence carries <c node ver hash/>. The features behind a 'ver' are learned
once, by disco#info to the client (node 'node#ver'), and cached by 'ver' only when the
reply hashes to it (XEP-0115 section 5.4), so that no client can poison the cache for
others; an unverifiable reply serves that client's session only. What a resource wants
is kept in its session (a SessionInterest, read by `wants`); interests.py learns it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from lxml import etree

from xmppd.caps import NS_CAPS, NS_DISCO_INFO

CAPS = f"{{{NS_CAPS}}}c"
NOTIFY = "+notify"
INTEREST = "pep"  # the key of a session's SessionInterest in session.meta


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
    return frozenset(f[: -len(NOTIFY)] for f in features if f.endswith(NOTIFY))


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
