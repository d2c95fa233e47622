"""What PEP (XEP-0163) tells the other extensions of its host, on the host's bus, after a
change is stored and before the notifications go out: pep-item-published (ItemPublished),
pep-item-retracted (ItemRetracted) and pep-node-deleted (NodeDeleted). vcard.py keeps
the vCard avatar in step with XEP-0084 nodes, bookmarks.py the private XML copy of the
XEP-0402 bookmarks.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from xmppd.protocol.jid import JID


@dataclass(frozen=True)
class ItemPublished:
    owner: JID  # the service: the account's bare JID
    node: str
    item_id: str
    payload: etree._Element  # the item's payload (do not change it)
    publisher: JID  # who published it (the owner's resource, or the owner for the server)


@dataclass(frozen=True)
class ItemRetracted:
    owner: JID
    node: str
    item_id: str


@dataclass(frozen=True)
class NodeDeleted:
    owner: JID
    node: str
