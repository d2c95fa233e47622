"""Which messages are part of a conversation: XEP-0334 message processing hints, and the
payloads that make a message worth copying to a user's other devices (XEP-0280) and
keeping in an archive (XEP-0313), so that a receipt or a chat marker is treated alike
everywhere: another device learns from it what was delivered and read.

Chat states (XEP-0085) and other transient payloads are deliberately not listed.
"""

from __future__ import annotations

from lxml import etree

from xmppd.protocol.namespaces import NS_CARBONS, NS_CLIENT, NS_FORWARD

NS_HINTS = "urn:xmpp:hints"
NO_COPY = f"{{{NS_HINTS}}}no-copy"
NO_STORE = f"{{{NS_HINTS}}}no-store"
NO_PERMANENT_STORE = f"{{{NS_HINTS}}}no-permanent-store"
STORE = f"{{{NS_HINTS}}}store"

BODY = f"{{{NS_CLIENT}}}body"
CARBON_SENT = f"{{{NS_CARBONS}}}sent"
CARBON_RECEIVED_MESSAGE = f"{{{NS_CARBONS}}}received/{{{NS_FORWARD}}}forwarded/{{{NS_CLIENT}}}message"
KEPT_OFFLINE_TYPES = frozenset(("normal", "chat"))
NS_RECEIPTS = "urn:xmpp:receipts"  # XEP-0184
NS_CHAT_MARKERS = "urn:xmpp:chat-markers:0"  # XEP-0333
NS_MUC_USER = "http://jabber.org/protocol/muc#user"

CONVERSATION_NAMESPACES = frozenset(
    (
        NS_RECEIPTS,
        NS_CHAT_MARKERS,
        "eu.siacs.conversations.axolotl",  # OMEMO (XEP-0384 0.3)
        "urn:xmpp:omemo:2",  # OMEMO (XEP-0384 0.8+)
        "urn:xmpp:openpgp:0",  # XEP-0373
        "jabber:x:encrypted",  # XEP-0027
        "jabber:x:conference",  # XEP-0249 direct invitations
        NS_MUC_USER,  # XEP-0045 mediated invitations
        "urn:xmpp:message-correct:0",  # XEP-0308 corrections
        "urn:xmpp:message-retract:1",  # XEP-0424 retractions
        "urn:xmpp:fasten:0",  # XEP-0422 (retractions before XEP-0424 0.4)
        "urn:xmpp:reactions:0",  # XEP-0444
        "urn:xmpp:jingle-message:0",  # XEP-0353 calls: the other devices stop ringing
    )
)


def has_hint(message: etree._Element, hint: str) -> bool:
    return message.find(hint) is not None


def namespace_of(element: etree._Element) -> str | None:
    tag = element.tag
    return tag[1 : tag.index("}")] if isinstance(tag, str) and tag[:1] == "{" else None


def carries_conversation(message: etree._Element) -> bool:
    """A body, or a payload from CONVERSATION_NAMESPACES among the message's children."""
    return message.find(BODY) is not None or any(namespace_of(child) in CONVERSATION_NAMESPACES for child in message)


def carried_message(message: etree._Element) -> etree._Element:
    """The message a received carbon copy (XEP-0280) carries, else `message` itself."""
    forwarded = message.find(CARBON_RECEIVED_MESSAGE)
    return forwarded if forwarded is not None else message


def kept_offline(message: etree._Element) -> bool:
    """A message stored for a user who cannot take it now (offline storage, a
    resource's backlog): a chat or normal one worth storing (XEP-0160, XEP-0334)."""
    return (message.get("type") or "normal") in KEPT_OFFLINE_TYPES and worth_storing(message, permanently=False)


def worth_storing(message: etree._Element, *, permanently: bool) -> bool:
    """Content worth keeping for later, unless the sender's hints forbid it: <no-store/>
    forbids any storage, <no-permanent-store/> an archive but not the offline queue.
    (One pass over the children: it runs for every message, twice when archived.)"""
    worth = False
    for child in message:
        tag = child.tag
        if tag == NO_STORE or (permanently and tag == NO_PERMANENT_STORE):
            return False
        worth = worth or tag == STORE or tag == BODY or namespace_of(child) in CONVERSATION_NAMESPACES
    return worth
