"""XEP-0045 7.5 private messages and iqs between occupants; XEP-0410 MUC self-ping.

A message to room@service/nick from an occupant reaches every session of that occupant,
from the sender's occupant JID and marked with <x xmlns='muc#user'/>; the room's
allow-pm setting says who may send one, and none reaches a user of this server who blocks
the sender (XEP-0191: service-unavailable). An iq to an occupant goes to its real JID with
the sender's occupant JID as 'from' (a vCard request to its bare JID, as Prosody does)
and the reply comes back the same way. A ping of one's own occupant JID is answered by
the room itself: a result while joined, not-acceptable when not (XEP-0410). An iq
from a non-occupant is refused with not-acceptable, a disco query with bad-request
(XEP-0045 6.6).

Hooks: message/full, iq/full.
"""

from __future__ import annotations

import asyncio
import secrets

from lxml import etree

from xmppd.extension import Extension, hook
from xmppd.host import blocks
from xmppd.protocol.errors import BadRequest, Forbidden, ItemNotFound, NotAcceptable, ServiceUnavailable
from xmppd.protocol.jid import JID
from xmppd.protocol.stanza import reply, sub_element
from xmppd.router import Stanza

from .room import OCCUPANT_ID, ROLE_RANK, X_MUC_USER, Occupant, Room

NS_PING = "urn:xmpp:ping"
NS_DISCO = ("http://jabber.org/protocol/disco#info", "http://jabber.org/protocol/disco#items")
NS_VCARD = "vcard-temp"
SELF_PING_OPTIMIZATION = "http://jabber.org/protocol/muc#self-ping-optimization"
IQ_TIMEOUT = 120.0  # how long a forwarded iq's reply is awaited


class PrivateMessages(Extension):
    xeps = {410: "1.1.0"}
    depends = ["muc.service"]

    def __init__(self, host, options):
        super().__init__(host, options)
        self.service = host.extensions["muc.service"]
        # forwarded iq id -> (requester, its iq id, who must answer, occupant JID answering)
        self.pending: dict[str, tuple[JID, str, JID, str]] = {}

    @hook("message/full")
    async def private_message(self, stanza: Stanza) -> bool:
        room = self.service.room_of(stanza)
        sender = room.occupant_of(stanza.from_)
        if stanza.type == "error":
            if sender is not None and self.service.is_ghost_error(stanza):
                await self.service.remove_ghost(room, stanza.from_)
            return True
        if sender is None:
            raise NotAcceptable(text="only occupants may send private messages")
        if stanza.type == "groupchat":
            raise BadRequest(text="a private message is not of type groupchat")
        target = room.occupants.get(stanza.to.resource)
        if target is None:
            raise ItemNotFound(text="no such occupant")
        if not may_send_private(room, sender):
            raise Forbidden(text="you may not send private messages in this room")
        if await self.is_blocked_by(target, sender):
            raise ServiceUnavailable()  # XEP-0191 3.3, as from the sender's own JID
        message = stanza.element
        message.set("from", str(room.occupant_jid(sender.nick)))
        for child in message.findall(OCCUPANT_ID):
            message.remove(child)
        if message.find(X_MUC_USER) is None:
            sub_element(message, X_MUC_USER)
        sub_element(message, OCCUPANT_ID, {"id": sender.id})
        await room.send_copies(message, target.sessions)
        return True

    async def is_blocked_by(self, target: Occupant, sender: Occupant) -> bool:
        """Whether the target, a user of this server, blocks the sender's real JID (a
        private message, a direct invitation among them, must not carry its words)."""
        return await blocks(self.services.directory, target.jid, sender.jid)

    @hook("iq/full")
    async def iq_to_occupant(self, stanza: Stanza) -> bool:
        if stanza.type in ("result", "error"):
            await self.forward_reply(stanza)
            return True
        room = self.service.room_of(stanza)
        sender = room.occupant_of(stanza.from_)
        if sender is None:
            if etree.QName(stanza.element[0]).namespace in NS_DISCO:
                raise BadRequest(text="only occupants may query an occupant")  # XEP-0045 6.6
            raise NotAcceptable(text="you are not an occupant of this room")
        target = room.occupants.get(stanza.to.resource)
        if target is None:
            raise ItemNotFound(text="no such occupant")
        payload = stanza.element[0]
        if target is sender and payload.tag == f"{{{NS_PING}}}ping":
            await self.host.send(reply(stanza.element))  # XEP-0410 self-ping optimisation
            return True
        await self.forward(room, sender, target, stanza)
        return True

    async def forward(self, room: Room, sender: Occupant, target: Occupant, stanza: Stanza) -> None:
        iq = stanza.element
        is_vcard = stanza.type == "get" and etree.QName(iq[0]).namespace == NS_VCARD
        addressee = target.jid if is_vcard else target.primary
        token = secrets.token_hex(10)
        self.pending[token] = (stanza.from_, iq.get("id"), addressee, str(room.occupant_jid(target.nick)))
        asyncio.get_running_loop().call_later(IQ_TIMEOUT, self.pending.pop, token, None)
        iq.set("id", token)
        iq.set("from", str(room.occupant_jid(sender.nick)))
        iq.set("to", str(addressee))
        await self.host.send(iq)

    async def forward_reply(self, stanza: Stanza) -> None:
        entry = self.pending.get(stanza.id or "")
        if entry is None or entry[2] != stanza.from_:
            return
        del self.pending[stanza.id]
        requester, original_id, _, occupant_jid = entry
        iq = stanza.element
        iq.set("id", original_id)
        iq.set("from", occupant_jid)
        iq.set("to", str(requester))
        await self.host.send(iq)


def may_send_private(room: Room, sender: Occupant) -> bool:
    allowed = room.config.allow_pm
    if allowed == "anyone":
        return True
    if allowed == "participants":
        return ROLE_RANK[sender.role] >= ROLE_RANK["participant"]
    return allowed == "moderators" and sender.role == "moderator"
