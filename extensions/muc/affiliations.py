"""XEP-0045 sections 8 to 10 (muc#admin): roles and affiliations.

Moderators kick (role none, 307) and grant or revoke voice; admins and owners grant
moderator, set members and bans (outcast, 301); owners name admins and owners. A change
is refused whole when any item of it is: forbidden when the actor lacks the privilege,
not-allowed against someone of equal or higher affiliation, conflict when the last owner
would go. Occupants concerned see their new presence; in a members-only room losing
membership takes one out (321); occupants who may see real JIDs learn of affiliation
changes of people who are not in the room. Lists go to those who may read them.

Hooks: iq-get/bare and iq-set/bare muc#admin query.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from xmppd.extension import Extension, iq_handler
from xmppd.protocol.errors import BadRequest, Conflict, Forbidden, ItemNotFound, JidMalformed, NotAllowed
from xmppd.protocol.jid import JID, InvalidJID
from xmppd.protocol.stanza import MESSAGE, make_element, sub_element
from xmppd.router import Stanza

from .room import (
    AFFILIATION_LOST,
    AFFILIATION_RANK,
    BANNED,
    KICKED,
    NS_MUC_ADMIN,
    NS_MUC_USER,
    ROLE_RANK,
    X_MUC_USER,
    Occupant,
    Room,
)

QUERY = f"{{{NS_MUC_ADMIN}}}query"
ITEM = f"{{{NS_MUC_ADMIN}}}item"
ADMIN = AFFILIATION_RANK["admin"]


@dataclass
class RoleChange:
    occupant: Occupant
    role: str
    reason: str | None


@dataclass
class AffiliationChange:
    jid: JID  # bare JID
    affiliation: str
    reason: str | None


class Affiliations(Extension):
    features = [NS_MUC_ADMIN]
    depends = ["muc.service"]

    def __init__(self, host, options):
        super().__init__(host, options)
        self.service = host.extensions["muc.service"]

    # ------------------------------------------------------------- changes

    @iq_handler("set", NS_MUC_ADMIN, "query", to=("bare",))
    async def change(self, stanza: Stanza):
        room = self.service.room_of(stanza)
        items = stanza.element[0].findall(ITEM)
        if not items:
            raise BadRequest(text="no item to change")
        actor = stanza.from_
        changes = [self.plan(room, actor, item) for item in items]
        owners = set(room.owners())
        for change in changes:
            if isinstance(change, AffiliationChange):
                (owners.add if change.affiliation == "owner" else owners.discard)(str(change.jid))
        if not owners:
            raise Conflict(text="a room needs an owner")
        actor_occupant = room.occupant_of(actor)
        actor_nick = actor_occupant.nick if actor_occupant else None
        for change in changes:
            if isinstance(change, RoleChange):
                await self.set_role(room, change, actor_nick)
            else:
                await self.set_affiliation(room, change, actor_nick)
        await self.service.save(room)
        return None

    def plan(self, room: Room, actor: JID, item: etree._Element) -> RoleChange | AffiliationChange:
        """Check one item against the actor's privileges; nothing changes yet."""
        affiliation, role = item.get("affiliation"), item.get("role")
        reason = item.findtext(f"{{{NS_MUC_ADMIN}}}reason")
        actor_rank = AFFILIATION_RANK[room.affiliation(actor)]
        if (affiliation is None) == (role is None):
            raise BadRequest(text="an item changes either a role or an affiliation")
        if role is not None:
            if role not in ROLE_RANK:
                raise BadRequest(text=f"unknown role {role!r}")
            actor_occupant = room.occupant_of(actor)
            if actor_rank < ADMIN and (actor_occupant is None or actor_occupant.role != "moderator"):
                raise Forbidden(text="only moderators change roles")
            target = room.occupants.get(item.get("nick") or "")
            if target is None:
                raise ItemNotFound(text="no occupant has this nickname")
            target_rank = AFFILIATION_RANK[room.affiliation(target.jid)]
            if (
                role == "moderator" or target.role == "moderator" and target is not actor_occupant
            ) and actor_rank < ADMIN:
                raise NotAllowed(text="only admins and owners grant or revoke the moderator role")
            if target_rank >= ADMIN and target_rank >= actor_rank and role != "moderator":
                raise NotAllowed(text="you may not change the role of an admin or owner")
            return RoleChange(target, role, reason)
        if affiliation not in AFFILIATION_RANK:
            raise BadRequest(text=f"unknown affiliation {affiliation!r}")
        if actor_rank < ADMIN:
            raise Forbidden(text="only admins and owners change affiliations")
        jid = self.item_jid(room, item)
        current = AFFILIATION_RANK[room.affiliation(jid)]
        if actor_rank < AFFILIATION_RANK["owner"]:
            if AFFILIATION_RANK[affiliation] >= ADMIN:
                raise Forbidden(text="only owners name admins and owners")
            if current >= ADMIN:
                raise NotAllowed(text="only owners change the affiliation of an admin or owner")
        return AffiliationChange(jid, affiliation, reason)

    @staticmethod
    def item_jid(room: Room, item: etree._Element) -> JID:
        if item.get("jid"):
            try:
                return JID.parse(item.get("jid")).bare
            except InvalidJID:
                raise JidMalformed() from None
        occupant = room.occupants.get(item.get("nick") or "")
        if occupant is None:
            raise BadRequest(text="an affiliation item needs a jid (or the nickname of an occupant)")
        return occupant.jid

    async def set_role(self, room: Room, change: RoleChange, actor: str | None) -> None:
        occupant = change.occupant
        if room.occupants.get(occupant.nick) is not occupant:
            return  # already gone through an earlier item
        if change.role == "none":
            await room.remove_occupant(occupant, codes=(KICKED,), actor=actor, reason=change.reason)
            await self.service.emptied(room)
            return
        occupant.role = change.role
        await room.broadcast_presence(occupant, actor=actor, reason=change.reason)

    async def set_affiliation(self, room: Room, change: AffiliationChange, actor: str | None) -> None:
        room.set_affiliation(change.jid, change.affiliation)
        present = room.occupants_of(change.jid)
        for occupant in present:
            if change.affiliation == "outcast":
                await room.remove_occupant(occupant, codes=(BANNED,), actor=actor, reason=change.reason)
            elif change.affiliation == "none" and room.config.members_only:
                await room.remove_occupant(occupant, codes=(AFFILIATION_LOST,), actor=actor, reason=change.reason)
            else:
                occupant.role = room.default_role(change.affiliation)
                await room.broadcast_presence(occupant, actor=actor, reason=change.reason)
        if present:
            await self.service.emptied(room)
            return
        # XEP-0045 9.3: those who may see real JIDs learn of the change of someone absent.
        message = make_element(MESSAGE, {"from": str(room.jid)})
        sub_element(
            sub_element(message, X_MUC_USER),
            f"{{{NS_MUC_USER}}}item",
            {"affiliation": change.affiliation, "jid": str(change.jid)},
        )
        await room.send_copies(
            message,
            [
                jid
                for occupant in list(room.occupants.values())
                if room.sees_real_jids(occupant)
                for jid in occupant.sessions
            ],
        )

    # ------------------------------------------------------------- lists

    @iq_handler("get", NS_MUC_ADMIN, "query", to=("bare",))
    async def get_list(self, stanza: Stanza):
        room = self.service.room_of(stanza)
        item = stanza.element[0].find(ITEM)
        if item is None:
            raise BadRequest(text="ask for one affiliation or role")
        requester = stanza.from_
        rank = AFFILIATION_RANK[room.affiliation(requester)]
        occupant = room.occupant_of(requester)
        query = make_element(QUERY)
        affiliation, role = item.get("affiliation"), item.get("role")
        if affiliation is not None:
            if affiliation not in AFFILIATION_RANK or affiliation == "none":
                raise BadRequest(text=f"no list of affiliation {affiliation!r}")
            # Members of a non-anonymous room see who belongs (OMEMO clients need it).
            may_read = rank >= ADMIN or (
                affiliation != "outcast" and rank >= AFFILIATION_RANK["member"] and room.is_non_anonymous()
            )
            if not may_read:
                raise Forbidden(text="you may not read this list")
            for jid, held in sorted(room.affiliations.items()):
                if held == affiliation:
                    nicks = [o.nick for o in room.occupants_of(JID.parse(jid))]
                    sub_element(query, ITEM, {"affiliation": held, "jid": jid, "nick": nicks[0] if nicks else None})
            return query
        if role not in ROLE_RANK or role == "none":
            raise BadRequest(text=f"no list of role {role!r}")
        if rank < ADMIN and (occupant is None or occupant.role != "moderator"):
            raise Forbidden(text="only moderators read the lists of roles")
        for other in room.occupants.values():
            if other.role == role:
                sub_element(
                    query,
                    ITEM,
                    {
                        "role": role,
                        "nick": other.nick,
                        "jid": str(other.primary),
                        "affiliation": room.affiliation(other.jid),
                    },
                )
        return query
