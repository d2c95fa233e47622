"""A room of the MUC service (XEP-0045): configuration, affiliations, occupants, and the
presence and message fan-out to its occupants.

Not an extension: the parts of the service (occupants.py, groupchat.py, ...) act on
rooms through this class. Presences and messages that every occupant receives are built
once; each recipient gets a copy that differs only in its 'to' attribute.
"""

from __future__ import annotations

import base64
import collections
import copy
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

from lxml import etree

from xmppd.protocol.jid import JID
from xmppd.protocol.stanza import MESSAGE, PRESENCE, make_element, sub_element

if TYPE_CHECKING:
    from .service import MucService

NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = NS_MUC + "#user"
NS_MUC_ADMIN = NS_MUC + "#admin"
NS_MUC_OWNER = NS_MUC + "#owner"
NS_OCCUPANT_ID = "urn:xmpp:occupant-id:0"

X_MUC = f"{{{NS_MUC}}}x"
X_MUC_USER = f"{{{NS_MUC_USER}}}x"
OCCUPANT_ID = f"{{{NS_OCCUPANT_ID}}}occupant-id"

AFFILIATION_RANK = {"outcast": -1, "none": 0, "member": 1, "admin": 2, "owner": 3}
ROLE_RANK = {"none": 0, "visitor": 1, "participant": 2, "moderator": 3}
WHOIS = ("moderators", "anyone")
ALLOW_PM = ("anyone", "participants", "moderators", "none")

# Status codes (XEP-0045 section 15.6).
SELF = "110"
NON_ANONYMOUS = "100"
LOGGING_ON = "170"
LOGGING_OFF = "171"
NOW_NON_ANONYMOUS = "172"
NOW_SEMI_ANONYMOUS = "173"
CONFIG_CHANGED = "104"
CREATED = "201"
NICK_ASSIGNED = "210"
BANNED = "301"
NEW_NICK = "303"
KICKED = "307"
AFFILIATION_LOST = "321"
MEMBERS_ONLY_NOW = "322"
SHUTDOWN = "332"
ERROR_KICK = "333"


@dataclass
class RoomConfig:
    """The owner-settable configuration (the muc#roomconfig form, see config.py)."""

    name: str = ""
    description: str = ""
    language: str = ""
    persistent: bool = False
    public: bool = True
    members_only: bool = False
    moderated: bool = False
    password: str = ""
    max_users: int = 0  # 0: only the service's limit
    whois: str = "moderators"  # who sees real JIDs: moderators | anyone
    change_subject: bool = False  # participants may change the subject
    allow_pm: str = "anyone"  # anyone | participants | moderators | none
    allow_invites: bool = False  # participants may invite to a members-only room
    history_length: int = 20
    archiving: bool = True

    @classmethod
    def from_dict(cls, data: dict) -> RoomConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    def copy(self) -> RoomConfig:
        return RoomConfig(**asdict(self))


@dataclass
class Subject:
    text: str
    nick: str  # '' when the room itself set it
    when: float


class Occupant:
    """One nickname in the room: a user, possibly joined from several resources."""

    __slots__ = ("nick", "jid", "sessions", "role", "id")

    def __init__(self, nick: str, jid: JID, role: str, occupant_id: str):
        self.nick = nick
        self.jid = jid  # real bare JID
        self.sessions: dict[JID, etree._Element] = {}  # real full JID -> its last presence
        self.role = role
        self.id = occupant_id  # XEP-0421, stable per user and room

    @property
    def primary(self) -> JID:
        return next(iter(self.sessions))

    @property
    def presence(self) -> etree._Element:
        return self.sessions[self.primary]

    def __repr__(self):
        return f"<Occupant {self.nick} {self.jid} {self.role}>"


class Room:
    def __init__(
        self,
        service: MucService,
        jid: JID,
        config: RoomConfig,
        *,
        affiliations=None,
        subject: Subject | None = None,
        secret: str | None = None,
        created: float | None = None,
        avatar: bytes | None = None,
        locked: bool = False,
    ):
        self.service = service
        self.jid = jid
        self.config = config
        self.affiliations: dict[str, str] = dict(affiliations or {})  # bare JID -> owner|admin|member|outcast
        self.subject = subject
        self.secret = secret or secrets.token_urlsafe(24)  # keys the occupant ids
        self.created = created or time.time()
        self.avatar = avatar  # the room's vCard (vcard-temp), serialized
        self.locked = locked  # created, waiting for its owner's configuration
        self.occupants: dict[str, Occupant] = {}  # nick -> occupant
        self.sessions: dict[JID, Occupant] = {}  # real full JID -> occupant
        self.history: collections.deque = collections.deque(maxlen=max(config.history_length, 0))
        self.history_loaded = False
        self.destroyed = False

    def __repr__(self):
        return f"<Room {self.jid}>"

    # ------------------------------------------------------------- persistence

    def state(self) -> dict:
        return {
            "config": asdict(self.config),
            "affiliations": self.affiliations,
            "subject": asdict(self.subject) if self.subject else None,
            "secret": self.secret,
            "created": self.created,
            "avatar": base64.b64encode(self.avatar).decode() if self.avatar else None,
        }

    @classmethod
    def from_state(cls, service: MucService, jid: JID, state: dict) -> Room:
        subject = state.get("subject")
        avatar = state.get("avatar")
        return cls(
            service,
            jid,
            RoomConfig.from_dict(state.get("config", {})),
            affiliations=state.get("affiliations"),
            subject=Subject(**subject) if subject else None,
            secret=state.get("secret"),
            created=state.get("created"),
            avatar=base64.b64decode(avatar) if avatar else None,
        )

    # ------------------------------------------------------------- who is who

    def affiliation(self, jid: JID) -> str:
        return self.affiliations.get(str(jid.bare), "none")

    def set_affiliation(self, jid: JID, affiliation: str) -> None:
        if affiliation == "none":
            self.affiliations.pop(str(jid.bare), None)
        else:
            self.affiliations[str(jid.bare)] = affiliation

    def owners(self) -> list[str]:
        return [jid for jid, affiliation in self.affiliations.items() if affiliation == "owner"]

    def default_role(self, affiliation: str) -> str:
        if affiliation in ("owner", "admin"):
            return "moderator"
        if affiliation == "outcast":
            return "none"
        if affiliation == "member" or not self.config.moderated:
            return "participant"
        return "visitor"

    def occupant_id(self, jid: JID) -> str:
        digest = hmac.new(self.secret.encode(), str(jid.bare).encode(), hashlib.sha256).digest()
        return base64.b64encode(digest[:18]).decode()

    def occupant_of(self, jid: JID) -> Occupant | None:
        """The occupant a real full JID has joined as."""
        return self.sessions.get(jid)

    def occupants_of(self, bare: JID) -> list[Occupant]:
        return [occupant for occupant in self.occupants.values() if occupant.jid == bare]

    def may_read(self, jid: JID) -> bool:
        """Whether `jid` may read what is said in the room (its archive, its subject)
        without entering: anyone but outcasts in a public room open to all; else its
        owners, admins and occupants (who entered with the password, if there is one),
        and its members when the room has no password."""
        affiliation = self.affiliation(jid)
        if affiliation == "outcast":
            return False
        if AFFILIATION_RANK[affiliation] >= AFFILIATION_RANK["admin"] or self.occupants_of(jid.bare):
            return True
        if self.config.password:
            return False
        return affiliation == "member" or self.config.public and not self.config.members_only

    def sees_real_jids(self, viewer: Occupant | None) -> bool:
        return self.config.whois == "anyone" or (viewer is not None and viewer.role == "moderator")

    def is_non_anonymous(self) -> bool:
        return self.config.whois == "anyone"

    def occupant_jid(self, nick: str) -> JID:
        return self.jid.with_resource(nick)

    # ------------------------------------------------------------- presence

    def presence_of(
        self,
        occupant: Occupant,
        *,
        source: etree._Element | None = None,
        type_: str | None = None,
        codes: Iterable[str] = (),
        nick: str | None = None,
        actor: str | None = None,
        reason: str | None = None,
        affiliation: str | None = None,
        destroy: etree._Element | None = None,
    ) -> tuple[etree._Element, etree._Element]:
        """The occupant's presence as others see it: (without real JID, with real JID).

        `source` is the client's presence whose payload travels on (default: the
        occupant's current one), with its MUC elements replaced by the room's. An
        unavailable presence has role none, but for a nickname change (`nick`).
        """
        source = occupant.presence if source is None else source
        presence = make_element(PRESENCE, {"from": str(self.occupant_jid(occupant.nick)), "type": type_})
        for child in source:
            if isinstance(child.tag, str) and child.tag not in (X_MUC, X_MUC_USER, OCCUPANT_ID):
                presence.append(copy.deepcopy(child))
        affiliation = affiliation or self.affiliation(occupant.jid)
        role = "none" if type_ == "unavailable" and nick is None else occupant.role
        x = sub_element(presence, X_MUC_USER)
        item = sub_element(x, f"{{{NS_MUC_USER}}}item", {"affiliation": affiliation, "role": role, "nick": nick})
        if actor is not None:
            sub_element(item, f"{{{NS_MUC_USER}}}actor", {"nick": actor})
        if reason is not None:
            sub_element(item, f"{{{NS_MUC_USER}}}reason", text=reason)
        if destroy is not None:
            x.append(copy.deepcopy(destroy))
        for code in codes:
            sub_element(x, f"{{{NS_MUC_USER}}}status", {"code": code})
        sub_element(presence, OCCUPANT_ID, {"id": occupant.id})
        revealed = copy.deepcopy(presence)
        revealed.find(f"{X_MUC_USER}/{{{NS_MUC_USER}}}item").set("jid", str(occupant.primary))
        return presence, revealed

    @staticmethod
    def with_codes(presence: etree._Element, codes: Iterable[str]) -> etree._Element:
        """A copy of `presence` with more status codes (110 and friends for the occupant itself)."""
        presence = copy.deepcopy(presence)
        x = presence.find(X_MUC_USER)
        for code in codes:
            sub_element(x, f"{{{NS_MUC_USER}}}status", {"code": code})
        return presence

    async def broadcast_presence(
        self, occupant: Occupant, *, self_codes: Iterable[str] = (), exclude: JID | None = None, **kwargs
    ) -> None:
        """Send the occupant's presence to every occupant; its own sessions get status 110
        (and `self_codes`) on top of the `codes` everybody gets."""
        hidden, revealed = self.presence_of(occupant, **kwargs)
        own = self.with_codes(revealed, (SELF, *self_codes))
        for recipient in list(self.occupants.values()):
            if recipient is occupant:
                continue
            template = revealed if self.sees_real_jids(recipient) else hidden
            await self.send_copies(template, recipient.sessions)
        await self.send_copies(own, [jid for jid in occupant.sessions if jid != exclude])

    async def send_occupants_to(self, newcomer: Occupant, jid: JID) -> None:
        """The presences of everybody else, sent to one joining session."""
        sees = self.sees_real_jids(newcomer)
        for occupant in list(self.occupants.values()):
            if occupant is not newcomer:
                hidden, revealed = self.presence_of(occupant)
                await self.send_copies(revealed if sees else hidden, (jid,))

    # ------------------------------------------------------------- fan-out

    async def send_copies(self, template: etree._Element, recipients: Iterable[JID]) -> None:
        """Route one copy of `template` to each recipient; only 'to' differs between them
        (each must be its own element: stream management may queue it)."""
        send = self.service.host.send
        for jid in recipients:
            stanza = copy.deepcopy(template)
            stanza.set("to", str(jid))
            await send(stanza)

    async def broadcast(self, template: etree._Element) -> None:
        """Send a stanza from the room to every occupant session."""
        await self.send_copies(
            template, [jid for occupant in list(self.occupants.values()) for jid in occupant.sessions]
        )

    async def broadcast_status(self, codes: Iterable[str]) -> None:
        """A message from the room itself carrying status codes (configuration changes)."""
        message = make_element(MESSAGE, {"from": str(self.jid), "type": "groupchat", "id": secrets.token_hex(8)})
        x = sub_element(message, X_MUC_USER)
        for code in codes:
            sub_element(x, f"{{{NS_MUC_USER}}}status", {"code": code})
        await self.broadcast(message)

    # ------------------------------------------------------------- occupants

    def add_session(self, occupant: Occupant, jid: JID, presence: etree._Element) -> None:
        self.occupants[occupant.nick] = occupant
        occupant.sessions[jid] = presence
        self.sessions[jid] = occupant
        self.service.entered(jid, self)

    def remove_session(self, occupant: Occupant, jid: JID) -> None:
        occupant.sessions.pop(jid, None)
        self.sessions.pop(jid, None)
        if not occupant.sessions and self.occupants.get(occupant.nick) is occupant:
            del self.occupants[occupant.nick]
        self.service.left(jid, self)

    async def remove_occupant(
        self,
        occupant: Occupant,
        *,
        codes: Iterable[str] = (),
        actor: str | None = None,
        reason: str | None = None,
        destroy: etree._Element | None = None,
    ) -> None:
        """Take an occupant out (kick, ban, loss of membership, destruction): every
        session of it gets its unavailable presence with 110, the others see it leave."""
        hidden, revealed = self.presence_of(
            occupant,
            source=make_element(PRESENCE),
            type_="unavailable",
            codes=codes,
            actor=actor,
            reason=reason,
            destroy=destroy,
        )
        own = self.with_codes(revealed, (SELF,))
        sessions = list(occupant.sessions)
        for jid in sessions:
            self.remove_session(occupant, jid)
        await self.send_copies(own, sessions)
        for recipient in list(self.occupants.values()):
            await self.send_copies(revealed if self.sees_real_jids(recipient) else hidden, recipient.sessions)
