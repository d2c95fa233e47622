"""One authenticated resource: its JID, presence, priority and what it asked for.

`send` is the only way out to a client. Extensions that must see or hold outgoing
stanzas (CSI holds some back) add a filter: a callable that returns the element to send
on, or None when it took the stanza over.

Flow control: a session writes to its connection only while the client has `room`: the
connection's unsent output is under its limit (xmppd/transport.py) and, with XEP-0198,
the window of unacknowledged stanzas is not full (`window`, set by smacks.py, which also
sees each stanza written through `on_write`). What comes while there is no room waits:
- in `held`, in memory, in order, up to `c2s.max_held_bytes`; past it, a stanza is
  dropped (an iq get/set is answered with resource-constraint) and counted;
- or, for what is kept durably (offline.py's queue, backlog.py's per-resource store),
  where it is: such a store registers a `source` with `add_source`, and the session's
  pump drains its sources in order as room opens, after what is held. Routing asks
  `behind` to know whether a message would overtake what waits.
A connection without room for `c2s.stall_timeout` seconds is closed (resource-constraint):
a client that takes nothing is not kept forever.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

from lxml import etree

from xmppd.metrics import LIMIT_REACHED
from xmppd.protocol.errors import ResourceConstraint
from xmppd.protocol.jid import JID
from xmppd.protocol.stanza import IQ, error_reply
from xmppd.protocol.stream import serialize

if TYPE_CHECKING:
    from xmppd.host import Host


log = logging.getLogger(__name__)


class Connection(Protocol):
    peer: str
    congested: bool  # unsent output over the limit: write nothing more
    unsent: int  # bytes written that the peer's network has not taken yet

    def write(self, data: bytes) -> None: ...
    def close(self, condition: str | None = None, text: str | None = None) -> None: ...
    def drop(self) -> None: ...
    async def drained(self) -> None: ...


class StreamConnection(Connection, Protocol):
    """A client stream as its top-level elements' handlers see it (StreamElement in
    xmppd/c2s.py): what XEP-0198 resumption needs to move a session between streams."""

    @property
    def authenticated(self) -> JID | None:
        """The account this stream logged in as (None before SASL succeeded)."""

    def resume(self, session: Session) -> None:
        """Continue `session` on this stream, which binds no resource of its own."""

    def detach(self) -> Session | None:
        """Give this stream's session up to another stream."""


Filter = Callable[[etree._Element], "etree._Element | None"]
# Sends at most `room` stanzas of what it keeps; True once it has nothing left.
Source = Callable[[int], Awaitable[bool]]
UNLIMITED = sys.maxsize
SOURCE_BATCH = 256  # stored stanzas a source sends per turn, at most


class Session:
    is_remote = False  # a RemoteSession (xmppd/cluster) lives on another node

    def __init__(self, host: Host, jid: JID, connection: Connection | None):
        self.host = host
        self.jid = jid
        self._connection = connection
        self.available = False  # initial presence sent, not yet unavailable
        self.presence: etree._Element | None = None
        self.priority = 0
        self.interested = False  # requested the roster: gets roster pushes
        self.filters: list[Filter] = []
        self.stanzas_handled = 0  # stanzas from the client whose processing is over (XEP-0198 'h')
        self.unsettled: collections.deque[asyncio.Future] = collections.deque()  # read, not yet counted
        self.meta: dict = {}  # per-extension state, keyed by extension name
        self.shared: dict = {}  # per-extension state other nodes see too (`share`)
        self.closed = False
        self.window: Callable[[], int] | None = None  # free places in the XEP-0198 window
        self.on_write: Callable[[etree._Element], None] | None = None
        self.held: collections.deque[tuple[etree._Element, int]] = collections.deque()
        self.held_bytes = 0
        self.sources: dict[str, Source] = {}
        self._pump: asyncio.Task | None = None
        self._room = asyncio.Event()

    def __repr__(self):
        return f"<Session {self.jid}>"

    @property
    def connection(self) -> Connection | None:
        return self._connection

    @connection.setter
    def connection(self, connection: Connection | None) -> None:
        self._connection = connection
        self._room.set()  # a pump waiting on the old connection ends
        if connection is not None:
            self.pump()

    async def share(self, key: str, value) -> None:
        """Set (None: remove) `shared[key]`, state that extensions on other nodes of a
        cluster read on this session's RemoteSession (carbons enabled...)."""
        if self.shared.get(key) == value:
            return
        if value is None:
            self.shared.pop(key, None)
        else:
            self.shared[key] = value
        await self.host.bus.notify("session-changed", self)

    def send(self, element: etree._Element, *, after: Filter | None = None) -> None:
        """Pass `element` through the filters, then write it. With `after`, only the
        filters that follow that one: a filter that held a stanza back lets it go on."""
        filters = self.filters
        if after is not None:
            filters = filters[filters.index(after) + 1 :]
        for apply in filters:
            element = apply(element)
            if element is None:
                return
        self.write(element)

    def handled(self, writes: Sequence[asyncio.Future] = ()) -> None:
        """Count a stanza from the client in `stanzas_handled` once the `writes` it started
        are committed, and never before the stanzas read ahead of it: the XEP-0198 'h'
        then covers only stanzas that are safe, in order, while the next stanza is
        already being routed."""
        if not writes and not self.unsettled:
            self.stanzas_handled += 1
            return
        settling = asyncio.gather(*writes, return_exceptions=True)  # failures are the writer's to report
        self.unsettled.append(settling)
        settling.add_done_callback(self._count_settled)

    def _count_settled(self, _: asyncio.Future) -> None:
        while self.unsettled and self.unsettled[0].done():
            self.unsettled.popleft()
            self.stanzas_handled += 1

    async def settled(self) -> None:
        """Return once every stanza read so far is counted in `stanzas_handled`."""
        while self.unsettled:
            await asyncio.wait([self.unsettled[0]])

    # ------------------------------------------------------------- flow control

    def room(self) -> int:
        """How many stanzas the client can take now."""
        connection = self._connection
        if connection is None or connection.congested:
            return 0
        return self.window() if self.window is not None else UNLIMITED

    @property
    def behind(self) -> bool:
        """Whether something waits for this client: a message routed now must wait too
        (durably, where it can), or it would overtake."""
        return bool(self.held or self.sources) or self.room() <= 0

    def write(self, element: etree._Element) -> None:
        """Write past the filters, or hold while the client has no room."""
        if self.held or self.room() <= 0:
            self._hold(element)
        else:
            self._put(element)

    def _put(self, element: etree._Element) -> None:
        self._connection.write(serialize(element))
        self.host.services.metrics.stanza_sent(element.tag)
        if self.on_write is not None:
            self.on_write(element)

    def _hold(self, element: etree._Element) -> None:
        size = len(serialize(element))
        options = self.host.services.config.c2s
        if self.held_bytes + size > options.max_held_bytes:
            self.host.services.metrics.count(LIMIT_REACHED, "c2s.max_held_bytes")
            log.info("event=held-stanza-dropped jid=%s held=%d", self.jid, len(self.held))
            if element.tag == IQ and element.get("type") in ("get", "set") and element.get("from"):
                self.host.services.tasks.spawn(
                    self.host.send(error_reply(element, ResourceConstraint(text="the recipient is not taking stanzas")))
                )
            return
        self.held.append((element, size))
        self.held_bytes += size
        self.pump()

    def take_held(self) -> list[etree._Element]:
        """Empty `held` (a session that ends hands on what it held)."""
        held = [element for element, _ in self.held]
        self.held.clear()
        self.held_bytes = 0
        return held

    async def drain_now(self, key: str, drain: Source) -> None:
        """Drain `drain` at once as far as the client has room, when nothing else waits
        (an offline queue at login: what fits comes before the client's next stanza is
        answered), and the rest paced by the pump."""
        if not (self.sources or self.held or self._pump) and (room := self.room()) > 0:
            if await drain(min(room, SOURCE_BATCH)):
                return
        self.add_source(key, drain)

    def add_source(self, key: str, drain: Source, *, first: bool = False) -> None:
        """Have the pump drain `drain` once what is held and the earlier sources are out
        (with `first`, before the other sources: it holds older stanzas)."""
        if first:
            self.sources = {key: self.sources.get(key, drain), **self.sources}
        else:
            self.sources.setdefault(key, drain)
        self.pump()

    def room_opened(self) -> None:
        """The client took some stanzas (a XEP-0198 ack): wake the pump."""
        self._room.set()

    def pump(self) -> None:
        if self._pump is None and self._connection is not None and not self.closed and (self.held or self.sources):
            self._pump = self.host.services.tasks.spawn(self._run_pump())

    async def _run_pump(self) -> None:
        try:
            while (connection := self._connection) is not None and not self.closed:
                while self.held and self.room() > 0:
                    element, size = self.held.popleft()
                    self.held_bytes -= size
                    self._put(element)
                room = self.room()
                if room <= 0:
                    if not await self._wait_for_room(connection):
                        return
                elif self.held or not self.sources:
                    return
                else:
                    key, drain = next(iter(self.sources.items()))
                    if await drain(min(room, SOURCE_BATCH)) and self.sources.get(key) is drain:
                        del self.sources[key]
        finally:
            self._pump = None

    async def _wait_for_room(self, connection: Connection) -> bool:
        """Wait until the client takes something; False when the connection is gone."""
        self._room.clear()
        stall = self.host.services.config.c2s.stall_timeout
        try:
            async with asyncio.timeout(stall or None):
                if connection.congested:
                    await connection.drained()
                else:
                    await self._room.wait()
        except TimeoutError:
            self.host.services.metrics.count(LIMIT_REACHED, "c2s.stall_timeout")
            log.info("event=stalled jid=%s held=%d", self.jid, len(self.held))
            connection.close("resource-constraint", "the client did not take its stanzas")
            return False
        except (ConnectionError, OSError):
            return False
        return self._connection is connection

    def close(self, condition: str | None = None, text: str | None = None) -> None:
        """Close the stream, with a stream error when `condition` is given."""
        if self.connection is not None:
            self.connection.close(condition, text)


def top_priority(sessions: Iterable[Session]) -> list[Session]:
    """RFC 6121 8.5.2.1.1: of `sessions`, those of the highest non-negative priority
    (the resources a message to the bare JID goes to)."""
    eligible = [session for session in sessions if session.priority >= 0]
    top = max((session.priority for session in eligible), default=None)
    return [session for session in eligible if session.priority == top]
