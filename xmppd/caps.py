"""XEP-0115 Entity Capabilities: the verification string ('ver') of a disco#info result
(section 5.1), which the server computes for its own caps in the stream features and
checks for the caps its users' clients announce (PEP's filtered notifications).
"""

from __future__ import annotations

import base64
import hashlib

from lxml import etree

from xmppd import forms
from xmppd.protocol.namespaces import XML_LANG

NS_CAPS = "http://jabber.org/protocol/caps"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"

# XEP-0115 section 5.4 names hashes as in the IANA registry ("sha-1"); md5 is not trusted.
HASHES = {
    "sha-1": hashlib.sha1,
    "sha-224": hashlib.sha224,
    "sha-256": hashlib.sha256,
    "sha-384": hashlib.sha384,
    "sha-512": hashlib.sha512,
}


def verification_string(query: etree._Element, hash_name: str) -> str | None:
    """The 'ver' a disco#info result hashes to (XEP-0115 section 5.1), None for an
    unknown hash or a result the algorithm refuses (duplicates, section 5.4)."""
    algorithm = HASHES.get(hash_name)
    if algorithm is None:
        return None
    identities = [
        (i.get("category", ""), i.get("type", ""), i.get(XML_LANG, ""), i.get("name", ""))
        for i in query.iterchildren(f"{{{NS_DISCO_INFO}}}identity")
    ]
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
