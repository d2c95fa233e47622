"""XEP-0313 Message Archive Management for users, with XEP-0359 stanza ids and the
XEP-0441 archiving preferences.

What is archived (the `archive-should-store` question, answered here at priority -1):
messages of type chat or normal that carry a conversation (a body, a receipt, a chat
marker, an encrypted payload, an invitation, a correction, a retraction, a reaction: see
xmppd/hints.py) or the XEP-0334 <store/> hint; never groupchat, headline or error, chat
states alone, nor anything with <no-store/> or <no-permanent-store/>. Each user's
preferences then decide per contact (always / never / roster, with `default_policy` for
users who set none). A message is kept in the sender's archive (what it sent, as it
sent it) and in the recipient's (what it received, with its <stanza-id/>); a message to
oneself once, as received.

Ids: the archive id is made (a UUIDv7, xmppd/ids.py) before the message goes on, and
stamped on it as <stanza-id by='user@domain'/>: on the delivered message, hence on its
received carbons and its offline copy; on a sent message only for the sender's <sent/>
carbons, then taken off again (XEP-0313 3.4: not for the contact's eyes). A
<stanza-id/> that claims to be ours but comes from a client is removed (XEP-0359 5).

Writes never hold up live delivery: the write is started in the background and the
message goes on at once (xmppd/pending.py's ArchiveWriter: the copies archived while
the event loop runs one turn share one write and one commit). It is not fire-and-forget: it is retried, a MAM query or a
metadata request of that user waits for the user's pending writes (the archive reads its
own writes), shutdown waits for them, and once `max_pending_writes` are under way new
messages wait for room (memory stays bounded; a stalled archive slows delivery rather
than losing messages). What a crash can lose is the last group commit's worth of archive
copies of messages that were already delivered or stored offline.

Retention: with `retention_days` set, items older than that are deleted every
`retention_check_interval` seconds (the oldest first, as XEP-0313 2.2 requires).
Quota: an archive keeps at most `max_messages_per_user` items. Archiving never refuses a
message (that would refuse its delivery); beyond the quota the oldest items go, as with
retention. The length is checked every TRIM_EVERY items written for a user, so an
archive may hold up to TRIM_EVERY - 1 more for a while; each item dropped is counted in
xmppd_limit_reached_total.

Hooks: pre-message/bare|full (sent: priority 50 archives and stamps, 30 unstamps, around
the carbons at 40), message/bare|full (received, priority 50: after blocking, before
carbons and delivery), iq-get/iq-set self urn:xmpp:mam:2 query, prefs, metadata
(anything to another account's archive is forbidden), bind2-bound (the archive's
<metadata/> in a XEP-0386 <bound/>), server-started, user-deleted,
user-data-changed-elsewhere (preferences changed on another node of a cluster).
Fires: archive-should-store (an ArchiveQuestion: set `answer`, return True to decide);
user-data-changed after a change of preferences.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from dataclasses import dataclass

from lxml import etree

from xmppd import hints, mam
from xmppd.extension import Extension, hook, iq_handler
from xmppd.host import UserDataChanged
from xmppd.ids import time_ordered_id
from xmppd.pending import ArchiveWriter
from xmppd.protocol.errors import BadRequest, Forbidden, JidMalformed, PolicyViolation
from xmppd.protocol.jid import JID, InvalidJID
from xmppd.protocol.stanza import from_storage, make_element, sub_element, to_storage
from xmppd.router import Stanza
from xmppd.storage.interfaces import ArchivedStanza, ArchiveQuery

PREFS = f"{{{mam.NS_MAM}}}prefs"
POLICIES = ("always", "never", "roster")
ARCHIVE_PRIORITY = 50  # sent and received: before the carbons (40)
UNSTAMP_PRIORITY = 30  # sent: after the carbons copied the stamp
PREFS_CACHE_SIZE = 10000  # users whose preferences stay in memory
SENT_STAMP = "mam.sent-stamp"  # Stanza.meta: the <stanza-id/> to take off a sent message
ARCHIVABLE = "mam.archivable"  # Stanza.meta: is_archivable, decided once per message
TRIM_EVERY = 100  # items written for a user between two checks of its quota
TRIM_BATCH = 1000  # the most items dropped at one check


@dataclass
class ArchiveQuestion:
    """Should `stanza` go into `owner`'s archive? `outgoing`: `owner` sent it."""

    owner: JID
    stanza: Stanza
    outgoing: bool
    answer: bool = False


@dataclass(frozen=True)
class Prefs:
    """XEP-0441 preferences: `always` and `never` hold JIDs as strings, bare or full."""

    default: str
    always: frozenset[str] = frozenset()
    never: frozenset[str] = frozenset()

    @classmethod
    def from_element(cls, element: etree._Element, *, limit: int | None = None) -> Prefs:
        """Read a client's <prefs/> (at most `limit` JIDs a list) or a stored one."""
        default = element.get("default")
        if default not in POLICIES:
            raise BadRequest(text=f"'default' must be one of {', '.join(POLICIES)}")
        lists = {}
        for name in ("always", "never"):
            jids = set()
            for jid in element.iterfind(f"{{{mam.NS_MAM}}}{name}/{{{mam.NS_MAM}}}jid"):
                try:
                    jids.add(str(JID.parse((jid.text or "").strip())))
                except InvalidJID:
                    raise JidMalformed(text=f"{jid.text!r} is not a JID") from None
            if limit is not None and len(jids) > limit:
                raise PolicyViolation(text=f"at most {limit} JIDs in <{name}/>")
            lists[name] = frozenset(jids)
        return cls(default, lists["always"], lists["never"])

    def to_element(self) -> etree._Element:
        prefs = make_element(PREFS, {"default": self.default})
        for name in ("always", "never"):
            listed = sub_element(prefs, f"{{{mam.NS_MAM}}}{name}")
            for jid in sorted(getattr(self, name)):
                sub_element(listed, f"{{{mam.NS_MAM}}}jid", text=jid)
        return prefs

    def decision(self, peer: JID) -> bool | None:
        """The lists' say on `peer` (XEP-0441 3.4: a bare JID matches any resource);
        never wins over always; None: the default decides."""
        candidates = {str(peer), str(peer.bare)}
        if candidates & self.never:
            return False
        if candidates & self.always:
            return True
        return None


def is_archivable(message: etree._Element) -> bool:
    kind = message.get("type") or "normal"
    if kind not in ("chat", "normal"):
        return False
    return hints.worth_storing(message, permanently=True)


def strip_claimed_ids(message: etree._Element, archive: JID) -> None:
    """XEP-0359 5: a <stanza-id/> by our archive that arrives with a stanza is forged."""
    for stamp in list(message.iterchildren(mam.STANZA_ID)):
        if stamp.get("by") == str(archive):
            message.remove(stamp)


class MessageArchive(Extension):
    xeps = {313: "0.7.0", 359: "0.7.0", 441: "0.2.0", 59: "1.0"}
    account_features = [mam.NS_MAM, mam.NS_MAM_EXTENDED, mam.NS_SID]

    @dataclass(frozen=True)
    class Options:
        default_policy: str = "always"  # always | never | roster: for users who set no preferences
        retention_days: float = 0.0  # delete items older than this; 0 keeps them forever
        retention_check_interval: float = 3600.0  # seconds between retention runs
        page_size: int = 50  # results per page when the client asks for none
        max_page_size: int = 250  # the most a client may ask for
        max_preference_jids: int = 1000  # JIDs in each of a user's always and never lists
        max_pending_writes: int = 10000  # archive writes under way before messages wait for room
        max_messages_per_user: int = 100_000  # items an archive keeps, the oldest dropped beyond; 0: no limit

        def validate(self, where):
            where.one_of("default_policy", self.default_policy, POLICIES)
            where.check("retention_days", self.retention_days >= 0, "must not be negative")
            where.check("retention_check_interval", self.retention_check_interval > 0, "must be positive")
            where.check(
                "page_size", 0 < self.page_size <= self.max_page_size, "must be positive and at most max_page_size"
            )
            for key in ("max_preference_jids", "max_pending_writes"):
                where.check(key, getattr(self, key) > 0, "must be positive")
            where.check("max_messages_per_user", self.max_messages_per_user >= 0, "must not be negative")

    def __init__(self, host, options):
        super().__init__(host, options)
        self.prefs_cache: collections.OrderedDict[str, Prefs] = collections.OrderedDict()
        self.retention: asyncio.Task | None = None
        self.unchecked: collections.Counter[str] = collections.Counter()  # owner -> items written since checked

    async def start(self) -> None:
        self.store = self.host.open_archive("archive")
        self.writer = ArchiveWriter(
            self.store,
            self.services.tasks,
            self.log,
            max_pending=self.options.max_pending_writes,
            on_added=self._keep_quota,
        )
        self.prefs_store = self.host.open_keyvalue("archive-prefs")

    async def stop(self) -> None:
        if self.retention is not None:
            self.retention.cancel()
        late = await self.writer.all_settled(self.services.config.server.graceful_shutdown_timeout)
        if late:
            self.log.error("event=archive-writes-unfinished count=%d", late)

    # ------------------------------------------------------------- archiving

    @hook("pre-message/bare", priority=ARCHIVE_PRIORITY)
    @hook("pre-message/full", priority=ARCHIVE_PRIORITY)
    async def archive_sent(self, stanza: Stanza) -> bool:
        owner = stanza.from_.bare
        strip_claimed_ids(stanza.element, owner)
        if stanza.to.bare == owner:  # to oneself: archived once, as received
            return False
        if await self._belongs(owner, stanza, stanza.to, outgoing=True):
            item_id = await self._start_write(owner, stanza.to, stanza)
            # For the <sent/> carbons only (XEP-0313 3.4): unstamp_sent takes it off.
            stanza.meta[SENT_STAMP] = sub_element(stanza.element, mam.STANZA_ID, {"by": str(owner), "id": item_id})
        return False

    @hook("pre-message/bare", priority=UNSTAMP_PRIORITY)
    @hook("pre-message/full", priority=UNSTAMP_PRIORITY)
    async def unstamp_sent(self, stanza: Stanza) -> bool:
        stamp = stanza.meta.pop(SENT_STAMP, None)
        if stamp is not None:
            stanza.element.remove(stamp)
        return False

    @hook("message/bare", priority=ARCHIVE_PRIORITY)
    @hook("message/full", priority=ARCHIVE_PRIORITY)
    async def archive_received(self, stanza: Stanza) -> bool:
        if stanza.target == "full" and self.host.session_for(stanza.to) is None:
            return False  # the router hands it on as sent to the bare JID
        owner = stanza.to.bare
        strip_claimed_ids(stanza.element, owner)
        if await self._belongs(owner, stanza, stanza.from_, outgoing=False) and await self.host.user_exists(
            owner.local
        ):
            item_id = time_ordered_id()
            sub_element(stanza.element, mam.STANZA_ID, {"by": str(owner), "id": item_id})
            await self._start_write(owner, stanza.from_, stanza, item_id)
        return False

    async def _belongs(self, owner: JID, stanza: Stanza, peer: JID, *, outgoing: bool) -> bool:
        """Whether the message goes into `owner`'s archive: the policy, then the owner's preferences."""
        question = ArchiveQuestion(owner, stanza, outgoing)
        await self.host.bus.fire("archive-should-store", question)
        return question.answer and await self._wanted(owner, peer)

    async def _start_write(self, owner: JID, peer: JID, stanza: Stanza, item_id: str | None = None) -> str:
        """Write the message as it is now to `owner`'s archive in the background; its id.
        The sender's XEP-0198 ack waits for the commit (Stanza.writes): a message acked
        is in the archive, even after a crash."""
        item = ArchivedStanza(
            item_id or time_ordered_id(), mam.archive_time(), str(peer.bare), to_storage(stanza.element)
        )
        stanza.writes.append(await self.writer.append(str(owner), item))
        return item.id

    async def _keep_quota(self, owner: str) -> None:
        """Every TRIM_EVERY items written for `owner`, drop its oldest beyond the quota (at
        most TRIM_BATCH at a time: a quota lowered by the admin is reached over a while)."""
        limit = self.options.max_messages_per_user
        if not limit:
            return
        self.unchecked[owner] += 1
        if self.unchecked[owner] < TRIM_EVERY:
            return
        del self.unchecked[owner]
        try:
            excess = await self.store.count(owner) - limit
            if excess <= 0:
                return
            oldest = await self.store.query(owner, ArchiveQuery(max=min(excess, TRIM_BATCH), count=False))
            dropped = await self.store.delete(owner, [item.id for item in oldest.items])
        except Exception:
            self.log.exception("event=archive-quota-failed owner=%s", owner)  # tried again later
            return
        self.log.info("event=archive-quota-reached owner=%s dropped=%d", owner, dropped)
        self.limit_reached("max_messages_per_user", amount=dropped)

    @hook("archive-should-store", priority=-1)
    async def should_store(self, question: ArchiveQuestion) -> bool:
        stanza = question.stanza
        archivable = stanza.meta.get(ARCHIVABLE)  # the same for the sender's and the recipient's copy
        if archivable is None:
            archivable = stanza.meta[ARCHIVABLE] = is_archivable(stanza.element)
        question.answer = archivable
        return True

    async def _wanted(self, owner: JID, peer: JID) -> bool:
        """The owner's preferences about messages with `peer` (XEP-0441 3.4)."""
        prefs = await self._prefs(str(owner))
        decision = prefs.decision(peer)
        if decision is not None:
            return decision
        if prefs.default == "roster":
            return await self.host.storage.rosters.get_item(str(owner), str(peer.bare)) is not None
        return prefs.default == "always"

    async def _prefs(self, owner: str) -> Prefs:
        prefs = self.prefs_cache.get(owner)
        if prefs is not None:
            self.prefs_cache.move_to_end(owner)
            return prefs
        stored = await self.prefs_store.get(owner, "prefs")
        if stored is None:
            prefs = Prefs(self.options.default_policy)
        else:
            prefs = Prefs.from_element(from_storage(stored))
        self.prefs_cache[owner] = prefs
        if len(self.prefs_cache) > PREFS_CACHE_SIZE:
            self.prefs_cache.popitem(last=False)
        return prefs

    # ------------------------------------------------------------- queries

    @staticmethod
    def _own_archive(iq) -> str:
        if iq.target != "self":
            raise Forbidden(text="an archive is for its owner only")
        return str(iq.from_.bare)

    @iq_handler("get", mam.NS_MAM, "query", to=("self", "bare"))
    async def search_form(self, iq):
        self._own_archive(iq)
        return mam.search_form()

    @iq_handler("set", mam.NS_MAM, "query", to=("self", "bare"))
    async def query(self, iq):
        owner = self._own_archive(iq)
        await self.writer.settled(owner)
        exact: list[JID] = []

        def by_bare_jid(query: ArchiveQuery) -> ArchiveQuery:
            """The archive knows contacts by bare JID; a full JID is matched on each stanza."""
            if query.with_ is None:
                return query
            jid = JID.parse(query.with_)
            if jid.resource is not None:
                exact.append(jid)
            return dataclasses.replace(query, with_=str(jid.bare))

        def with_full_jid(message: etree._Element) -> etree._Element | None:
            if not exact or str(exact[0]) in (message.get("from"), message.get("to")):
                return message
            return None

        return await mam.answer_query(
            self.host,
            iq,
            self.store,
            owner,
            default_max=self.options.page_size,
            max_max=self.options.max_page_size,
            adjust=by_bare_jid,
            show=with_full_jid,
        )

    @iq_handler("get", mam.NS_MAM, "metadata", to=("self", "bare"))
    async def metadata(self, iq):
        owner = self._own_archive(iq)
        await self.writer.settled(owner)
        return await mam.metadata_element(self.store, owner)

    @hook("bind2-bound")
    async def bound_metadata(self, event) -> None:
        """XEP-0386 3.2: the state of the archive at the moment the resource was bound."""
        owner = str(event.session.jid.bare)
        await self.writer.settled(owner)
        event.connection.write(etree.tostring(await mam.metadata_element(self.store, owner)))

    @iq_handler("get", mam.NS_MAM, "prefs", to=("self", "bare"))
    async def get_prefs(self, iq):
        return (await self._prefs(self._own_archive(iq))).to_element()

    @iq_handler("set", mam.NS_MAM, "prefs", to=("self", "bare"))
    async def set_prefs(self, iq):
        owner = self._own_archive(iq)
        prefs = Prefs.from_element(iq.element[0], limit=self.options.max_preference_jids)
        await self.prefs_store.set(owner, "prefs", to_storage(prefs.to_element()))
        self.prefs_cache.pop(owner, None)
        await self.host.bus.notify("user-data-changed", UserDataChanged(self.name, owner))
        return prefs.to_element()

    @hook("user-data-changed-elsewhere")
    async def forget_prefs(self, change: UserDataChanged) -> None:
        if change.kind == self.name:
            self.prefs_cache.pop(change.owner, None)

    # ------------------------------------------------------------- housekeeping

    @hook("server-started")
    async def start_retention(self, server) -> None:
        """A first run before clients come in (nothing expired is served), then a run
        every `retention_check_interval` seconds."""
        if self.options.retention_days > 0:
            await self._expire()
            self.retention = self.services.tasks.spawn(self._expire_now_and_then())

    async def _expire_now_and_then(self) -> None:
        while True:
            await asyncio.sleep(self.options.retention_check_interval)
            await self._expire()

    async def _expire(self) -> None:
        try:
            removed = await self.store.delete_older_than(time.time() - self.options.retention_days * 86400)
        except Exception:
            self.log.exception("event=archive-expiry-failed")
            return
        if removed:
            self.log.info("event=archive-expired removed=%d", removed)

    @hook("user-deleted")
    async def delete_archive(self, jid: JID) -> None:
        owner = str(jid)
        await self.writer.settled(owner)
        await self.store.delete(owner)
        await self.prefs_store.delete(owner)
        self.prefs_cache.pop(owner, None)
        self.unchecked.pop(owner, None)
