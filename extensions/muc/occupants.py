"""XEP-0045 sections 7.2 to 7.7 and 7.14: entering (and creating) a room, presence
updates, nickname changes and leaving, from presences sent to room@service/nick (or, from
an occupant, to the bare room JID).

Entering is refused with the error the XEP names, before anything changes or anybody
sees anything: banned (forbidden), room locked (item-not-found), members-only
(registration-required), password (not-authorized), nickname taken (conflict), room full
(service-unavailable). Several resources of one user may share a nickname. A user who gave
max_password_failures wrong room passwords within password_failure_window seconds gets
policy-violation for every password it gives until then ([extensions.muc]).

Hooks: presence/full, presence/bare (before the service's own).
Fires: muc-occupant-pre-join (vetoable), muc-occupant-joined, muc-occupant-left (with a
Join or Leave event).
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass

from lxml import etree

from xmppd.extension import Extension, hook
from xmppd.metrics import LIMIT_REACHED
from xmppd.protocol.errors import (
    Conflict,
    Forbidden,
    ItemNotFound,
    JidMalformed,
    NotAllowed,
    NotAuthorized,
    PolicyViolation,
    RegistrationRequired,
    ResourceConstraint,
    ServiceUnavailable,
)
from xmppd.protocol.jid import JID
from xmppd.router import Stanza

from .room import AFFILIATION_RANK, CREATED, LOGGING_ON, NEW_NICK, NON_ANONYMOUS, NS_MUC, SELF, X_MUC, Occupant, Room


@dataclass
class Join:
    room: Room
    occupant: Occupant | None  # set once the occupant is in
    jid: JID  # the real full JID entering
    stanza: Stanza
    x: etree._Element | None  # the <x xmlns='http://jabber.org/protocol/muc'/> it sent
    created: bool = False


@dataclass
class Leave:
    room: Room
    occupant: Occupant
    jid: JID


class PasswordFailures:
    """The recent wrong room passwords of each user (bare JID), to refuse guessing: after
    `limit` failures within `window` seconds, every password it gives is refused, right
    or wrong, until the oldest of them is older than the window. Users whose last
    failure is older than the window are forgotten, so memory follows recent guessers."""

    def __init__(self, limit: int, window: float):
        self.limit, self.window = limit, window
        self.failures: collections.OrderedDict[JID, collections.deque[float]] = collections.OrderedDict()

    def _forget_old(self, now: float) -> None:
        while self.failures and next(iter(self.failures.values()))[-1] <= now - self.window:
            self.failures.popitem(last=False)

    def is_throttled(self, user: JID) -> bool:
        now = time.monotonic()
        self._forget_old(now)
        failures = self.failures.get(user)
        return (
            bool(self.limit)
            and failures is not None
            and len(failures) == self.limit
            and failures[0] > now - self.window
        )

    def add(self, user: JID) -> None:
        if self.limit:
            failures = self.failures.pop(user, None) or collections.deque(maxlen=self.limit)
            failures.append(time.monotonic())
            self.failures[user] = failures  # the most recent failure goes last


class Occupants(Extension):
    depends = ["muc.service"]

    def __init__(self, host, options):
        super().__init__(host, options)
        self.service = host.extensions["muc.service"]
        self.password_failures = PasswordFailures(
            self.service.options.max_password_failures, self.service.options.password_failure_window
        )

    @hook("presence/full")
    async def presence_to_occupant(self, stanza: Stanza) -> bool:
        if stanza.type not in (None, "unavailable", "error"):
            return True  # subscriptions and probes mean nothing to a room
        room = self.service.room(stanza.to)
        real = stanza.from_
        occupant = room.occupant_of(real) if room is not None else None
        if stanza.type == "error":
            if occupant is not None and self.service.is_ghost_error(stanza):
                await self.service.remove_ghost(room, real)
            return True
        if stanza.type == "unavailable":
            if occupant is not None:
                await self.leave(room, occupant, stanza)
            return True
        x = stanza.element.find(X_MUC)
        if room is None:
            await self.create(stanza, x)
        elif occupant is None:
            await self.join(room, stanza, x)
        elif occupant.nick != stanza.to.resource:
            await self.change_nick(room, occupant, stanza)
        elif x is not None:
            await self.rejoin(room, occupant, stanza, x)
        else:
            occupant.sessions[real] = stanza.element
            await room.broadcast_presence(occupant)
        return True

    @hook("presence/bare", priority=1)
    async def presence_to_room(self, stanza: Stanza) -> bool:
        """COMPAT: an occupant's presence to the bare room JID is meant for its occupant
        JID, as Prosody and ejabberd take it: aioxmpp 0.13 leaves a room with unavailable
        presence to the bare JID, other clients send their updates there. Entering with
        no nickname, and presence from non-occupants, are left to the service
        (jid-malformed for available presence, nothing for the rest)."""
        room = self.service.room(stanza.to)
        occupant = room.occupant_of(stanza.from_) if room is not None else None
        if occupant is None or stanza.type is None and stanza.element.find(X_MUC) is not None:
            return False
        stanza.to = room.occupant_jid(occupant.nick)
        stanza.element.set("to", str(stanza.to))
        return await self.presence_to_occupant(stanza)

    # ------------------------------------------------------------- entering

    async def create(self, stanza: Stanza, x) -> None:
        """XEP-0045 10.1.1: the first to enter creates the room and owns it; it stays
        locked until configured, unless the client spoke Groupchat 1.0 (no <x/>)."""
        service, real = self.service, stanza.from_
        check_nick(stanza.to.resource)
        if not service.may_create(real):
            raise NotAllowed(text="room creation is restricted")
        if service.options.max_rooms and len(service.rooms) >= service.options.max_rooms:
            raise ResourceConstraint(text="this service has as many rooms as it may")
        room = await service.create_room(stanza.to.bare, real, locked=x is not None)
        try:
            await self.join(room, stanza, x, created=True)
        finally:
            await service.emptied(room)

    def check_entry(self, room: Room, real: JID, nick: str, x) -> None:
        affiliation = room.affiliation(real)
        privileged = AFFILIATION_RANK[affiliation] >= AFFILIATION_RANK["admin"]
        if affiliation == "outcast":
            raise Forbidden(text="you are banned from this room")
        if room.locked and affiliation != "owner":
            raise ItemNotFound(text="this room is being created")
        if room.config.members_only and affiliation == "none":
            raise RegistrationRequired(text="this room is for members only")
        if room.config.password and not privileged:
            self.check_password(room, real, x)
        check_nick(nick)
        holder = room.occupants.get(nick)
        if holder is not None and holder.jid != real.bare:
            raise Conflict(text="this nickname is in use")
        limit = room.config.max_users
        if limit and holder is None and len(room.occupants) >= limit and not privileged:
            raise ServiceUnavailable(type="wait", text="this room is full")

    def check_password(self, room: Room, real: JID, x) -> None:
        """The password a user gives, unless it gave too many wrong ones lately (issue 20:
        about 3,300 guesses a second were possible): then policy-violation."""
        if self.password_failures.is_throttled(real.bare):
            self.services.metrics.count(LIMIT_REACHED, "extensions.muc.max_password_failures")
            raise PolicyViolation(
                type="wait",
                text="too many wrong room passwords (extensions.muc.max_password_failures): try again later",
            )
        given = x.findtext(f"{{{NS_MUC}}}password") if x is not None else None
        if given != room.config.password:
            if given is not None:  # a guess, not a client that did not know
                self.password_failures.add(real.bare)
            raise NotAuthorized(text="a password is needed to enter this room")

    async def join(self, room: Room, stanza: Stanza, x, *, created: bool = False) -> None:
        real, nick = stanza.from_, stanza.to.resource
        self.check_entry(room, real, nick, x)
        event = Join(room, None, real, stanza, x, created)
        await self.host.bus.fire("muc-occupant-pre-join", event)
        occupant = room.occupants.get(nick)
        if occupant is None:
            occupant = Occupant(nick, real.bare, room.default_role(room.affiliation(real)), room.occupant_id(real))
        room.add_session(occupant, real, stanza.element)
        event.occupant = occupant
        await room.send_occupants_to(occupant, real)
        await room.broadcast_presence(occupant, self_codes=self.self_codes(room, created))
        self.log.debug("event=occupant-joined room=%s nick=%s jid=%s", room.jid, nick, real)
        await self.host.bus.notify("muc-occupant-joined", event)

    async def rejoin(self, room: Room, occupant: Occupant, stanza: Stanza, x) -> None:
        """A joined session enters again (it lost track of the room): it gets the whole
        state again, the others only its presence."""
        real = stanza.from_
        occupant.sessions[real] = stanza.element
        await room.send_occupants_to(occupant, real)
        await room.broadcast_presence(occupant, self_codes=self.self_codes(room, False))
        await self.host.bus.notify("muc-occupant-joined", Join(room, occupant, real, stanza, x))

    @staticmethod
    def self_codes(room: Room, created: bool) -> tuple[str, ...]:
        codes = []
        if room.is_non_anonymous():
            codes.append(NON_ANONYMOUS)
        if room.config.archiving:
            codes.append(LOGGING_ON)
        if created:
            codes.append(CREATED)
        return tuple(codes)

    # ------------------------------------------------------------- changes

    async def change_nick(self, room: Room, occupant: Occupant, stanza: Stanza) -> None:
        """XEP-0045 7.6: unavailable from the old nickname with 303, then presence from
        the new one; a taken nickname gets conflict and nothing changes."""
        new = stanza.to.resource
        check_nick(new)
        if new in room.occupants:
            raise Conflict(text="this nickname is in use")
        await room.broadcast_presence(occupant, type_="unavailable", codes=(NEW_NICK,), nick=new)
        del room.occupants[occupant.nick]
        occupant.nick = new
        room.occupants[new] = occupant
        occupant.sessions[stanza.from_] = stanza.element
        await room.broadcast_presence(occupant)

    async def leave(self, room: Room, occupant: Occupant, stanza: Stanza) -> None:
        real = stanza.from_
        was_primary = occupant.primary == real
        hidden, revealed = room.presence_of(occupant, source=stanza.element, type_="unavailable")
        room.remove_session(occupant, real)
        await room.send_copies(room.with_codes(revealed, (SELF,)), (real,))
        if not occupant.sessions:
            for recipient in list(room.occupants.values()):
                await room.send_copies(revealed if room.sees_real_jids(recipient) else hidden, recipient.sessions)
        elif was_primary:
            await room.broadcast_presence(occupant)
        await self.host.bus.notify("muc-occupant-left", Leave(room, occupant, real))
        await self.service.emptied(room)


def check_nick(nick: str) -> None:
    """XEP-0045 7.2.1: a nickname is a resourcepart, and not only spaces."""
    if not nick.strip():
        raise JidMalformed(text="a nickname must not be blank")
