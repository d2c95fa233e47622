"""XEP-0280 Message Carbons: every device of a user sees both sides of its conversations.

A resource that enabled carbons gets a <sent/> copy of each eligible message another
resource of its user sends, and a <received/> copy of each eligible message to its user
that RFC 6121 delivered to some other resource (or to none: stored offline). Copies are
wrapped in XEP-0297 <forwarded/>, from the user's bare JID, with the original's type.

Eligible (XEP-0280 section 6.1, the rules the 'urn:xmpp:carbons:rules:0' feature stands
for; the `carbons-should-copy` question, answered here at priority -1): never a message
that carries <private/> or the XEP-0334 <no-copy/> hint, nor one of type groupchat or
headline. Messages of type chat; of type normal with a body, a chat state (XEP-0085) or
another conversation payload (receipts, chat markers, encrypted payloads... see
xmppd/hints.py); errors received (the bounces of what the user sent; the server keeps no
record to match them with); XEP-0249 direct and XEP-0045 mediated invitations; private
messages the user sends to an occupant (to every resource that enabled carbons, not only
those that share the nickname in that room). Not what is received from a MUC room or
occupant otherwise (what carries an <x xmlns='...muc#user'/>, or comes from a MUC domain
of ours): the room itself sends it to each of the user's resources that joined. The
receiving side takes <private/> out of the message it delivers (section 7). A message
from one resource to another of the same user gets <sent/> copies only (to the resources
other than both), never a <received/> one as well.

Hooks: iq-set/self urn:xmpp:carbons:2 enable and disable; bind2-inline/{urn:xmpp:carbons:2}enable
(XEP-0386); pre-message/bare|full
(sent copies, priority 40, after the archive stamped its XEP-0359 id so that the copy
carries it: XEP-0313 section 3.4); message/bare|full (received copies, priority 40,
after blocking and the archive, before delivery).
Fires: carbons-should-copy (a CopyQuestion: set `answer`, return True to decide).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from lxml import etree

from xmppd import hints
from xmppd.extension import Extension, hook, iq_handler
from xmppd.protocol.namespaces import NS_CARBONS, NS_FORWARD
from xmppd.protocol.stanza import MESSAGE, make_element, sub_element
from xmppd.router import Stanza, bare_message_recipients

NS_CARBONS_RULES = "urn:xmpp:carbons:rules:0"
NS_CHAT_STATES = "http://jabber.org/protocol/chatstates"
PRIVATE = f"{{{NS_CARBONS}}}private"
MUC_USER = f"{{{hints.NS_MUC_USER}}}x"
INVITE = f"{{{hints.NS_MUC_USER}}}invite"
COPY_PRIORITY = 40


@dataclass
class CopyQuestion:
    """Should `stanza` be carbon-copied? `sent`: as a <sent/> copy to the sender's other
    resources, else as a <received/> copy to the recipient's."""

    stanza: Stanza
    sent: bool
    answer: bool = False


class Carbons(Extension):
    xeps = {280: "1.0.1", 297: "1.0", 334: "1.0.0"}
    features = [NS_CARBONS, NS_CARBONS_RULES]

    @iq_handler("set", NS_CARBONS, "enable", to=("self",))
    async def enable(self, iq):
        await iq.origin.share(self.name, True)
        return None

    @hook(f"bind2-inline/{{{NS_CARBONS}}}enable")
    async def enable_inline(self, event) -> bool:
        """XEP-0386: enabled in a Bind 2 request; that cannot fail, so nothing is answered."""
        await event.session.share(self.name, True)
        return True

    @iq_handler("set", NS_CARBONS, "disable", to=("self",))
    async def disable(self, iq):
        await iq.origin.share(self.name, None)
        return None

    # ------------------------------------------------------------- copies

    @hook("pre-message/bare", priority=COPY_PRIORITY)
    @hook("pre-message/full", priority=COPY_PRIORITY)
    async def copy_sent(self, stanza: Stanza) -> bool:
        sender = stanza.origin
        others = [
            s
            for s in self.host.sessions_of(sender.jid.local)
            if s is not sender and s.jid != stanza.to and self._enabled(s)
        ]  # the addressee has it
        if others and await self._should_copy(stanza, sent=True):
            self._send_copies(stanza.element, "sent", sender.jid.bare, others)
        return False

    @hook("message/bare", priority=COPY_PRIORITY)
    @hook("message/full", priority=COPY_PRIORITY)
    async def copy_received(self, stanza: Stanza) -> bool:
        if stanza.target == "full":
            addressee = self.host.session_for(stanza.to)
            if addressee is None:  # the router hands it on as sent to the bare JID
                return False
            delivered = [addressee]
        else:
            delivered = bare_message_recipients(self.host, stanza.to.local, stanza.type or "normal")
        private = stanza.element.find(PRIVATE)
        if private is not None:
            stanza.element.remove(private)  # XEP-0280 7: not for the recipient's eyes
            return False
        if stanza.from_.bare == stanza.to.bare:
            return False  # from another resource: its <sent/> copies went out
        others = [s for s in self.host.sessions_of(stanza.to.local) if s not in delivered and self._enabled(s)]
        if others and await self._should_copy(stanza, sent=False):
            self._send_copies(stanza.element, "received", stanza.to.bare, others)
        return False

    def _enabled(self, session) -> bool:
        return session.shared.get(self.name, False)

    async def _should_copy(self, stanza: Stanza, *, sent: bool) -> bool:
        question = CopyQuestion(stanza, sent)
        await self.host.bus.fire("carbons-should-copy", question)
        return question.answer

    @staticmethod
    def _send_copies(element: etree._Element, direction: str, user, sessions) -> None:
        for session in sessions:
            wrapper = make_element(MESSAGE, {"from": str(user), "to": str(session.jid), "type": element.get("type")})
            forwarded = sub_element(sub_element(wrapper, f"{{{NS_CARBONS}}}{direction}"), f"{{{NS_FORWARD}}}forwarded")
            original = copy.deepcopy(element)
            original.tail = None
            forwarded.append(original)
            session.send(wrapper)

    # ------------------------------------------------------------- policy

    @hook("carbons-should-copy", priority=-1)
    async def should_copy(self, question: CopyQuestion) -> bool:
        question.answer = self.is_eligible(question.stanza, sent=question.sent)
        return True

    def is_eligible(self, stanza: Stanza, *, sent: bool) -> bool:
        """XEP-0280 section 6.1, with the XEP-0334 <no-copy/> hint."""
        message = stanza.element
        if message.find(PRIVATE) is not None or hints.has_hint(message, hints.NO_COPY):
            return False
        kind = stanza.type or "normal"
        if kind not in ("chat", "normal", "error"):
            return False
        muc_user = message.find(MUC_USER)
        if muc_user is not None and muc_user.find(INVITE) is not None:
            return kind == "normal"  # a mediated invitation
        if not sent and (muc_user is not None or self._from_muc(stanza)):
            return False  # from a room or an occupant: the room copies it
        if kind == "error":
            return not sent
        return (
            kind == "chat"
            or hints.carries_conversation(message)
            or any(hints.namespace_of(child) == NS_CHAT_STATES for child in message)
        )

    def _from_muc(self, stanza: Stanza) -> bool:
        """Sent by a room or an occupant of a MUC domain of ours."""
        host = self.services.directory.host(stanza.from_.domain)
        return (
            host is not None
            and host.is_component
            and any(category == "conference" for category, _, _ in host.identities)
        )
