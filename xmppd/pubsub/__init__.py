"""XEP-0060 Publish-Subscribe: the protocol half shared by the per-account services of PEP
(XEP-0163, extensions/pep) and the service on its own domain (extensions/pubsub), as
xmppd/mam.py is for the archives. Each service keeps its own rules (who owns a node, who
may publish, which access models read which roster); what is the same is here:

    __init__.py      namespaces and the pubsub error conditions (section 7)
    nodes.py         node configuration (section 16.4.4), XEP-0223 publish options
    affiliations.py  the owner's <affiliations/> requests (section 8.9)
"""
from __future__ import annotations

from xmppd.protocol.errors import StanzaError
from xmppd.protocol.stanza import make_element

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_PUBSUB_OWNER = "http://jabber.org/protocol/pubsub#owner"
NS_PUBSUB_EVENT = "http://jabber.org/protocol/pubsub#event"
NS_PUBSUB_ERRORS = "http://jabber.org/protocol/pubsub#errors"


def pubsub_error(error: type[StanzaError], condition: str, text: str | None = None, **attributes) -> StanzaError:
    """A stanza error with its pubsub#errors condition (XEP-0060 section 7, 6.5.9...)."""
    return error(text=text, app_condition=make_element(f"{{{NS_PUBSUB_ERRORS}}}{condition}", attributes or None))
