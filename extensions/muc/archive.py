"""XEP-0313 Message Archive Management on the room JID, with XEP-0359 stanza ids.

A room whose archiving is on (muc#roomconfig_enablearchiving) stores each message with a
body or an encrypted payload in the "muc" archive, with the sender's real bare JID
beside it; the id it is stored under goes out as <stanza-id by='room'/> on the message.
Who may query it is `Room.may_read`: anyone but outcasts in a public room open to all,
else its owners, admins and occupants, and its members when it has no password (a
password room only to those who entered with it). Prosody and ejabberd let anyone but
outcasts read the archive of any room that is not members-only; xmppd does not, for
hidden and password-protected rooms. Paging with RSM, see xmppd/mam.py; real JIDs come
back only to those who may see them in the room.

The write runs in the background (xmppd/pending.py's ArchiveWriter: the room's messages of
one turn of the event loop share one write); the sender's XEP-0198 ack and a query of
the room's archive wait for it.

Hooks: muc-message (before the history keeps the message), muc-disco-info,
iq-get/bare and iq-set/bare urn:xmpp:mam:2 query, iq-get/bare urn:xmpp:mam:2 metadata.
"""

from __future__ import annotations

import copy
import dataclasses

from xmppd import hints, mam
from xmppd.extension import Extension, hook, iq_handler
from xmppd.ids import time_ordered_id
from xmppd.pending import ArchiveWriter
from xmppd.protocol.errors import Forbidden
from xmppd.protocol.jid import JID
from xmppd.protocol.stanza import sub_element, to_storage
from xmppd.storage.interfaces import ArchivedStanza, ArchiveQuery

from .groupchat import NS_SID, STANZA_ID, Said
from .room import AFFILIATION_RANK, NS_MUC_USER, X_MUC_USER, Room


class RoomArchive(Extension):
    xeps = {313: "1.1.1", 359: "0.7.0"}
    features = [mam.NS_MAM]  # on the service: clients look there before a room
    depends = ["muc.service"]

    def __init__(self, host, options):
        super().__init__(host, options)
        self.service = host.extensions["muc.service"]
        self.store = self.service.archive
        self.writer = ArchiveWriter(
            self.store, self.services.tasks, self.log, max_pending=self.service.options.max_pending_archive_writes
        )

    async def stop(self) -> None:
        late = await self.writer.all_settled(self.services.config.server.graceful_shutdown_timeout)
        if late:
            self.log.error("event=room-archive-writes-unfinished count=%d", late)

    @hook("muc-message", priority=10)
    async def archive(self, said: Said) -> None:
        room, message = said.room, said.message
        if not room.config.archiving or not hints.worth_storing(message, permanently=True):
            return
        item_id = time_ordered_id()
        sub_element(message, STANZA_ID, {"id": item_id, "by": str(room.jid)})
        stored = copy.deepcopy(message)
        sub_element(sub_element(stored, X_MUC_USER), f"{{{NS_MUC_USER}}}item", {"jid": str(said.occupant.jid)})
        item = ArchivedStanza(item_id, said.when, said.occupant.nick, to_storage(stored))
        said.writes.append(await self.writer.append(str(room.jid), item))

    @hook("muc-disco-info")
    async def advertise(self, info) -> None:
        if info.room.config.archiving:
            info.features += [mam.NS_MAM, mam.NS_MAM_EXTENDED, NS_SID]

    @staticmethod
    def check_access(room: Room, requester: JID) -> None:
        if not room.may_read(requester):
            raise Forbidden(text="you may not read the archive of this room")

    @iq_handler("get", mam.NS_MAM, "query", to=("bare",))
    async def search_form(self, stanza):
        self.check_access(self.service.room_of(stanza), stanza.from_)
        return mam.search_form()

    @iq_handler("set", mam.NS_MAM, "query", to=("bare",))
    async def query(self, stanza):
        room = self.service.room_of(stanza)
        self.check_access(room, stanza.from_)
        options = self.service.options
        reveal = (
            room.sees_real_jids(room.occupant_of(stanza.from_))
            or AFFILIATION_RANK[room.affiliation(stanza.from_)] >= AFFILIATION_RANK["admin"]
        )

        def by_nickname(query: ArchiveQuery) -> ArchiveQuery:
            """'with' names an occupant JID; the archive keeps nicknames."""
            if query.with_ is None:
                return query
            jid = JID.parse(query.with_)
            return dataclasses.replace(
                query, with_=jid.resource if jid.bare == room.jid and jid.resource else query.with_
            )

        def hide_real_jid(message):
            for x in message.findall(X_MUC_USER):
                message.remove(x)
            return message

        await self.writer.settled(str(room.jid))
        return await mam.answer_query(
            self.host,
            stanza,
            self.store,
            str(room.jid),
            default_max=options.archive_page_size,
            max_max=options.max_archive_page_size,
            adjust=by_nickname,
            show=None if reveal else hide_real_jid,
        )

    @iq_handler("get", mam.NS_MAM, "metadata", to=("bare",))
    async def metadata(self, stanza):
        room = self.service.room_of(stanza)
        self.check_access(room, stanza.from_)
        await self.writer.settled(str(room.jid))
        return await mam.metadata_element(self.store, str(room.jid))
