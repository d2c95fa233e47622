"""XEP-0045 7.4 and 8.1: messages to all occupants and the room subject; XEP-0421
occupant ids on them.

A message of type groupchat from an occupant is stamped (from its occupant JID, with its
occupant id; occupant and stanza ids a client put there are removed), handed to the
archive and the history through `muc-message`, then sent to every occupant, the sender
included, in the order they were accepted. A non-occupant gets not-acceptable, a
visitor forbidden; a subject change needs the moderator role or the room's leave.

Hooks: message/bare (groupchat), muc-occupant-joined (sends the subject).
Fires: muc-message (a Said event, before the fan-out).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field

from lxml import etree

from xmppd.extension import Extension, hook
from xmppd.protocol.errors import Forbidden, NotAcceptable
from xmppd.protocol.stanza import MESSAGE, make_element, sub_element
from xmppd.router import Stanza

from .room import OCCUPANT_ID, Occupant, Room, Subject

NS_SID = "urn:xmpp:sid:0"
STANZA_ID = f"{{{NS_SID}}}stanza-id"
SUBJECT = "{jabber:client}subject"
BODY = "{jabber:client}body"


@dataclass
class Said:
    room: Room
    occupant: Occupant
    message: etree._Element  # as the occupants get it, less 'to'
    when: float
    writes: list[asyncio.Task] = field(default_factory=list)  # the sender's ack waits for them (Stanza.writes)


def stamp(room: Room, occupant: Occupant, message: etree._Element) -> etree._Element:
    """Make a message an occupant sent into the one the room sends (XEP-0359 5, XEP-0421 4:
    ids that claim to be the room's are the sender's forgeries, removed)."""
    message.set("from", str(room.occupant_jid(occupant.nick)))
    message.attrib.pop("to", None)
    room_jid = str(room.jid)
    for child in list(message):
        if child.tag == OCCUPANT_ID or child.tag == STANZA_ID and child.get("by") == room_jid:
            message.remove(child)
    sub_element(message, OCCUPANT_ID, {"id": occupant.id})
    return message


class Groupchat(Extension):
    xeps = {421: "0.1.0"}
    depends = ["muc.service"]

    def __init__(self, host, options):
        super().__init__(host, options)
        self.service = host.extensions["muc.service"]
        self.sending: dict[Room, asyncio.Future] = {}

    @hook("message/bare")
    async def groupchat(self, stanza: Stanza) -> bool:
        if stanza.type != "groupchat":
            return False
        room = self.service.room_of(stanza)
        occupant = room.occupant_of(stanza.from_)
        if occupant is None:
            raise NotAcceptable(text="only occupants may send messages to the room")
        if occupant.role not in ("participant", "moderator"):
            raise Forbidden(text="visitors may not speak in this room")
        message = stanza.element
        subject = message.find(SUBJECT)
        if subject is not None and message.find(BODY) is None:
            if occupant.role != "moderator" and not room.config.change_subject:
                raise Forbidden(text="you may not change the subject")
            room.subject = Subject(subject.text or "", occupant.nick, time.time())
            await self.service.save(room)
        await self.say(Said(room, occupant, stamp(room, occupant, message), time.time(), stanza.writes))
        return True

    async def say(self, said: Said) -> None:
        """Archive, then fan out; a message waits for the one accepted before it, so that
        every occupant gets the room's messages in one order."""
        room = said.room
        before = self.sending.get(room)
        mine = asyncio.get_running_loop().create_future()
        self.sending[room] = mine
        try:
            await self.host.bus.notify("muc-message", said)
            if before is not None:
                await before
            await room.broadcast(said.message)
        finally:
            mine.set_result(None)
            if self.sending.get(room) is mine:
                del self.sending[room]

    @hook("muc-occupant-joined")
    async def send_subject(self, event) -> None:
        """XEP-0045 7.2.15: the subject, empty when there is none, ends the entering."""
        room, subject = event.room, event.room.subject
        sender = room.occupant_jid(subject.nick) if subject and subject.nick else room.jid
        message = make_element(
            MESSAGE, {"from": str(sender), "to": str(event.jid), "type": "groupchat", "id": secrets.token_hex(8)}
        )
        sub_element(message, SUBJECT, text=subject.text if subject and subject.text else None)
        await self.host.send(message)
