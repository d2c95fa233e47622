"""XEP-0045 7.8.2 mediated invitations and 7.8.2 declines, through the room.

An occupant sends <x xmlns='muc#user'><invite to='...'/></x> to the room; the room
sends the invitee an invitation from itself naming the inviter (with the password, if
the room has one). In a members-only room only admins and owners invite (any occupant
when the room allows invitations), and the invitee becomes a member. A decline goes
back the same way. Direct invitations (XEP-0249) are plain messages between users and
need nothing from the room.

Hooks: message/bare (non-groupchat with muc#user invite or decline).
"""

from __future__ import annotations

import secrets

from xmppd.extension import Extension, hook
from xmppd.protocol.errors import BadRequest, Forbidden, JidMalformed, NotAcceptable
from xmppd.protocol.jid import JID, InvalidJID
from xmppd.protocol.stanza import MESSAGE, make_element, sub_element
from xmppd.router import Stanza

from .room import AFFILIATION_RANK, NS_MUC_USER, X_MUC_USER, Room

INVITE = f"{{{NS_MUC_USER}}}invite"
DECLINE = f"{{{NS_MUC_USER}}}decline"
REASON = f"{{{NS_MUC_USER}}}reason"


def _jid(value: str | None) -> JID:
    try:
        return JID.parse(value or "")
    except InvalidJID:
        raise JidMalformed(text="not a JID") from None


class Invitations(Extension):
    depends = ["muc.service"]

    def __init__(self, host, options):
        super().__init__(host, options)
        self.service = host.extensions["muc.service"]

    @hook("message/bare", priority=10)
    async def invitation(self, stanza: Stanza) -> bool:
        if stanza.type in ("groupchat", "error"):
            return False
        x = stanza.element.find(X_MUC_USER)
        if x is None:
            return False
        invites, declines = x.findall(INVITE), x.findall(DECLINE)
        if not invites and not declines:
            return False
        room = self.service.room_of(stanza)
        if invites:
            await self.invite(room, stanza, invites)
        else:
            await self.decline(room, stanza, declines[0])
        return True

    async def invite(self, room: Room, stanza: Stanza, invites) -> None:
        inviter = stanza.from_
        occupant = room.occupant_of(inviter)
        rank = AFFILIATION_RANK[room.affiliation(inviter)]
        if occupant is None:
            raise NotAcceptable(text="only occupants may invite")
        if room.config.members_only and rank < AFFILIATION_RANK["admin"] and not room.config.allow_invites:
            raise Forbidden(text="only admins and owners invite to this room")
        invitees = [_jid(invite.get("to")) for invite in invites]
        for invite, invitee in zip(invites, invitees):
            if room.config.members_only and room.affiliation(invitee) == "none":
                room.set_affiliation(invitee, "member")
                await self.service.save(room)
            message = make_element(MESSAGE, {"from": str(room.jid), "to": str(invitee), "id": secrets.token_hex(8)})
            x = sub_element(message, X_MUC_USER)
            forwarded = sub_element(x, INVITE, {"from": str(inviter)})
            reason = invite.findtext(REASON)
            if reason:
                sub_element(forwarded, REASON, text=reason)
            if room.config.password:
                sub_element(x, f"{{{NS_MUC_USER}}}password", text=room.config.password)
            sub_element(
                message,
                "{jabber:client}body",
                text=f"{inviter.bare} invites you to the room {room.jid}" + (f": {reason}" if reason else ""),
            )
            await self.host.send(message)

    async def decline(self, room: Room, stanza: Stanza, decline) -> None:
        if not decline.get("to"):
            raise BadRequest(text="a decline names the inviter in 'to'")
        inviter = _jid(decline.get("to"))
        message = make_element(MESSAGE, {"from": str(room.jid), "to": str(inviter), "id": secrets.token_hex(8)})
        forwarded = sub_element(sub_element(message, X_MUC_USER), DECLINE, {"from": str(stanza.from_.bare)})
        reason = decline.findtext(REASON)
        if reason:
            sub_element(forwarded, REASON, text=reason)
        await self.host.send(message)
