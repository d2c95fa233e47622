"""XEP-0352 Client State Indication: hold back what an inactive client need not see now.

While a session is inactive, a session filter, the first one, holds presence and the
messages that carry nothing urgent, and lets an urgent stanza through after everything it
held, in order. What is urgent follows Prosody's mod_csi_simple: any iq; a message with
a body (or a carbon of one), a subject (the end of a MUC join), an encrypted payload, an
invitation or a Jingle message proposal; a carbon of a message the user sent elsewhere.
Held, and so delayed: presence, chat states, receipts, chat markers, headlines and PEP
events. Of the presence a contact's resource sends, only the newest available or
unavailable one is kept, and so is only the newest chat-state-only message of each
sender; everything else held is kept whole.

The held stanzas go out, through the filters after this one (XEP-0198 counts a stanza
only when it is really sent), when the client sends <active/>, when more than `max_held`
are waiting, when a XEP-0198 resumed stream begins (a stream always begins active,
XEP-0352 section 3), and when the session ends (into the stream management queue, whose
unacknowledged messages are kept for the user).

Hooks: stream-element/{urn:xmpp:csi:0}active|inactive, bind2-inline/{urn:xmpp:csi:0}active|inactive
(XEP-0386), smacks-hibernation-end,
session-closed (before smacks.py handles the unacknowledged stanzas).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from lxml import etree

from xmppd.extension import Extension, hook
from xmppd.hints import BODY, CARBON_SENT, carried_message, namespace_of
from xmppd.protocol.namespaces import NS_CLIENT
from xmppd.protocol.stanza import MESSAGE, PRESENCE, make_element
from xmppd.session import Session

NS_CSI = "urn:xmpp:csi:0"
CSI_FEATURE = etree.tostring(make_element(f"{{{NS_CSI}}}csi"))
NS_CHAT_STATES = "http://jabber.org/protocol/chatstates"
SUBJECT = f"{{{NS_CLIENT}}}subject"
THREAD = f"{{{NS_CLIENT}}}thread"
MUC_INVITE = "{http://jabber.org/protocol/muc#user}x/{http://jabber.org/protocol/muc#user}invite"
# A child in one of these makes a message urgent without a body.
URGENT_NAMESPACES = frozenset(
    (
        "urn:xmpp:eme:0",  # XEP-0380 explicit encryption
        "eu.siacs.conversations.axolotl",  # OMEMO (XEP-0384 0.3)
        "urn:xmpp:omemo:2",  # OMEMO (XEP-0384 0.8+)
        "jabber:x:conference",  # XEP-0249 direct invitation
        "urn:xmpp:jingle-message:0",  # XEP-0353 call proposals
        "urn:xmpp:jingle-message:1",
    )
)
# A message whose children are all in these (or a <thread/>) carries only a chat state.
CHAT_STATE_ONLY_NAMESPACES = frozenset((NS_CHAT_STATES, "urn:xmpp:hints", "urn:xmpp:sid:0"))


def is_urgent(element: etree._Element) -> bool:
    if element.tag == PRESENCE:
        return False
    if element.tag != MESSAGE:
        return True  # iqs (and anything else) never wait
    if element.get("type") == "headline":
        return False
    if element.find(CARBON_SENT) is not None:
        return True  # the user is busy on another device
    message = carried_message(element)
    if message.find(BODY) is not None or message.find(SUBJECT) is not None or message.find(MUC_INVITE) is not None:
        return True
    return any(namespace_of(child) in URGENT_NAMESPACES for child in message)


def replaced_by_newer(element: etree._Element) -> tuple | None:
    """What a newer stanza of the same kind from the same sender makes obsolete."""
    if element.tag == PRESENCE:
        return ("presence", element.get("from")) if element.get("type") in (None, "unavailable") else None
    children = [child for child in element if isinstance(child.tag, str)]
    if any(namespace_of(child) == NS_CHAT_STATES for child in children) and all(
        child.tag == THREAD or namespace_of(child) in CHAT_STATE_ONLY_NAMESPACES for child in children
    ):
        return ("chat-state", element.get("from"))
    return None


class HeldStanzas:
    """What an inactive session's filter (`hold`) keeps back, in arrival order."""

    def __init__(self, session: Session, max_held: int):
        self.session = session
        self.max_held = max_held
        self.held: dict[object, etree._Element] = {}
        self.serial = itertools.count()

    def hold(self, element: etree._Element) -> etree._Element | None:
        if is_urgent(element):
            self.release()
            return element
        key = replaced_by_newer(element) or next(self.serial)
        self.held.pop(key, None)  # the newer one goes to the end
        self.held[key] = element
        if len(self.held) > self.max_held:
            self.release()
        return None

    def release(self) -> None:
        held, self.held = self.held, {}
        for element in held.values():
            self.session.send(element, after=self.hold)


class ClientStateIndication(Extension):
    xeps = {352: "1.0.0"}

    @dataclass(frozen=True)
    class Options:
        max_held: int = 256  # stanzas held for an inactive client before a flush

        def validate(self, where):
            where.check("max_held", self.max_held > 0, "must be positive")

    def stream_features(self, authenticated: bool) -> list[bytes]:
        return [CSI_FEATURE] if authenticated else []

    @hook(f"stream-element/{{{NS_CSI}}}inactive")
    @hook(f"bind2-inline/{{{NS_CSI}}}inactive")  # XEP-0386: the session begins inactive
    async def inactive(self, event) -> bool:
        session = event.session
        if session is not None and self.name not in session.meta:
            held = session.meta[self.name] = HeldStanzas(session, self.options.max_held)
            session.filters.insert(0, held.hold)
        return True  # before bind: nothing to hold yet

    @hook(f"stream-element/{{{NS_CSI}}}active")
    @hook(f"bind2-inline/{{{NS_CSI}}}active")
    async def active(self, event) -> bool:
        if event.session is not None:
            self._activate(event.session)
        return True

    @hook("smacks-hibernation-end")
    async def resumed(self, session: Session) -> None:
        self._activate(session)

    @hook("session-closed", priority=1)
    async def closing(self, session: Session) -> None:
        self._activate(session)

    def _activate(self, session: Session) -> None:
        held = session.meta.pop(self.name, None)
        if held is not None:
            held.release()
            session.filters.remove(held.hold)
