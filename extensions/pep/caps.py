"""XEP-0115 Entity Capabilities as a PEP service reads them: which '+notify' features a
client's caps stand for (XEP-0163 section 4.2, filtered notifications).

A client's presence carries <c node ver hash/>. The features behind a 'ver' are learned
once, by disco#info to the client (node 'node#ver'), and cached by 'ver' only when the
reply hashes to it (XEP-0115 section 5.4), so that no client can poison the cache for
others; an unverifiable reply serves that client's session only.
"""
from __future__ import annotations

import base64
import hashlib
from collections import OrderedDict

from lxml import etree

from xmppd import forms
from xmppd.protocol.namespaces import XML_LANG

NS_CAPS = "http://jabber.org/protocol/caps"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
CAPS = f"{{{NS_CAPS}}}c"
NOTIFY = "+notify"

# XEP-0115 section 5.4 names hashes as in the IANA registry ("sha-1"); md5 is not trusted.
HASHES = {"sha-1": hashlib.sha1, "sha-224": hashlib.sha224, "sha-256": hashlib.sha256,
          "sha-384": hashlib.sha384, "sha-512": hashlib.sha512}


def caps_of(presence: etree._Element) -> tuple[str, str, str | None] | None:
    """(node, ver, hash) of a presence's caps, None without caps."""
    c = presence.find(CAPS)
    if c is None or not c.get("node") or not c.get("ver"):
        return None
    return c.get("node"), c.get("ver"), c.get("hash")


def verification_string(query: etree._Element, hash_name: str) -> str | None:
    """The 'ver' a disco#info result hashes to (XEP-0115 section 5.1), None for an
    unknown hash or a result the algorithm refuses (duplicates, section 5.4)."""
    algorithm = HASHES.get(hash_name)
    if algorithm is None:
        return None
    identities = [(i.get("category", ""), i.get("type", ""), i.get(XML_LANG, ""), i.get("name", ""))
                  for i in query.iterchildren(f"{{{NS_DISCO_INFO}}}identity")]
    features = [f.get("var", "") for f in query.iterchildren(f"{{{NS_DISCO_INFO}}}feature")]
    if len(set(identities)) != len(identities) or len(set(features)) != len(features):
        return None
    text = "".join("/".join(identity) + "<" for identity in sorted(identities))
    text += "".join(feature + "<" for feature in sorted(features))
    extended = []
    for x in query.iterchildren(f"{{{forms.NS_DATA}}}x"):
        form_type = forms.form_type_of(x)
        if form_type is None:
            continue
        fields = []
        for field in x.iterchildren(f"{{{forms.NS_DATA}}}field"):
            if field.get("var") != forms.FORM_TYPE:
                values = sorted(v.text or "" for v in field.iterchildren(f"{{{forms.NS_DATA}}}value"))
                fields.append((field.get("var", ""), values))
        extended.append((form_type, sorted(fields)))
    if len({form_type for form_type, _ in extended}) != len(extended):
        return None
    for form_type, fields in sorted(extended):
        text += form_type + "<"
        for var, values in fields:
            text += var + "<" + "".join(value + "<" for value in values)
    return base64.b64encode(algorithm(text.encode("utf-8")).digest()).decode("ascii")


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
