"""XEP-0045 section 10: room configuration by its owners (an XEP-0004 form of FORM_TYPE
muc#roomconfig), instant and reserved rooms, and destruction with an alternate venue.

A new room stays locked until its owner submits the form (an empty submission makes an
instant room); cancelling the first configuration destroys it. After a change every
occupant gets status 104 (with 170/171 for archiving, 172/173 for anonymity), and
non-members are taken out of a room that became members-only (322). Only owners see
or change the configuration; others get forbidden, bad values not-acceptable.

Hooks: iq-get/bare and iq-set/bare muc#owner query.
Fires: muc-config-changed (a ConfigChange).
"""

from __future__ import annotations

from dataclasses import dataclass

from xmppd import forms
from xmppd.extension import Extension, iq_handler
from xmppd.protocol.errors import BadRequest, Forbidden, JidMalformed, NotAcceptable
from xmppd.protocol.jid import JID, InvalidJID
from xmppd.protocol.stanza import PRESENCE, make_element, sub_element
from xmppd.router import Stanza

from .room import (
    ALLOW_PM,
    CONFIG_CHANGED,
    LOGGING_OFF,
    LOGGING_ON,
    MEMBERS_ONLY_NOW,
    NOW_NON_ANONYMOUS,
    NOW_SEMI_ANONYMOUS,
    NS_MUC_OWNER,
    NS_MUC_USER,
    SELF,
    WHOIS,
    Room,
    RoomConfig,
)

FORM_TYPE = "http://jabber.org/protocol/muc#roomconfig"
QUERY = f"{{{NS_MUC_OWNER}}}query"


@dataclass
class ConfigChange:
    room: Room
    old: RoomConfig


def config_form(room: Room, max_history: int) -> list[forms.Field]:
    config = room.config
    flag = lambda value: ("1" if value else "0",)  # noqa: E731
    return [
        forms.Field("muc#roomconfig_roomname", "text-single", "Name", (config.name,)),
        forms.Field("muc#roomconfig_roomdesc", "text-single", "Description", (config.description,)),
        forms.Field("muc#roomconfig_lang", "text-single", "Language of the discussion", (config.language,)),
        forms.Field(
            "muc#roomconfig_persistentroom", "boolean", "Persistent (kept when empty)", flag(config.persistent)
        ),
        forms.Field("muc#roomconfig_publicroom", "boolean", "Listed in the directory", flag(config.public)),
        forms.Field("muc#roomconfig_membersonly", "boolean", "Only members may enter", flag(config.members_only)),
        forms.Field(
            "muc#roomconfig_allowinvites",
            "boolean",
            "Occupants may invite others (members-only rooms)",
            flag(config.allow_invites),
        ),
        forms.Field(
            "muc#roomconfig_moderatedroom", "boolean", "Only occupants with voice may speak", flag(config.moderated)
        ),
        forms.Field(
            "muc#roomconfig_passwordprotectedroom", "boolean", "A password is needed to enter", flag(config.password)
        ),
        forms.Field(
            "muc#roomconfig_roomsecret", "text-private", "Password", (config.password,) if config.password else ()
        ),
        forms.Field(
            "muc#roomconfig_maxusers",
            "list-single",
            "Most occupants",
            (str(config.max_users) if config.max_users else "none",),
            options=tuple(room_sizes(room.service.options.max_occupants, config.max_users)),
        ),
        forms.Field(
            "muc#roomconfig_whois",
            "list-single",
            "Who may see the real JIDs of occupants",
            (config.whois,),
            options=(("moderators", "Moderators"), ("anyone", "Anyone (needed for OMEMO)")),
        ),
        forms.Field(
            "muc#roomconfig_changesubject",
            "boolean",
            "Participants may change the subject",
            flag(config.change_subject),
        ),
        forms.Field(
            "muc#roomconfig_allowpm",
            "list-single",
            "Who may send private messages",
            (config.allow_pm,),
            options=(
                ("anyone", "Anyone"),
                ("participants", "Occupants with voice"),
                ("moderators", "Moderators"),
                ("none", "Nobody"),
            ),
        ),
        forms.Field(
            "muc#maxhistoryfetch",
            "text-single",
            f"Messages of history sent on entering (0-{max_history})",
            (str(config.history_length),),
        ),
        forms.Field(
            "muc#roomconfig_enablearchiving", "boolean", "Archive the discussion (XEP-0313)", flag(config.archiving)
        ),
    ]


def room_sizes(limit: int, current: int) -> list[str]:
    sizes = {size for size in (5, 10, 20, 30, 50, 100, 200, 500, 1000) if not limit or size <= limit}
    if current:
        sizes.add(current)
    return [str(size) for size in sorted(sizes)] + ([] if limit else ["none"])


def apply_form(room: Room, data: dict, max_history: int) -> RoomConfig:
    """The configuration a submitted form asks for (fields left out keep their value);
    NotAcceptable when it cannot be had (XEP-0045 10.2)."""
    try:
        return _read_form(room.config, data, room.service.options.max_occupants, max_history)
    except BadRequest as error:
        raise NotAcceptable(text=error.text) from None


def _read_form(old: RoomConfig, data: dict, limit: int, max_history: int) -> RoomConfig:
    def text(var: str, current: str) -> str:
        return forms.single(data, var, "") if var in data else current

    config = RoomConfig(
        name=text("muc#roomconfig_roomname", old.name),
        description=text("muc#roomconfig_roomdesc", old.description),
        language=text("muc#roomconfig_lang", old.language),
        persistent=forms.boolean(data, "muc#roomconfig_persistentroom", old.persistent),
        public=forms.boolean(data, "muc#roomconfig_publicroom", old.public),
        members_only=forms.boolean(data, "muc#roomconfig_membersonly", old.members_only),
        allow_invites=forms.boolean(data, "muc#roomconfig_allowinvites", old.allow_invites),
        moderated=forms.boolean(data, "muc#roomconfig_moderatedroom", old.moderated),
        password=text("muc#roomconfig_roomsecret", old.password),
        max_users=old.max_users,
        whois=forms.single(data, "muc#roomconfig_whois", old.whois),
        change_subject=forms.boolean(data, "muc#roomconfig_changesubject", old.change_subject),
        allow_pm=forms.single(data, "muc#roomconfig_allowpm", old.allow_pm),
        history_length=old.history_length,
        archiving=forms.boolean(data, "muc#roomconfig_enablearchiving", old.archiving),
    )
    if not forms.boolean(data, "muc#roomconfig_passwordprotectedroom", bool(config.password)):
        config.password = ""
    elif not config.password:
        raise NotAcceptable(text="a password-protected room needs a password")
    if config.whois not in WHOIS:
        raise NotAcceptable(text="muc#roomconfig_whois must be moderators or anyone")
    if config.allow_pm not in ALLOW_PM:
        raise NotAcceptable(text="muc#roomconfig_allowpm must be anyone, participants, moderators or none")
    size = forms.single(data, "muc#roomconfig_maxusers")
    if size is not None:
        config.max_users = 0 if size == "none" else _count(size, "muc#roomconfig_maxusers")
        if limit and not 0 < config.max_users <= limit:
            raise NotAcceptable(text=f"a room may have at most {limit} occupants")
    length = forms.single(data, "muc#maxhistoryfetch")
    if length is not None:
        config.history_length = _count(length, "muc#maxhistoryfetch")
        if config.history_length > max_history:
            raise NotAcceptable(text=f"the history holds at most {max_history} messages")
    return config


def _count(value: str, var: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise NotAcceptable(text=f"{var} must be a number") from None
    if number < 0:
        raise NotAcceptable(text=f"{var} must not be negative")
    return number


def status_codes(old: RoomConfig, new: RoomConfig) -> list[str]:
    """XEP-0045 10.2.1: 104, and the privacy-related codes that apply."""
    codes = [CONFIG_CHANGED]
    if new.archiving != old.archiving:
        codes.append(LOGGING_ON if new.archiving else LOGGING_OFF)
    if new.whois != old.whois:
        codes.append(NOW_NON_ANONYMOUS if new.whois == "anyone" else NOW_SEMI_ANONYMOUS)
    return codes


class RoomConfiguration(Extension):
    features = [NS_MUC_OWNER]
    depends = ["muc.service"]

    def __init__(self, host, options):
        super().__init__(host, options)
        self.service = host.extensions["muc.service"]

    def owned_room(self, stanza: Stanza) -> Room:
        room = self.service.room_of(stanza)
        if room.affiliation(stanza.from_) != "owner":
            raise Forbidden(text="only owners may do this")
        return room

    @iq_handler("get", NS_MUC_OWNER, "query", to=("bare",))
    async def get_form(self, stanza: Stanza):
        room = self.owned_room(stanza)
        query = make_element(QUERY)
        query.append(
            forms.build(
                "form",
                title=f"Configuration of {room.jid}",
                form_type=FORM_TYPE,
                fields=config_form(room, self.service.options.max_history_length),
            )
        )
        return query

    @iq_handler("set", NS_MUC_OWNER, "query", to=("bare",))
    async def set_form(self, stanza: Stanza):
        room = self.owned_room(stanza)
        query = stanza.element[0]
        destroy = query.find(f"{{{NS_MUC_OWNER}}}destroy")
        if destroy is not None:
            await self.destroy(
                room,
                destroy.findtext(f"{{{NS_MUC_OWNER}}}reason"),
                destroy.get("jid"),
                destroy.findtext(f"{{{NS_MUC_OWNER}}}password"),
            )
            return None
        x = forms.find(query)
        if x is None:
            raise BadRequest(text="a data form or <destroy/> is expected")
        if x.get("type") == "cancel":
            if room.locked:  # XEP-0045 10.1.3: cancelling the creation
                await self.destroy(room, None, None, None)
            return None
        data = forms.parse(x, form_type=FORM_TYPE)
        await self.configure(room, apply_form(room, data, self.service.options.max_history_length))
        return None

    async def configure(self, room: Room, config: RoomConfig) -> None:
        old, was_locked = room.config, room.locked
        room.config, room.locked = config, False
        if old.persistent and not config.persistent:
            await self.service.store.delete(str(room.jid))
        await self.service.save(room)
        await self.host.bus.notify("muc-config-changed", ConfigChange(room, old))
        if config.members_only and not old.members_only:
            for occupant in list(room.occupants.values()):
                if room.affiliation(occupant.jid) == "none":
                    await room.remove_occupant(occupant, codes=(MEMBERS_ONLY_NOW,))
        if config.whois != old.whois:
            for occupant in list(room.occupants.values()):
                for jid in occupant.sessions:
                    await room.send_occupants_to(occupant, jid)
        if not was_locked and config != old:
            await room.broadcast_status(status_codes(old, config))

    async def destroy(self, room: Room, reason: str | None, alternate: str | None, password: str | None) -> None:
        """XEP-0045 10.9: every occupant gets its unavailable presence with <destroy/>."""
        destroy = make_element(f"{{{NS_MUC_USER}}}destroy")
        if alternate:
            try:
                destroy.set("jid", str(JID.parse(alternate)))
            except InvalidJID:
                raise JidMalformed(text="the alternate venue is not a JID") from None
        if reason:
            sub_element(destroy, f"{{{NS_MUC_USER}}}reason", text=reason)
        if password:
            sub_element(destroy, f"{{{NS_MUC_USER}}}password", text=password)
        for occupant in list(room.occupants.values()):
            hidden, revealed = room.presence_of(
                occupant, source=make_element(PRESENCE), type_="unavailable", affiliation="none", destroy=destroy
            )
            own = room.with_codes(revealed, (SELF,))
            sessions = list(occupant.sessions)
            for jid in sessions:
                room.remove_session(occupant, jid)
            await room.send_copies(own, sessions)
        await self.service.forget(room, reason)
