"""Room avatars: a vCard (XEP-0054 vcard-temp) on the room JID, set by its owners, as
XEP-0486 describes: anyone may read it, its hash is in the room's disco#info
(muc#roominfo_avatarhash) and in a presence from the room (XEP-0153 vcard-temp:x:update)
sent to each occupant on entering and to all on a change, with status 104.

Hooks: iq-get/bare and iq-set/bare vcard-temp vCard, muc-disco-info, muc-occupant-joined.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from xmppd import forms
from xmppd.extension import Extension, hook, iq_handler
from xmppd.protocol.errors import BadRequest, Forbidden
from xmppd.protocol.stanza import PRESENCE, from_storage, make_element, sub_element, to_storage
from xmppd.router import Stanza

from .room import CONFIG_CHANGED, Room

NS_VCARD = "vcard-temp"
NS_VCARD_UPDATE = "vcard-temp:x:update"
VCARD = f"{{{NS_VCARD}}}vCard"
BINVAL = f"{{{NS_VCARD}}}PHOTO/{{{NS_VCARD}}}BINVAL"


def avatar_hash(vcard_bytes: bytes | None) -> str | None:
    """SHA-1 of the photo (XEP-0153), or None when the room has none."""
    if not vcard_bytes:
        return None
    data = from_storage(vcard_bytes).findtext(BINVAL)
    if not data:
        return None
    return hashlib.sha1(base64.b64decode("".join(data.split()))).hexdigest()


class RoomAvatar(Extension):
    xeps = {54: "1.2", 153: "1.1", 486: "0.1.0"}
    depends = ["muc.service"]

    def __init__(self, host, options):
        super().__init__(host, options)
        self.service = host.extensions["muc.service"]

    @iq_handler("get", NS_VCARD, "vCard", to=("bare",))
    async def get_vcard(self, stanza: Stanza):
        room = self.service.room_of(stanza)
        return from_storage(room.avatar) if room.avatar else make_element(VCARD)

    @iq_handler("set", NS_VCARD, "vCard", to=("bare",))
    async def set_vcard(self, stanza: Stanza):
        room = self.service.room_of(stanza)
        if room.affiliation(stanza.from_) != "owner":
            raise Forbidden(text="only owners set the room's avatar")
        vcard = stanza.element[0]
        photo = vcard.findtext(BINVAL)
        if photo is not None:
            try:
                base64.b64decode("".join(photo.split()), validate=True)
            except (binascii.Error, ValueError):
                raise BadRequest(text="the photo is not base64") from None
        room.avatar = to_storage(vcard) if len(vcard) else None
        await self.service.save(room)
        await room.broadcast(self.presence(room))
        await room.broadcast_status((CONFIG_CHANGED,))
        return None

    @staticmethod
    def presence(room: Room):
        presence = make_element(PRESENCE, {"from": str(room.jid)})
        sub_element(
            sub_element(presence, f"{{{NS_VCARD_UPDATE}}}x"),
            f"{{{NS_VCARD_UPDATE}}}photo",
            text=avatar_hash(room.avatar),
        )
        return presence

    @hook("muc-occupant-joined", priority=5)
    async def announce(self, event) -> None:
        if event.room.avatar:
            presence = self.presence(event.room)
            presence.set("to", str(event.jid))
            await self.host.send(presence)

    @hook("muc-disco-info")
    async def advertise(self, info) -> None:
        info.features.append(NS_VCARD)
        digest = avatar_hash(info.room.avatar)
        if digest:
            info.fields.append(forms.Field("muc#roominfo_avatarhash", None, values=(digest,)))
