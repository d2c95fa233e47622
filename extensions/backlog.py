"""Flow control, the durable side: a backlog per resource, so that a slow, backlogged or
sleeping phone gets every message worth keeping, in order, with bounded server memory
(XEP-0198 section 4's unacknowledged stanzas, RFC 6121 8.5.3.2.1, XEP-0160).

A message worth keeping (hints.kept_offline) for a resource that is `behind`
(xmppd/session.py: its XEP-0198 window is full, its output is congested, or something
already waits for it) or that hibernates is appended to the "backlog" archive under the
resource's full JID, stamped with a XEP-0203 delay. The commit runs in the background
and the sender's ack waits for it (Stanza.writes). The session then has a source that
sends the backlog, oldest first, as the client takes stanzas, and deletes what it sent.
For a user whose every resource that takes messages hibernates, a message goes to
offline storage once instead, for whichever device comes back first. A backlog holds at
most `max_messages_per_resource`; past it, the sender gets resource-constraint (wait)
and the limit is counted.

`keep` stores what a lost connection left unacknowledged (smacks.py, at hibernation), in
the place each stanza had in the stream, so that a crash meanwhile loses nothing.

When a session ends, what it leaves goes to the user's account as if sent to an
unavailable resource: what smacks.py returns unacknowledged, then what the session held
in memory, then its backlog. A message worth keeping goes to offline storage
(message/offline/store; bounced to its sender if that is full), never to other sessions
directly: a message is handed on once, so that resources ending one after the other
cannot multiply it, and copies of one message (a message to the bare JID reached
several resources) are handed on once, known by the stanza-id the archive gave them.
An iq get/set is answered service-unavailable; anything else is dropped. At start, the
backlogs a crashed server left go to offline storage the same way.

Hooks: message/bare and message/full (after blocking, the archive and carbons, before
the default delivery), session-closed (after CSI and smacks.py).
Fires: message/offline/store; message-stored-offline for a message kept for a
hibernating resource (XEP-0357 push), once committed.
"""

from __future__ import annotations

import collections
import copy
import time
from dataclasses import dataclass

from lxml import etree

from xmppd.extension import Extension, hook
from xmppd.extensions.offline import DELAYED_SINCE
from xmppd.hints import kept_offline
from xmppd.host import ForwardArrived
from xmppd.ids import time_ordered_id
from xmppd.locks import KeyedLocks
from xmppd.mam import STANZA_ID, parse_datetime
from xmppd.pending import PendingWrites
from xmppd.protocol.errors import BadRequest, ResourceConstraint, ServiceUnavailable, StanzaError
from xmppd.protocol.jid import JID, InvalidJID
from xmppd.protocol.namespaces import NS_DELAY
from xmppd.protocol.stanza import IQ, MESSAGE, delay_element, error_reply, stored_stanza, to_storage
from xmppd.router import RETURNED, Stanza, bare_message_recipients
from xmppd.session import Session
from xmppd.storage.interfaces import ArchivedStanza, ArchiveQuery

DELAY = f"{{{NS_DELAY}}}delay"
HANDED_ON_REMEMBERED = 10000  # messages handed on lately, by account and identity


class Backlog(Extension):
    xeps = {198: "1.6.1", 203: "2.0"}
    depends = ["offline"]

    @dataclass(frozen=True)
    class Options:
        max_messages_per_resource: int = 10000

        def validate(self, where):
            where.check("max_messages_per_resource", self.max_messages_per_resource > 0, "must be positive")

    def __init__(self, host, options):
        super().__init__(host, options)
        self.pending = PendingWrites(self.services.tasks)
        self.lock = KeyedLocks()  # per resource: draining against handing on
        # Backlog lengths, kept here: every backlog is empty at start (handed on) and
        # when its session ends.
        self.lengths: collections.Counter[str] = collections.Counter()
        self.handed_on: collections.OrderedDict[tuple, None] = collections.OrderedDict()

    async def start(self) -> None:
        self.store = self.host.open_archive("backlog")
        async for owner in self.store.owners():
            if JID.parse(owner).domain == self.host.domain:
                await self._hand_on_stored(owner)

    async def stop(self) -> None:
        await self.pending.all_settled(self.services.config.server.graceful_shutdown_timeout)

    # ------------------------------------------------------------- keeping

    @hook("message/full")
    @hook("message/bare")
    async def keep_for_later(self, stanza: Stanza) -> bool:
        if stanza.target == "full":
            session = self.host.session_for(stanza.to)
            if session is None:
                return False  # the router treats it as sent to the bare JID
            recipients = [session]
        else:
            recipients = bare_message_recipients(self.host, stanza.to.local, stanza.type or "normal")
        waiting = [s for s in recipients if s.connection is None or s.behind]
        if not waiting or not kept_offline(stanza.element):
            return False
        if self._all_asleep(stanza.to.local):
            return await self.host.bus.fire("message/offline/store", stanza)
        if any(self.lengths[str(s.jid)] >= self.options.max_messages_per_resource for s in waiting):
            self.limit_reached("max_messages_per_resource")
            raise ResourceConstraint(text="too many messages wait for the recipient")
        for session in recipients:
            if session in waiting:
                stanza.writes.append(self._append(session, stanza.element, time.time(), stanza)[1])
            else:
                session.send(stanza.element)
        return True

    @hook("forward-arrived")
    async def keep_forwarded(self, arrived: ForwardArrived) -> bool:
        """A message routed on another node of a cluster for a session here that is behind
        waits in its backlog, as one routed here does; stored before that node is told
        the message arrived (its sender's ack waits for that)."""
        session, element = arrived.session, arrived.element
        if element.tag != MESSAGE or not session.behind or not kept_offline(element):
            return False
        if self.lengths[str(session.jid)] >= self.options.max_messages_per_resource:
            self.limit_reached("max_messages_per_resource")
            error = ResourceConstraint(text="too many messages wait for the recipient")
            await self.host.send(error_reply(element, error))
            return True
        await self._append(session, element, time.time())[1]
        return True

    def _all_asleep(self, local: str) -> bool:
        """Whether the user has resources that take messages and all of them hibernate
        (stops at the first connected one)."""
        asleep = False
        for session in self.host.sessions_of(local):  # on other nodes too (a cluster)
            if session.available and session.priority >= 0:
                if session.connection is not None:
                    return False
                asleep = True
        return asleep

    def keep(self, session: Session, element: etree._Element, when: float):
        """Start storing a message a lost connection left unacknowledged, sent at `when`,
        in the place it had in the stream (ahead of what came later); its backlog id
        and the write."""
        return self._append(session, element, _first_due(element, when), at=True)

    def forget(self, session: Session, ids: list[str]) -> None:
        """The client acknowledged these kept messages after all (<resume h=../>)."""
        if ids:
            self.lengths[str(session.jid)] -= len(ids)
            self.pending.start(str(session.jid), self.store.delete(str(session.jid), ids))

    def _append(
        self, session: Session, element: etree._Element, when: float, stanza: Stanza | None = None, *, at: bool = False
    ):
        """Start storing `element` in the backlog of `session`; its id and the write."""
        owner = str(session.jid)
        stored = element
        if element.find(DELAY) is None:
            stored = copy.deepcopy(element)  # the live copy stays unstamped
            stored.append(delay_element(self.host.domain, when))
        item = ArchivedStanza(
            id=time_ordered_id(when if at else None),
            when=when,
            with_=element.get("from") or self.host.domain,
            payload=to_storage(stored),
        )
        self.lengths[owner] += 1
        write = self.pending.start(owner, self._write(owner, item, session, stanza))
        session.add_source(self.name, lambda room: self._drain(session, room), first=at)
        return item.id, write

    async def _write(self, owner: str, item: ArchivedStanza, session: Session, stanza: Stanza | None) -> None:
        await self.store.append(owner, item)
        if stanza is not None and session.connection is None:
            await self.host.bus.notify("message-stored-offline", stanza)

    async def _drain(self, session: Session, room: int) -> bool:
        """Send the oldest `room` messages of the backlog; True once it is empty."""
        owner = str(session.jid)
        async with self.lock(owner):
            await self.pending.settled(owner)
            page = await self.store.query(owner, ArchiveQuery(max=room, count=False))
            if session.connection is None or session.closed:
                return False
            for item in page.items:
                if (element := stored_stanza(item.payload, self.log, owner=owner, id=item.id)) is not None:
                    session.send(element)
            if page.items:
                await self.store.delete(owner, [item.id for item in page.items])
                self.lengths[owner] -= len(page.items)
        # Done only when nothing is left, counting what was appended while the query ran
        # (committed meanwhile, yet not in this page).
        return self.lengths[owner] <= 0

    # ------------------------------------------------------------- handing on

    @hook("session-closed", priority=-1)
    async def session_ended(self, session: Session) -> None:
        session.sources.pop(self.name, None)
        await self.hand_on(session, [(element, time.time()) for element in session.take_held()])
        await self.pending.settled(str(session.jid))
        await self._hand_on_stored(str(session.jid))

    async def hand_on(self, session: Session, stanzas: list[tuple[etree._Element, float]]) -> None:
        """Treat stanzas a session could not deliver as sent to an unavailable resource."""
        for element, when in stanzas:
            await self._return(session.jid, element, when)

    async def _hand_on_stored(self, owner: str) -> None:
        jid = JID.parse(owner)
        async with self.lock(owner):
            while True:
                page = await self.store.query(owner, ArchiveQuery(max=500, count=False))
                for item in page.items:
                    if (element := stored_stanza(item.payload, self.log, owner=owner, id=item.id)) is not None:
                        await self._return(jid, element, item.when)
                if page.items:
                    await self.store.delete(owner, [item.id for item in page.items])
                if page.complete:
                    self.lengths.pop(owner, None)
                    return

    async def _return(self, resource: JID, element: etree._Element, when: float) -> None:
        key = (str(resource.bare), _identity(element, str(resource.bare)))
        if key[1] is not None:
            if key in self.handed_on:  # a copy of the same message, from another resource
                return
            self.handed_on[key] = None
            while len(self.handed_on) > HANDED_ON_REMEMBERED:
                self.handed_on.popitem(last=False)
        if element.tag == IQ:
            if element.get("type") in ("get", "set") and element.get("from"):
                await self.host.send(error_reply(element, ServiceUnavailable()))
            return
        if element.tag != MESSAGE or not kept_offline(element):
            return
        try:
            sender = JID.parse(element.get("from") or self.host.domain)
        except InvalidJID:
            sender = self.host.jid
        stanza = Stanza(element, "message", sender, resource.bare)
        stanza.target = "bare"
        stanza.meta[RETURNED] = True
        stanza.meta[DELAYED_SINCE] = when  # offline.py stamps its delay with it
        try:
            if not await self.host.bus.fire("message/offline/store", stanza):
                raise ServiceUnavailable()
            for write in stanza.writes:
                await write
        except StanzaError as error:
            if element.get("from"):
                await self.host.send(error_reply(element, error))


def _identity(element: etree._Element, owner: str) -> str | None:
    """What tells copies of one message apart: the XEP-0359 stanza-id its recipient's
    archive gave it (the same in every copy of a message to the bare JID)."""
    for stamp in element.iterchildren(STANZA_ID):
        if stamp.get("by") == owner:
            return stamp.get("id")
    return None


def _first_due(element: etree._Element, when: float) -> float:
    """When a stanza was first due: its delay stamp if it has one (it came from storage)."""
    delay = element.find(DELAY)
    if delay is not None:
        try:
            return parse_datetime(delay.get("stamp") or "")
        except BadRequest:
            pass
    return when
