"""XEP-0198 Stream Management: stanza acks both ways, and resumption of a session whose
connection was lost.

Inbound, 'h' is `Session.stanzas_handled` since <enable/>: c2s counts a stanza once the
router is done with it and the writes it started are committed (Session.handled), so an
ack covers only stanzas already delivered, stored or bounced. <r/>, <resumed/> and the
'h' kept for an expired session wait for the stanzas read before them to be counted.

Outbound, the unacknowledged stanzas are a window, not a kill switch: each stanza
written (Session.on_write) is kept, with the time it went out, until the client
acknowledges it, and an ack is asked for (<r/>) when none is outstanding. With `window`
stanzas unacknowledged the session has no room (Session.window): nothing more is
written, what comes meanwhile waits (messages worth keeping in the resource's backlog,
backlog.py; the rest held in memory, xmppd/session.py), and goes out as acks come back.
An <r/> unanswered for `ack_timeout` seconds means a half-dead connection: it is
dropped, and the session hibernates; unless what was written before the request is
still going out, fewer bytes than at the last check (a slow reader that has not read
the request yet): then it waits another period.

A resumable session whose connection is lost without a stream close hibernates for
`resume_timeout` seconds (or the shorter 'max' its client asked for): it stays in
`host.sessions`, available. Its unacknowledged messages worth keeping go at once to its
backlog (backlog.keep), in the place they had, so that a crash meanwhile loses nothing;
messages for it meanwhile go to the backlog too (to offline storage while none of the
user's resources is connected). <resume/> on a new authenticated stream of the same
account takes it over (a still open old stream gets a conflict stream error), answers
<resumed h='..'/>, forgets what the client's 'h' acknowledges (deleting it from the
backlog), resends the rest of what is in memory, and the backlog and offline storage
drain after it, paced by the window. Resent messages carry a XEP-0203 delay stamped
with the time they first went out.

When a session ends with stanzas unacknowledged (hibernation over, stream closed,
session replaced), they go where the stanzas of an unavailable resource go (XEP-0198
section 4, RFC 6121 8.5.3.2.1): backlog.hand_on.

Errors (XEP-0198 sections 3, 4, 5): <enable/> before bind or a second time, <resume/>
after bind: <failed><unexpected-request/></failed>, and the stream goes on (as in
Prosody; section 3 allows a stream error for a second <enable/>, but <failed/> is what
clients handle); a <resume/> without 'previd' or 'h': <failed><bad-request/></failed>;
an unknown, expired or foreign SM-ID: <failed><item-not-found/></failed>, with the 'h'
an expired session had reached while the server remembers it; an 'h' beyond the stanzas
sent: an undefined-condition stream error with <handled-count-too-high/>, the
hibernating session left as it was. <r/> and <a/> without stream management are ignored.

Hooks: stream-element/{urn:xmpp:sm:3}enable|resume|r|a, bind2-inline/{urn:xmpp:sm:3}enable
(XEP-0386), sasl2-inline/{urn:xmpp:sm:3}resume (XEP-0388), session-interrupted,
session-closed.
Fires: smacks-hibernation-start (HibernatedStanzas: the unacknowledged stanzas when the
connection went), smacks-hibernation-end (the Session, resumed), both notifications;
message/offline/deliver after a resumption.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import math
import secrets
import time
from dataclasses import dataclass

from lxml import etree

from xmppd.extension import Extension, hook
from xmppd.hints import kept_offline
from xmppd.protocol.jid import JID
from xmppd.protocol.namespaces import NS_DELAY, NS_STANZAS, NS_STREAM_ERRORS
from xmppd.protocol.stanza import IQ, MESSAGE, STANZA_TAGS, delay_element, make_element, sub_element
from xmppd.protocol.stream import serialize
from xmppd.session import Session

NS_SM = "urn:xmpp:sm:3"
SM_FEATURE = etree.tostring(make_element(f"{{{NS_SM}}}sm"))
REQUEST = serialize(make_element(f"{{{NS_SM}}}r"))
SEQUENCE = 2**32  # 'h' wraps to zero past 2^32 - 1 (section 4)
REMEMBERED_SESSIONS = 10000  # expired SM-IDs whose 'h' a <failed/> still reports
DELAY = f"{{{NS_DELAY}}}delay"


@dataclass(frozen=True)
class HibernatedStanzas:
    """Stanzas unacknowledged when a session began to hibernate."""

    session: Session
    stanzas: list


def nonza(name: str, attributes: dict | None = None, condition: str | None = None) -> bytes:
    element = make_element(f"{{{NS_SM}}}{name}", attributes)
    if condition is not None:
        sub_element(element, f"{{{NS_STANZAS}}}{condition}")
    return serialize(element)


def parse_h(value: str | None) -> int | None:
    """An xs:unsignedInt, or None."""
    value = (value or "").strip()
    if not (value.isascii() and value.isdigit()):
        return None
    number = int(value)
    return number if number < SEQUENCE else None


def handled_count_too_high(h: int, sent: int) -> bytes:
    """The stream error of XEP-0198 section 4 for an ack of stanzas never sent."""
    return (
        f"<stream:error><undefined-condition xmlns='{NS_STREAM_ERRORS}'/>"
        f"<handled-count-too-high xmlns='{NS_SM}' h='{h}' send-count='{sent}'/></stream:error>"
    ).encode()


class ManagedStream:
    """The stream management state of one session: its window of unacknowledged stanzas."""

    def __init__(self, extension: StreamManagement, session: Session, sm_id: str | None, timeout: int):
        self.extension = extension
        self.session = session
        self.id = sm_id  # None: not resumable
        self.timeout = timeout
        self.base = session.stanzas_handled
        # What went out, unacknowledged: [element, the time it went out, None], or
        # [None, time, its backlog id] once backlog.keep has it.
        self.queue: collections.deque[list] = collections.deque()
        self.acked = 0  # the client's last 'h'
        self.sent = 0  # stanzas written since <enable/>, modulo 2^32
        self.requested: int | None = None  # `sent` when the outstanding <r/> went out
        self.ack_timer: asyncio.TimerHandle | None = None
        self.unsent = math.inf  # bytes the connection had not sent at the last ack timeout
        self.expiry: asyncio.TimerHandle | None = None

    @property
    def handled(self) -> int:
        return (self.session.stanzas_handled - self.base) % SEQUENCE

    def room(self) -> int:
        return self.extension.options.window - len(self.queue)

    def written(self, element: etree._Element) -> None:
        """Session.on_write: keep a copy of a stanza going out, ask for an ack."""
        if element.tag not in STANZA_TAGS:
            return
        self.queue.append([copy.deepcopy(element), time.time(), None])
        self.sent = (self.sent + 1) % SEQUENCE
        self.request_ack()

    def request_ack(self) -> None:
        if self.requested is not None or self.session.connection is None or not self.queue:
            return
        self.requested = self.sent
        self.session.connection.write(REQUEST)
        self.unsent = math.inf
        self.arm_ack_timer()

    def arm_ack_timer(self) -> None:
        if self.extension.options.ack_timeout:
            self.ack_timer = asyncio.get_running_loop().call_later(self.extension.options.ack_timeout, self.ack_missing)

    def ack_missing(self) -> None:
        """No answer to <r/> in time: a half-dead connection is dropped. One that still
        takes what was written before the request (a slow reader) has not seen it yet:
        it gets another period, for as long as it makes progress."""
        connection = self.session.connection
        if connection is None:
            return
        if 0 < connection.unsent < self.unsent:
            self.unsent = connection.unsent
            self.arm_ack_timer()
            return
        self.extension.log.info("event=ack-timeout jid=%s unacked=%d", self.session.jid, len(self.queue))
        connection.drop()

    def is_possible(self, h: int) -> bool:
        return (h - self.acked) % SEQUENCE <= len(self.queue)

    def acknowledge(self, h: int) -> list[str]:
        """Forget what 'h' acknowledges; the backlog ids of those the backlog has."""
        in_backlog = []
        for _ in range((h - self.acked) % SEQUENCE):
            _, _, backlog_id = self.queue.popleft()
            if backlog_id is not None:
                in_backlog.append(backlog_id)
        self.acked = h
        self.session.room_opened()
        return in_backlog

    def answered(self) -> None:
        """An <a/> came: the outstanding request, if any, is over; ask again for what
        went out since it."""
        outstanding, self.requested = self.requested, None
        self.cancel_ack_timer()
        if self.sent != outstanding:
            self.request_ack()

    def keep_in_backlog(self, backlog) -> list[asyncio.Task]:
        """Move the messages worth keeping to the backlog (a crash must not lose them);
        their places in the queue stay, for counting. The writes started."""
        writes = []
        for entry in self.queue:
            element, when, _ = entry
            if element is not None and element.tag == MESSAGE and kept_offline(element):
                backlog_id, write = backlog.keep(self.session, element, when)
                entry[:] = [None, when, backlog_id]
                writes.append(write)
        return writes

    def resend(self, domain: str) -> None:
        """After <resumed/>: what is in memory goes out again, stamped; what is in the
        backlog leaves the queue (the backlog sends it again, in order)."""
        self.queue = collections.deque(entry for entry in self.queue if entry[0] is not None)
        self.sent = (self.acked + len(self.queue)) % SEQUENCE
        connection = self.session.connection
        for element, when, _ in self.queue:
            if element.tag != IQ and element.find(DELAY) is None:
                element = copy.deepcopy(element)  # the queued copy stays unstamped
                element.append(delay_element(domain, when))
            connection.write(serialize(element))
        self.request_ack()

    def cancel_ack_timer(self) -> None:
        if self.ack_timer is not None:
            self.ack_timer.cancel()
            self.ack_timer = None

    def stop(self) -> None:
        self.cancel_ack_timer()
        self.requested = None
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None


class StreamManagement(Extension):
    xeps = {198: "1.6.1", 203: "2.0"}
    depends = ["backlog"]

    @dataclass(frozen=True)
    class Options:
        resume_timeout: int = 300  # seconds a lost session waits for <resume/>; 0: no resumption
        ack_timeout: float = 60.0  # seconds an <r/> may stay unanswered; 0: wait forever
        window: int = 256  # unacknowledged stanzas; past them, wait for acks

        def validate(self, where):
            where.check("resume_timeout", self.resume_timeout >= 0, "must not be negative")
            where.check("ack_timeout", self.ack_timeout >= 0, "must not be negative")
            where.check("window", 0 < self.window <= 65536, "must be between 1 and 65536")

    def __init__(self, host, options):
        super().__init__(host, options)
        self.resumable: dict[str, ManagedStream] = {}
        self.expired: collections.OrderedDict[str, tuple[JID, int]] = collections.OrderedDict()

    def stream_features(self, authenticated: bool) -> list[bytes]:
        return [SM_FEATURE] if authenticated else []

    # ------------------------------------------------------------- enable, acks

    @hook(f"stream-element/{{{NS_SM}}}enable")
    @hook(f"bind2-inline/{{{NS_SM}}}enable")  # XEP-0386: the answer goes into <bound/>
    async def enable(self, event) -> bool:
        session = event.session
        if session is None or self.name in session.meta:
            event.connection.write(nonza("failed", condition="unexpected-request"))
            return True
        await session.settled()  # 'h' counts from here: stanzas before it are not in it
        timeout = self.options.resume_timeout
        asked = parse_h(event.element.get("max"))  # the client's preferred maximum
        if asked:
            timeout = min(timeout, asked)
        resume = event.element.get("resume") in ("true", "1") and timeout > 0
        state = ManagedStream(self, session, secrets.token_urlsafe(18) if resume else None, timeout)
        session.meta[self.name] = state
        session.window = state.room
        session.on_write = state.written
        attributes = {}
        if resume:
            self.resumable[state.id] = state
            attributes = {"id": state.id, "resume": "true", "max": str(timeout)}
        event.connection.write(nonza("enabled", attributes))
        return True

    @hook(f"stream-element/{{{NS_SM}}}r")
    async def ack_requested(self, event) -> bool:
        state = event.session.meta.get(self.name) if event.session else None
        if state is not None:
            await event.session.settled()  # an ack for what was read before <r/>, once committed
            event.connection.write(nonza("a", {"h": str(state.handled)}))
        return True

    @hook(f"stream-element/{{{NS_SM}}}a")
    async def acked(self, event) -> bool:
        state = event.session.meta.get(self.name) if event.session else None
        if state is None:
            return True
        h = parse_h(event.element.get("h"))
        if h is None:
            event.connection.close("undefined-condition", "'h' must be an unsigned integer")
        elif not state.is_possible(h):
            self._too_high(event.connection, h, state)
        else:
            state.acknowledge(h)
            state.answered()
        return True

    def _too_high(self, connection, h: int, state: ManagedStream) -> None:
        self.log.info("event=handled-count-too-high jid=%s h=%d sent=%d", state.session.jid, h, state.sent)
        connection.write(handled_count_too_high(h, state.sent))
        connection.close()

    # ------------------------------------------------------------- hibernation

    @hook("session-interrupted")
    async def hibernate(self, session: Session) -> bool:
        state = session.meta.get(self.name)
        if state is None or state.id is None:
            return False
        state.stop()
        state.expiry = asyncio.get_running_loop().call_later(
            state.timeout, lambda: self.services.tasks.spawn(self._expire(state))
        )
        self.log.info("event=hibernating jid=%s unacked=%d timeout=%d", session.jid, len(state.queue), state.timeout)
        unacked = [element for element, _, _ in state.queue if element is not None]
        writes = state.keep_in_backlog(self.host.extensions["backlog"])
        await self.host.bus.notify("smacks-hibernation-start", HibernatedStanzas(session, unacked))
        await asyncio.gather(*writes, return_exceptions=True)  # failures are the backlog's to log
        self.log.info("event=unacked-kept jid=%s messages=%d", session.jid, len(writes))
        return True

    async def _expire(self, state: ManagedStream) -> None:
        session = state.session
        if session.closed or session.connection is not None:
            return
        self.log.info("event=hibernation-expired jid=%s unacked=%d", session.jid, len(state.queue))
        await self.host.end_session(session)

    # ------------------------------------------------------------- resumption

    @hook(f"stream-element/{{{NS_SM}}}resume")
    @hook(f"sasl2-inline/{{{NS_SM}}}resume")  # XEP-0388: the answer goes into <success/>
    async def resume(self, event) -> bool:
        connection = event.connection
        if event.session is not None:
            connection.write(nonza("failed", condition="unexpected-request"))
            return True
        previd, h = event.element.get("previd"), parse_h(event.element.get("h"))
        if not previd or h is None:
            connection.write(nonza("failed", condition="bad-request"))
            return True
        account = connection.authenticated
        state = self.resumable.get(previd)
        if state is None or state.session.jid.bare != account:
            owner, last_h = self.expired.get(previd, (None, None))
            attributes = {"h": str(last_h)} if owner == account else None
            connection.write(nonza("failed", attributes, condition="item-not-found"))
            return True
        if not state.is_possible(h):
            self._too_high(connection, h, state)
            return True
        session = state.session
        await session.settled()  # <resumed h=..> counts what the old stream sent
        if self.resumable.get(previd) is not state:
            connection.write(nonza("failed", condition="item-not-found"))  # ended meanwhile
            return True
        old = session.connection
        if old is not None:  # a half-dead stream: the new one wins
            old.detach()
            old.close("conflict", "the session was resumed on another stream")
        state.stop()
        connection.resume(session)
        connection.write(nonza("resumed", {"h": str(state.handled), "previd": previd}))
        self.host.extensions["backlog"].forget(session, state.acknowledge(h))
        state.resend(self.host.domain)
        self.log.info("event=resumed jid=%s resent=%d", session.jid, len(state.queue))
        await self.host.bus.notify("smacks-hibernation-end", session)
        if session.available and session.priority >= 0:  # what was stored meanwhile
            await self.host.bus.fire("message/offline/deliver", session)
        return True

    # ------------------------------------------------------------- the end

    @hook("session-closed")
    async def return_unacked(self, session: Session) -> None:
        state = session.meta.get(self.name)
        if state is None:
            return
        state.stop()
        await session.settled()
        if state.id is not None and self.resumable.pop(state.id, None) is not None:
            self.expired[state.id] = (session.jid.bare, state.handled)
            while len(self.expired) > REMEMBERED_SESSIONS:
                self.expired.popitem(last=False)
        unacked = [(element, when) for element, when, _ in state.queue if element is not None]
        state.queue.clear()
        await self.host.extensions["backlog"].hand_on(session, unacked)
