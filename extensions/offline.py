"""XEP-0160 offline messages: kept for a user with no available resource, delivered at
the next available presence, each with a XEP-0203 delay stamp.

What is kept: chat and normal messages with a body, or with a payload that must reach
the user later (receipts, chat markers, OMEMO, invitations), or marked with a XEP-0334
<store/> hint; never groupchat, headline, error, chat states alone or <no-store/>.
Messages are stored in the "offline" archive with time-ordered ids, at most
`max_messages_per_user` per user, and `max_messages_per_stranger` of them from one
sender not in the user's roster, so that a stranger cannot fill the queue for the
user's friends (beyond either, the sender gets service-unavailable, as XEP-0160 says
for a full storage, and the limit is counted). The write is started in order (its id
fixes the message's place in the queue) and commits in the background
(xmppd/pending.py): the sender's next stanza is routed meanwhile, and the sender's
XEP-0198 ack waits for the commit (Stanza.writes); a failed write is bounced with
internal-server-error. Delivery is paced by the resource's room (xmppd/session.py: the
XEP-0198 window, the output buffer): each turn waits for the writes under way, sends
the oldest messages that fit in order, then deletes exactly the ids sent, under a
per-user lock so that two resources coming online at once do not both get them; a week
of messages drains to a slow phone with bounded server memory.

Hooks: message/offline/store (the router's default delivery; backlog.py for a user whose
resources all hibernate, and for what a session that ended hands on),
message/offline/deliver (presence.py, on an available presence with a non-negative
priority; smacks.py after a resumption), user-deleted. A hibernating session is never
delivered to: what it would not acknowledge stays stored.
Fires: message-stored-offline (the Stanza, a notification, once the write is committed:
XEP-0357 push notifications). Counts the messages stored and delivered, and observes
the queue's length at each message stored (xmppd/metrics.py).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

from xmppd import hints
from xmppd.extension import Extension, hook
from xmppd.ids import time_ordered_id
from xmppd.locks import KeyedLocks
from xmppd.metrics import OFFLINE_DELIVERED, OFFLINE_QUEUE_LENGTH, OFFLINE_STORED
from xmppd.pending import PendingWrites
from xmppd.protocol.errors import InternalServerError, ServiceUnavailable
from xmppd.protocol.jid import JID
from xmppd.protocol.namespaces import NS_DELAY
from xmppd.protocol.stanza import delay_element, stored_stanza, to_storage
from xmppd.session import top_priority
from xmppd.storage.interfaces import ArchivedStanza, ArchiveQuery

DELAY = f"{{{NS_DELAY}}}delay"
DELAYED_SINCE = "delayed-since"  # Stanza.meta: Unix time the message was first due


class OfflineMessages(Extension):
    xeps = {160: "1.0.1", 203: "2.0", 334: "0.3.0"}
    features = ["msgoffline"]

    @dataclass(frozen=True)
    class Options:
        max_messages_per_user: int = 10000
        max_messages_per_stranger: int = 100  # of one user's queue, from one sender not in its roster

        def validate(self, where):
            where.check("max_messages_per_user", self.max_messages_per_user > 0, "must be positive")
            where.check("max_messages_per_stranger", self.max_messages_per_stranger > 0, "must be positive")

    def __init__(self, host, options):
        super().__init__(host, options)
        self.lock = KeyedLocks()  # per owner: the queue's count, append and delivery
        # Queue lengths counted once, then kept up to date under the lock: counting the
        # stored rows for every new message would make filling a queue quadratic.
        self.queue_lengths: dict[str, int] = {}
        self.sender_lengths: dict[str, dict[str, int]] = {}  # owner -> sender -> messages queued
        self.pending = PendingWrites(self.services.tasks)

    async def start(self) -> None:
        self.store = self.host.open_archive("offline")

    async def stop(self) -> None:
        late = await self.pending.all_settled(self.services.config.server.graceful_shutdown_timeout)
        if late:
            self.log.error("event=offline-writes-unfinished count=%d", late)

    @hook("message/offline/store", priority=-1)
    async def store_message(self, stanza) -> bool:
        if not hints.kept_offline(stanza.element):
            return False
        owner = stanza.to.bare
        now = time.time()
        element = copy.deepcopy(stanza.element)
        # A message returned by a session that ended is stamped with the time of its
        # first delivery attempt (XEP-0198 section 4), unless it was stamped before.
        if element.find(DELAY) is None:
            element.append(delay_element(self.host.domain, stanza.meta.get(DELAYED_SINCE, now)))
        key = str(owner)
        async with self.lock(key):
            length = self.queue_lengths.get(key)
            if length is None:
                await self.pending.settled(key)
                length = await self.store.count(key)
            if length >= self.options.max_messages_per_user:
                self.limit_reached("max_messages_per_user")
                raise ServiceUnavailable(text="the recipient's offline storage is full")
            sender = str(stanza.from_.bare)
            from_sender = self.sender_lengths.setdefault(key, {}).get(sender)
            if from_sender is None:
                from_sender = (await self.store.query(key, ArchiveQuery(with_=sender, max=0))).count or 0
            if (
                from_sender >= self.options.max_messages_per_stranger
                and await self.host.storage.rosters.get_item(key, sender) is None
            ):
                self.limit_reached("max_messages_per_stranger")
                raise ServiceUnavailable(text="the recipient's offline storage holds too many of your messages")
            # The id fixes the message's place in the queue; the commit runs on while the
            # sender's next stanza is routed, and the sender's ack waits for it.
            write = self.pending.start(
                key,
                self.store.append(
                    key, ArchivedStanza(id=time_ordered_id(), when=now, with_=sender, payload=to_storage(element))
                ),
            )
            self.queue_lengths[key] = length + 1
            self.sender_lengths[key][sender] = from_sender + 1
            self.services.metrics.observe(OFFLINE_QUEUE_LENGTH, (), length + 1)
        stanza.writes.append(self.services.tasks.spawn(self._committed(stanza, write)))
        return True

    async def _committed(self, stanza, write) -> None:
        """After the commit: count, notify (XEP-0357 push), and deliver at once if the user
        came online meanwhile; a failed write is bounced to the sender."""
        owner = stanza.to.bare
        try:
            await write
        except Exception:
            self.log.exception("event=offline-write-failed owner=%s", owner)
            self._forget_lengths(str(owner))  # counted again from storage
            await self.services.delivery.bounce(stanza, InternalServerError())
            return
        self.services.metrics.count(OFFLINE_STORED)
        await self.host.bus.notify("message-stored-offline", stanza)
        connected = [s for s in self.host.available_sessions(owner.local) if s.connection is not None]
        sessions = top_priority(connected)  # not a hibernating one
        if sessions:
            await self.deliver_stored_messages(sessions[0])

    @hook("message/offline/deliver", priority=-1)
    async def deliver_stored_messages(self, session) -> bool:
        """Drain the queue to `session` at the pace it takes stanzas (Session.drain_now)."""
        await session.drain_now(self.name, lambda room: self._drain(session, room))
        return True

    async def _drain(self, session, room: int) -> bool:
        """Send the oldest `room` messages and delete them; True once none is left, or
        the session no longer takes them (what was not sent stays stored)."""
        owner = str(session.jid.bare)
        async with self.lock(owner):
            await self.pending.settled(owner)  # the messages stored so far are all in the query
            page = await self.store.query(owner, ArchiveQuery(max=room, count=False))
            if session.closed or not session.available or session.connection is None:
                return True
            for item in page.items:
                stanza = stored_stanza(item.payload, self.log, owner=owner, id=item.id)
                if stanza is not None:  # an unreadable one is deleted unsent: it would block the queue
                    session.send(stanza)
            if page.items:
                self.services.metrics.count(OFFLINE_DELIVERED, amount=len(page.items))
                await self.store.delete(owner, [item.id for item in page.items])
            self._forget_lengths(owner)
        return page.complete

    def _forget_lengths(self, owner: str) -> None:
        self.queue_lengths.pop(owner, None)
        self.sender_lengths.pop(owner, None)

    @hook("user-deleted")
    async def delete_queue(self, jid: JID) -> None:
        async with self.lock(str(jid)):
            await self.pending.settled(str(jid))
            await self.store.delete(str(jid))
            self._forget_lengths(str(jid))
