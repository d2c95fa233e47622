"""The services the server builds once and hands to hosts, sessions and extensions.

An extension sees the server only through these (`self.services`): where a stanza goes
(`delivery`), which domains are served (`directory`), background tasks (`tasks`),
metrics, HTTP routes, the stores and the options. Each is a Protocol, so that a part
can be built and tested with a stand-in, and so that the cluster can put node-to-node
delivery behind `Delivery` without an extension noticing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from lxml import etree

from xmppd.config import Config

if TYPE_CHECKING:
    from aiohttp import web

    from xmppd.host import Host
    from xmppd.protocol.errors import StanzaError
    from xmppd.router import Stanza
    from xmppd.session import Session
    from xmppd.storage.interfaces import ArchiveStore, KeyValueStore, MediaStore, StorageBackend


class Delivery(Protocol):
    """Where stanzas go: the router's rules, then a local session (or, later, another
    node, a remote server or a component)."""

    async def from_client(self, session: Session, element: etree._Element) -> list[asyncio.Task[Any]]:
        """A stanza a bound client sent: stamped, routed; returns the writes its
        XEP-0198 ack must wait for."""

    async def dispatch(self, element: etree._Element) -> None:
        """Route a stanza the server originates; its 'from' is set."""

    async def route(self, stanza: Stanza) -> None:
        """Deliver a stanza already parsed and stamped to its addressee's host."""

    async def bounce(self, stanza: Stanza, error: StanzaError) -> None:
        """Return `stanza` to its sender with `error` (never an error or a result)."""


class Directory(Protocol):
    """The domains this server serves: user hosts and component domains."""

    user_domains: list[str]

    def host(self, domain: str) -> Host | None:
        """The host serving `domain`, or None for a domain served elsewhere."""

    def hosts(self) -> Iterator[Host]:
        """Every host, user hosts first, in the order they were made."""

    def add_component(self, domain: str, parent: Host) -> Host:
        """Serve a component domain (conference.<domain>) for the user host `parent`."""


class Tasks(Protocol):
    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A background task owned by the server, cancelled at shutdown."""


class Metrics(Protocol):
    """Counters, histograms and gauges declared in xmppd/metrics.py."""

    def count(self, name: str, *labels: str, amount: float = 1) -> None: ...
    def observe(self, name: str, labels: tuple[str, ...], value: float) -> None: ...
    def gauge(self, name: str, callback: Callable[[], Any]) -> None: ...
    def stanza_received(self, tag: str) -> None: ...
    def stanza_sent(self, tag: str) -> None: ...
    def totals(self) -> dict[str, float]: ...
    def render(self) -> str: ...


Handler = Callable[["web.Request"], Awaitable["web.StreamResponse"]]


class HttpRoutes(Protocol):
    """The server's one HTTP listener (xmppd/http.py), shared by every feature."""

    public_url: str
    signing_key: bytes

    def add_route(self, method: str, path: str, handler: Handler) -> None: ...
    def body(self, request: web.Request) -> AsyncIterator[bytes]: ...


class Stores(Protocol):
    """The storage backends: `backend` for accounts, rosters, rooms and the like,
    named archives (possibly on another backend) and named key-value stores."""

    backend: StorageBackend
    media: MediaStore

    def archive(self, name: str) -> ArchiveStore: ...
    def keyvalue(self, name: str) -> KeyValueStore: ...


class Node(Protocol):
    """What the operators' endpoints (/health, the admin socket) read of this process."""

    state: str
    connections: set[Any]

    def listening(self) -> list[str]: ...


@dataclass(frozen=True)
class Services:
    config: Config
    delivery: Delivery
    directory: Directory
    tasks: Tasks
    metrics: Metrics
    http: HttpRoutes
    stores: Stores


class TaskGroup:
    """The server's background tasks (xmppd.services.Tasks)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()


@dataclass
class OpenStores:
    """The backends Server.open() opened (xmppd.services.Stores); archives live on
    `archive_backend`, which is `backend` unless [storage] archive names another."""

    backend: StorageBackend
    archive_backend: StorageBackend
    media: MediaStore

    def archive(self, name: str) -> ArchiveStore:
        return self.archive_backend.archive(name)

    def keyvalue(self, name: str) -> KeyValueStore:
        return self.backend.keyvalue(name)
