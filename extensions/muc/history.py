"""XEP-0045 7.2.14: discussion history sent to an occupant on entering.

The room keeps its last messages with a body (muc#maxhistoryfetch of them) and sends
them, each with a <delay/> from the room, after the occupants' presences and before the
subject, as limited by the <history maxchars maxstanzas seconds since/> the client put
in its <x xmlns='http://jabber.org/protocol/muc'/>. After a restart the history of an
archived room is read back from its archive.

Hooks: muc-message, muc-occupant-joined (before the subject is sent), muc-config-changed.
"""

from __future__ import annotations

import collections
import copy
import time
from dataclasses import dataclass

from lxml import etree

from xmppd.extension import Extension, hook
from xmppd.mam import parse_datetime
from xmppd.protocol.errors import BadRequest
from xmppd.protocol.stanza import delay_element, stored_stanza
from xmppd.protocol.stream import serialize
from xmppd.storage.interfaces import ArchiveQuery

from .groupchat import Said
from .room import NS_MUC, X_MUC_USER, Room

BODY = "{jabber:client}body"
HISTORY = f"{{{NS_MUC}}}history"


@dataclass
class Remembered:
    message: etree._Element  # with its <delay/>, without 'to'
    when: float
    size: int  # characters of the stanza as sent (for maxchars)


class History(Extension):
    depends = ["muc.service"]

    def __init__(self, host, options):
        super().__init__(host, options)
        self.service = host.extensions["muc.service"]

    def remember(self, room: Room, message: etree._Element, when: float) -> None:
        message = copy.deepcopy(message)
        message.append(delay_element(str(room.jid), when))
        room.history.append(Remembered(message, when, len(serialize(message).decode())))

    @hook("muc-message")
    async def keep(self, said: Said) -> None:
        if said.message.find(BODY) is not None and said.room.history.maxlen:
            self.remember(said.room, said.message, said.when)

    @hook("muc-config-changed")
    async def resize(self, change) -> None:
        room = change.room
        if room.history.maxlen != room.config.history_length:
            room.history = collections.deque(room.history, maxlen=room.config.history_length)

    async def load(self, room: Room) -> None:
        """The last messages of an archived room, read back after a restart."""
        room.history_loaded = True
        if room.history or not room.config.archiving or not room.history.maxlen:
            return
        page = await self.service.archive.query(str(room.jid), ArchiveQuery(before="", max=room.history.maxlen))
        for item in page.items:
            message = stored_stanza(item.payload, self.log, room=room.jid, id=item.id)
            if message is None:
                continue
            for x in message.findall(X_MUC_USER):
                message.remove(x)
            if message.find(BODY) is not None:
                self.remember(room, message, item.when)

    @hook("muc-occupant-joined", priority=10)
    async def send_history(self, event) -> None:
        room = event.room
        if not room.history_loaded:
            await self.load(room)
        limits = event.x.find(HISTORY) if event.x is not None else None
        for remembered in select(list(room.history), limits):
            message = copy.deepcopy(remembered.message)
            message.set("to", str(event.jid))
            await self.host.send(message)


def select(items: list[Remembered], limits: etree._Element | None) -> list[Remembered]:
    """The history a <history/> element asks for; every limit given applies."""
    if limits is None:
        return items
    since = limits.get("since")
    if since is not None:
        try:
            threshold = parse_datetime(since, "since")
        except BadRequest:
            threshold = None  # a malformed limit is no limit
        if threshold is not None:
            items = [item for item in items if item.when >= threshold]
    seconds = _number(limits.get("seconds"))
    if seconds is not None:
        items = [item for item in items if item.when >= time.time() - seconds]
    maxstanzas = _number(limits.get("maxstanzas"))
    if maxstanzas is not None:
        items = items[len(items) - maxstanzas :] if maxstanzas else []
    maxchars = _number(limits.get("maxchars"))
    if maxchars is not None:
        kept, total = [], 0
        for item in reversed(items):
            total += item.size
            if total > maxchars:
                break
            kept.append(item)
        items = kept[::-1]
    return items


def _number(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        return None
    return number if number >= 0 else None
