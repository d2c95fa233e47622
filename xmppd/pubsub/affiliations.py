"""XEP-0060 section 8.9 Manage Affiliations: a node owner's <affiliations/> requests, read
and answered here for the pubsub service (extensions/pubsub) and for PEP's whitelist
access model (extensions/pep). A node keeps its affiliations in its configuration, under
"affiliations": bare JID -> affiliation ("none" is never stored).
"""

from __future__ import annotations

from lxml import etree

from xmppd.protocol.errors import BadRequest, NotAcceptable
from xmppd.protocol.jid import JID, InvalidJID
from xmppd.protocol.stanza import make_element, sub_element
from xmppd.pubsub import NS_PUBSUB_OWNER

AFFILIATIONS = ("owner", "publisher", "publish-only", "member", "outcast", "none")
WHITELISTED = frozenset(("owner", "publisher", "member"))  # section 4.5: the whitelist model


def affiliation_of(config: dict, jid: JID) -> str:
    return config.get("affiliations", {}).get(str(jid.bare), "none")


def read_changes(request: etree._Element, allowed: tuple[str, ...]) -> dict[str, str]:
    """The changes an owner asks for (section 8.9.2): bare JID -> new affiliation."""
    changes = {}
    for child in request.iterchildren(f"{{{NS_PUBSUB_OWNER}}}affiliation"):
        try:
            jid = JID.parse(child.get("jid") or "")
        except InvalidJID:
            raise BadRequest(text="an affiliation needs a valid jid") from None
        if child.get("affiliation") not in allowed:
            raise NotAcceptable(text=f"the affiliation must be one of {', '.join(allowed)}")
        changes[str(jid.bare)] = child.get("affiliation")
    return changes


def changed(config: dict, changes: dict[str, str]) -> dict[str, str]:
    """The node's affiliations with `changes` applied."""
    affiliations = dict(config.get("affiliations", {}))
    for jid, affiliation in changes.items():
        if affiliation == "none":
            affiliations.pop(jid, None)
        else:
            affiliations[jid] = affiliation
    return affiliations


def listing(node: str, affiliations: dict[str, str]) -> etree._Element:
    """The owner's view of a node's affiliations (section 8.9.1)."""
    answer = make_element(f"{{{NS_PUBSUB_OWNER}}}pubsub")
    listed = sub_element(answer, f"{{{NS_PUBSUB_OWNER}}}affiliations", {"node": node})
    for jid, affiliation in sorted(affiliations.items()):
        sub_element(listed, f"{{{NS_PUBSUB_OWNER}}}affiliation", {"jid": jid, "affiliation": affiliation})
    return answer
