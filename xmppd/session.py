"""One authenticated resource: its JID, presence, priority and what it asked for.

`send` is the only way out to a client. Extensions that must see or hold outgoing
stanzas (stream management counts them, CSI holds some back) add a filter: a callable
that returns the element to send on, or None when it took the stanza over.
"""
from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

from lxml import etree

from xmppd.protocol.jid import JID
from xmppd.protocol.stream import serialize

if TYPE_CHECKING:
    from xmppd.host import Host


class Connection(Protocol):
    peer: str

    def write(self, data: bytes) -> None: ...
    def close(self, condition: str | None = None, text: str | None = None) -> None: ...
    def drop(self) -> None: ...


Filter = Callable[[etree._Element], "etree._Element | None"]


class Session:
    def __init__(self, host: "Host", jid: JID, connection: Connection | None):
        self.host = host
        self.jid = jid
        self.connection = connection
        self.available = False               # initial presence sent, not yet unavailable
        self.presence: etree._Element | None = None
        self.priority = 0
        self.interested = False              # requested the roster: gets roster pushes
        self.filters: list[Filter] = []
        self.stanzas_handled = 0             # stanzas from the client whose processing is over (XEP-0198 'h')
        self.unsettled: collections.deque[asyncio.Future] = collections.deque()   # read, not yet counted
        self.meta: dict = {}                 # per-extension state, keyed by extension name
        self.closed = False

    def __repr__(self):
        return f"<Session {self.jid}>"

    def send(self, element: etree._Element, *, after: Filter | None = None) -> None:
        """Pass `element` through the filters, then write it. With `after`, only the
        filters that follow that one: a filter that held a stanza back lets it go on."""
        filters = self.filters
        if after is not None:
            filters = filters[filters.index(after) + 1:]
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
        settling = asyncio.gather(*writes, return_exceptions=True)   # failures are the writer's to report
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

    def write(self, element: etree._Element) -> None:
        """Serialize to the connection, past the filters (for resends and flushes)."""
        if self.connection is not None:
            self.connection.write(serialize(element))
            self.host.server.metrics.stanza_sent(element.tag)

    def close(self, condition: str | None = None, text: str | None = None) -> None:
        """Close the stream, with a stream error when `condition` is given."""
        if self.connection is not None:
            self.connection.close(condition, text)
