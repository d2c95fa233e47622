"""XEP-0045 Multi-User Chat: the service on its component domain (conference.<domain>).

Holds the rooms (persistent ones loaded from `host.storage.rooms` at start), creates
and forgets them, answers the iqs sent to the service and to rooms, and refuses what no
other part of the service took. The other parts (occupants.py, groupchat.py, ...) are
extensions loaded on the same component host; they find this one as
`host.extensions["muc.service"]`.

Hooks: iq/host, iq/bare, message/bare and message/full (last resort), presence/bare,
presence/host, message/host, iq-get/host/disco#items.
Fires: muc-room-created, muc-room-destroyed (notifications, with the Room).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lxml import etree

from xmppd.extension import Extension, hook, iq_handler
from xmppd.protocol.errors import BadRequest, ItemNotFound, JidMalformed, ServiceUnavailable
from xmppd.protocol.jid import JID
from xmppd.protocol.stanza import make_element, sub_element
from xmppd.router import Stanza, answer_iq

from .room import ERROR_KICK, KICKED, NS_MUC, Room, RoomConfig

log = logging.getLogger(__name__)

NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
BODY = "{jabber:client}body"

# Delivery errors that mean an occupant's session is gone (XEP-0045 section 16.6:
# a ghost is removed); others (a full queue, a refused payload) do not.
GHOST_CONDITIONS = frozenset(
    (
        "gone",
        "item-not-found",
        "recipient-unavailable",
        "redirect",
        "remote-server-not-found",
        "remote-server-timeout",
        "service-unavailable",
    )
)


@dataclass
class RoomDestroyed:
    room: Room
    reason: str | None


class MucService(Extension):
    xeps = {45: "1.35.1"}
    features = [NS_MUC]

    def __init__(self, host, options):
        super().__init__(host, options)
        self.options = host.parent.extensions["muc"].options
        self.identities = [("conference", "text", self.options.name)]
        self.rooms: dict[JID, Room] = {}
        self.joined: dict[JID, set[Room]] = {}  # real full JID -> rooms it is in
        self.store = host.storage.rooms
        self.archive = host.open_archive("muc")

    async def start(self) -> None:
        for name in await self.store.list(self.host.domain):
            state = await self.store.get(name)
            if state is not None:
                jid = JID.parse(name)
                self.rooms[jid] = Room.from_state(self, jid, state)
        self.log.info("event=muc-started domain=%s rooms=%d", self.host.domain, len(self.rooms))

    # ------------------------------------------------------------- rooms

    def room(self, jid: JID) -> Room | None:
        return self.rooms.get(jid.bare)

    def room_of(self, stanza: Stanza) -> Room:
        """The room a stanza is addressed to; item-not-found when there is none, or when it
        is still locked (being created) and the sender is not its owner."""
        room = self.rooms.get(stanza.to.bare)
        if room is None or room.locked and room.affiliation(stanza.from_) != "owner":
            raise ItemNotFound()
        return room

    def entered(self, jid: JID, room: Room) -> None:
        """The real full JID `jid` is now in `room` (Room.add_session)."""
        self.joined.setdefault(jid, set()).add(room)

    def left(self, jid: JID, room: Room) -> None:
        rooms = self.joined.get(jid)
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del self.joined[jid]

    def may_create(self, jid: JID) -> bool:
        policy = self.options.room_creation
        if policy == "anyone":
            return True
        if policy == "admins":
            return self.host.parent.is_admin(jid)
        return jid.domain == self.host.parent.domain

    def new_config(self) -> RoomConfig:
        options = self.options
        return RoomConfig(
            public=options.default_public,
            persistent=options.default_persistent,
            history_length=options.default_history_length,
            archiving=options.default_archiving,
            max_users=options.max_occupants,
        )

    async def create_room(self, jid: JID, creator: JID, *, locked: bool) -> Room:
        room = Room(self, jid, self.new_config(), locked=locked)
        room.set_affiliation(creator, "owner")
        self.rooms[jid] = room
        self.log.info("event=room-created room=%s creator=%s", jid, creator.bare)
        await self.host.bus.notify("muc-room-created", room)
        await self.save(room)
        return room

    async def save(self, room: Room) -> None:
        """Store a persistent room's state (config, affiliations, subject, avatar)."""
        if room.config.persistent and not room.destroyed and not room.locked:
            await self.store.save(str(room.jid), room.state())

    async def forget(self, room: Room, reason: str | None = None) -> None:
        """The room is gone (destroyed, or a temporary room that emptied); its archive stays."""
        room.destroyed = True
        if self.rooms.get(room.jid) is room:
            del self.rooms[room.jid]
        await self.store.delete(str(room.jid))
        self.log.info("event=room-destroyed room=%s", room.jid)
        await self.host.bus.notify("muc-room-destroyed", RoomDestroyed(room, reason))

    async def emptied(self, room: Room) -> None:
        if not room.occupants and (room.locked or not room.config.persistent):
            await self.forget(room)

    # ------------------------------------------------------------- ghosts

    async def remove_ghost(self, room: Room, jid: JID) -> None:
        """An occupant's session bounced a stanza of the room: it is no longer there."""
        occupant = room.occupant_of(jid)
        if occupant is None:
            return
        if len(occupant.sessions) > 1:
            room.remove_session(occupant, jid)
        else:
            self.log.info("event=ghost-removed room=%s jid=%s", room.jid, jid)
            await room.remove_occupant(occupant, codes=(KICKED, ERROR_KICK))
        await self.emptied(room)

    def is_ghost_error(self, stanza: Stanza) -> bool:
        error = stanza.element.find("{jabber:client}error")
        if error is None:
            return False
        return any(etree.QName(child).localname in GHOST_CONDITIONS for child in error if isinstance(child.tag, str))

    # ------------------------------------------------------------- routing

    @hook("iq/host")
    async def iq_to_service(self, stanza: Stanza) -> bool:
        return await answer_iq(self.host, stanza)

    @hook("iq/bare")
    async def iq_to_room(self, stanza: Stanza) -> bool:
        if stanza.type in ("get", "set"):
            self.room_of(stanza)
        return await answer_iq(self.host, stanza)

    @hook("message/bare", priority=-1)
    async def unhandled_room_message(self, stanza: Stanza) -> bool:
        if stanza.type == "error":
            room = self.room(stanza.to)
            if room is not None and self.is_ghost_error(stanza):
                await self.remove_ghost(room, stanza.from_)
            return True
        self.room_of(stanza)
        raise BadRequest(text="only groupchat messages, invitations and declines go to a room")

    @hook("message/full", priority=-1)
    async def unhandled_occupant_message(self, stanza: Stanza) -> bool:
        if stanza.type != "error":
            self.room_of(stanza)
        return True

    @hook("message/host")
    async def message_to_service(self, stanza: Stanza) -> bool:
        if stanza.type not in ("error", "groupchat", "headline") and stanza.element.find(BODY) is not None:
            raise ServiceUnavailable()
        return True

    @hook("presence/host")
    async def presence_to_service(self, stanza: Stanza) -> bool:
        return True

    @hook("presence/bare")
    async def presence_to_room(self, stanza: Stanza) -> bool:
        """XEP-0045 7.2.1: entering a room needs a nickname; other presence to the bare
        room from a non-occupant means nothing (occupants' is taken by occupants.py)."""
        if stanza.type is None:
            raise JidMalformed(text="a nickname is needed: send presence to room@service/nick")
        return True

    @iq_handler("get", NS_DISCO_ITEMS, "query", to=("host",))
    async def public_rooms(self, stanza: Stanza):
        """XEP-0045 6.3: the public rooms (hidden and locked ones are not listed)."""
        if stanza.element[0].get("node"):
            raise ItemNotFound()
        query = make_element(f"{{{NS_DISCO_ITEMS}}}query")
        for jid, room in sorted(self.rooms.items(), key=lambda entry: str(entry[0])):
            if room.config.public and not room.locked:
                sub_element(query, f"{{{NS_DISCO_ITEMS}}}item", {"jid": str(jid), "name": room.config.name or None})
        return query
