"""XEP-0045 6.4 and 6.5: service discovery of a room (XEP-0030), with the muc#roominfo
form (XEP-0128): its identity, the features that describe it (muc_persistent,
muc_membersonly, muc_nonanonymous, ... as clients such as Conversations read them to
decide on OMEMO), and its name, description and number of occupants; its subject only
to those who may read the discussion (`Room.may_read`).

Hooks: iq-get/bare disco#info and disco#items. Fires: muc-disco-info (a DiscoInfo
whose `features` and `fields` the other parts extend).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xmppd import forms
from xmppd.extension import Extension, iq_handler
from xmppd.extensions.disco import NS_DISCO_INFO, NS_DISCO_ITEMS, info_element
from xmppd.protocol.errors import ItemNotFound
from xmppd.protocol.stanza import make_element
from xmppd.router import Stanza

from .private import SELF_PING_OPTIMIZATION
from .room import NS_MUC, NS_OCCUPANT_ID, Room

NS_ROOMINFO = "http://jabber.org/protocol/muc#roominfo"
NS_STABLE_ID = "http://jabber.org/protocol/muc#stable_id"
RESERVED_NICK_NODE = "x-roomuser-item"


@dataclass
class DiscoInfo:
    room: Room
    features: list[str] = field(default_factory=list)
    fields: list[forms.Field] = field(default_factory=list)


def room_features(room: Room) -> list[str]:
    config = room.config
    return [
        NS_MUC,
        NS_DISCO_INFO,
        NS_DISCO_ITEMS,
        NS_OCCUPANT_ID,
        NS_STABLE_ID,
        SELF_PING_OPTIMIZATION,
        "muc_persistent" if config.persistent else "muc_temporary",
        "muc_public" if config.public else "muc_hidden",
        "muc_membersonly" if config.members_only else "muc_open",
        "muc_moderated" if config.moderated else "muc_unmoderated",
        "muc_nonanonymous" if config.whois == "anyone" else "muc_semianonymous",
        "muc_passwordprotected" if config.password else "muc_unsecured",
    ]


class RoomInfo(Extension):
    depends = ["muc.service"]

    def __init__(self, host, options):
        super().__init__(host, options)
        self.service = host.extensions["muc.service"]

    @iq_handler("get", NS_DISCO_INFO, "query", to=("bare",))
    async def info(self, stanza: Stanza):
        room = self.service.room_of(stanza)
        node = stanza.element[0].get("node")
        if node == RESERVED_NICK_NODE:  # XEP-0045 7.12: no nicknames are reserved here
            return make_element(f"{{{NS_DISCO_INFO}}}query", {"node": node})
        if node:
            raise ItemNotFound()
        config = room.config
        info = DiscoInfo(
            room,
            room_features(room),
            [
                forms.Field("muc#roominfo_description", None, values=(config.description,)),
                forms.Field("muc#roomconfig_roomname", None, values=(config.name,)),
                forms.Field("muc#roominfo_occupants", None, values=(str(len(room.occupants)),)),
                forms.Field("muc#roomconfig_changesubject", None, values=("1" if config.change_subject else "0",)),
                forms.Field("muc#roomconfig_allowinvites", None, values=("1" if config.allow_invites else "0",)),
                forms.Field("muc#roomconfig_allowpm", None, values=(config.allow_pm,)),
                forms.Field("muc#roomconfig_whois", None, values=(config.whois,)),
                forms.Field("muc#maxhistoryfetch", None, values=(str(config.history_length),)),
            ],
        )
        if room.may_read(stanza.from_):  # the subject is part of the discussion
            info.fields.append(
                forms.Field("muc#roominfo_subject", None, values=(room.subject.text if room.subject else "",))
            )
        if config.language:
            info.fields.append(forms.Field("muc#roominfo_lang", None, values=(config.language,)))
        await self.host.bus.notify("muc-disco-info", info)
        form = forms.build("result", form_type=NS_ROOMINFO, fields=info.fields)
        return info_element([("conference", "text", config.name or room.jid.local)], info.features, [form])

    @iq_handler("get", NS_DISCO_ITEMS, "query", to=("bare",))
    async def items(self, stanza: Stanza):
        """XEP-0045 6.5: the occupants are not listed (their nicknames are theirs to show)."""
        self.service.room_of(stanza)
        if stanza.element[0].get("node"):
            raise ItemNotFound()
        return make_element(f"{{{NS_DISCO_ITEMS}}}query")
