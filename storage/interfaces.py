"""Storage interfaces: one Protocol per concern, implemented by every backend.

Extensions see only these. Owners are bare JID strings (``user@domain`` for a user,
``room@service`` for a room); stanzas travel as serialized XML bytes so that no backend
depends on lxml. Every write is committed before its coroutine returns: the caller may
then tell a client that the data is safe (an SM ack, an iq result).
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from xmppd.protocol.sasl import ScramCredentials

JSONObject = dict[str, Any]  # a JSON-able dict: a room's state, a pubsub node's configuration

# ---------------------------------------------------------------- accounts


@dataclass(frozen=True)
class Account:
    jid: str  # bare JID, normalised
    secrets: dict[str, ScramCredentials]  # SCRAM salted keys by hash name: "sha1", "sha256"
    created: float  # unix time


class AccountStore(Protocol):
    async def create(self, account: Account) -> bool:
        """Store a new account; False (and nothing changed) when the JID exists."""

    async def get(self, jid: str) -> Account | None: ...
    async def set_secrets(self, jid: str, secrets: dict[str, ScramCredentials]) -> bool:
        """Replace the SCRAM secrets of an existing account; False if it does not exist."""

    async def delete(self, jid: str) -> bool:
        """Delete the account only (callers remove the user's other data)."""

    async def list(self, domain: str) -> list[str]:
        """Bare JIDs of the accounts of one domain, sorted."""


# ---------------------------------------------------------------- rosters


@dataclass(frozen=True)
class RosterItem:
    """RFC 6121 roster item with the server-side subscription state."""

    jid: str  # contact's bare JID
    name: str | None = None
    subscription: str = "none"  # none | to | from | both
    ask: bool = False  # outbound subscribe pending ("ask='subscribe'")
    pending_in: bool = False  # inbound subscribe pending, awaiting approval
    approved: bool = False  # pre-approved inbound subscription
    groups: tuple[str, ...] = ()

    @property
    def has_from(self) -> bool:
        """The contact receives the user's presence (subscription from or both)."""
        return self.subscription in ("from", "both")

    @property
    def has_to(self) -> bool:
        """The user receives the contact's presence (subscription to or both)."""
        return self.subscription in ("to", "both")


class RosterStore(Protocol):
    async def get(self, owner: str) -> tuple[int, dict[str, RosterItem]]:
        """The roster version (XEP-0237, 0 for none) and the items keyed by contact."""

    async def get_item(self, owner: str, contact: str) -> RosterItem | None: ...
    async def put_item(self, owner: str, item: RosterItem) -> int:
        """Insert or replace one item; returns the new roster version."""

    async def remove_item(self, owner: str, contact: str) -> int:
        """Remove one item (no-op if absent); returns the new roster version."""

    async def delete(self, owner: str) -> None:
        """Remove the whole roster of a deleted account."""

    async def replace(self, owner: str, version: int, items: list[RosterItem]) -> None:
        """Make the roster exactly `items` at `version` (copying between backends: a
        client that cached a version must never see it again for other items)."""


# ---------------------------------------------------------------- archives


@dataclass(frozen=True)
class ArchivedStanza:
    id: str  # stable, unique, time-ordered within an owner
    when: float  # unix time it was stored
    with_: str  # the other party (bare JID; an occupant nick for rooms)
    payload: bytes  # the serialized stanza


@dataclass(frozen=True)
class ArchiveQuery:
    """Filters and result-set paging (XEP-0313 with XEP-0059).

    `after_id`/`before_id` bound the range, exclusive. `before=""` asks for the last
    page (RSM's empty <before/>); `before`/`after` with an id page from that item.
    """

    with_: str | None = None
    start: float | None = None
    end: float | None = None
    after_id: str | None = None
    before_id: str | None = None
    ids: tuple[str, ...] | None = None
    after: str | None = None
    before: str | None = None
    max: int | None = None
    count: bool = True  # False: ArchivePage.count may be None (no COUNT)


@dataclass(frozen=True)
class ArchivePage:
    items: list[ArchivedStanza]  # always in chronological order
    complete: bool  # no more items in the paging direction
    count: int | None = None  # total matching the filters, when cheap


class UnknownArchiveId(LookupError):
    """An id given in after/before/after_id/before_id is not in the archive (item-not-found)."""


class ArchiveStore(Protocol):
    async def append(self, owner: str, item: ArchivedStanza) -> bool:
        """Store one stanza. Idempotent on (owner, item.id): a retried append stores
        nothing new and returns False."""

    async def append_many(self, items: list[tuple[str, ArchivedStanza]]) -> list[bool]:
        """Store (owner, item) pairs in one write, each as `append` would: whether each
        was new, in order. Many messages then share one commit."""

    async def query(self, owner: str, query: ArchiveQuery) -> ArchivePage: ...
    async def count(self, owner: str) -> int: ...
    async def delete(self, owner: str, ids: list[str] | None = None) -> int:
        """Delete the given ids, or the whole archive of owner; returns how many went."""

    async def delete_older_than(self, when: float) -> int:
        """Retention: remove every item stored before `when` (any owner)."""

    async def owners(self) -> AsyncIterator[str]:
        """Every owner with at least one item (for copying between backends)."""


# ---------------------------------------------------------------- key-value


class KeyValueStore(Protocol):
    """Small per-owner documents: private XML, vCards, preferences, pending requests."""

    async def get(self, owner: str, key: str) -> bytes | None: ...
    async def set(self, owner: str, key: str, value: bytes) -> None: ...
    async def delete(self, owner: str, key: str | None = None) -> None:
        """Delete one key, or every key of owner when key is None."""

    async def keys(self, owner: str) -> list[str]: ...
    async def owners(self) -> AsyncIterator[str]: ...


# ---------------------------------------------------------------- rooms


class RoomStore(Protocol):
    """Persistent MUC rooms: configuration, affiliations, subject as a JSON-able dict."""

    async def get(self, room: str) -> JSONObject | None: ...
    async def save(self, room: str, state: JSONObject) -> None: ...
    async def delete(self, room: str) -> None: ...
    async def list(self, service: str) -> list[str]:
        """Room bare JIDs of one MUC service domain, sorted."""

    async def services(self) -> AsyncIterator[str]:
        """Every MUC service domain with at least one room (for copying between backends)."""


# ---------------------------------------------------------------- pubsub / PEP


@dataclass(frozen=True)
class PubSubItem:
    id: str
    payload: bytes  # the serialized <item/> child
    publisher: str
    when: float


class PubSubStore(Protocol):
    """Nodes of a pubsub service (for PEP the service is the user's bare JID)."""

    async def get_node(self, service: str, node: str) -> JSONObject | None:
        """The node's configuration (a JSON-able dict), or None if no such node."""

    async def set_node(self, service: str, node: str, config: JSONObject) -> None: ...
    async def delete_node(self, service: str, node: str) -> None:
        """Remove the node and all its items."""

    async def list_nodes(self, service: str) -> list[str]: ...
    async def publish(self, service: str, node: str, item: PubSubItem, max_items: int | None) -> None:
        """Insert or replace an item by id, then keep only the newest max_items (None: all)."""

    async def get_items(
        self, service: str, node: str, ids: list[str] | None = None, max_items: int | None = None
    ) -> list[PubSubItem]:
        """Items newest first, all or those with the given ids, at most max_items."""

    async def retract(self, service: str, node: str, item_id: str) -> bool: ...
    async def services(self) -> AsyncIterator[str]: ...


# ---------------------------------------------------------------- media (XEP-0363)


@dataclass(frozen=True)
class Upload:
    """An upload slot and, once the PUT completed, the stored file."""

    id: str  # unguessable slot id, part of the URL
    owner: str  # uploader's bare JID
    filename: str
    size: int
    content_type: str
    created: float
    expires: float  # the file is removed after this time
    completed: bool = False


class UploadStore(Protocol):
    async def add(self, upload: Upload) -> None: ...
    async def get(self, upload_id: str) -> Upload | None: ...
    async def mark_completed(self, upload_id: str) -> bool:
        """True if the slot was open and is now completed; False if already used."""

    async def list(self, owner: str) -> list[Upload]: ...
    async def usage(
        self, owner: str, now: float, open_since: float | None = None, exclude: str = ""
    ) -> tuple[int, int]:
        """(bytes, count) of the uploads of `owner` not expired at `now`: the completed
        ones, and the others created at `open_since` or later when it is given; `exclude`
        is an id left out. Asked at every slot request: no per-upload work on the loop."""

    async def remove(self, upload_id: str) -> None: ...
    async def expired(self, now: float) -> builtins.list[Upload]: ...  # list: the method above


class MediaStore(Protocol):
    """File bytes of uploads: the local disk by default, S3 when configured."""

    async def write(self, key: str, chunks: AsyncIterator[bytes], size: int, content_type: str) -> None:
        """Stream a file in; never holds it whole in memory."""

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Stream bytes [start, end] inclusive (end None: to the end of the file)."""

    async def size(self, key: str) -> int | None: ...
    async def delete(self, key: str) -> None: ...


# ---------------------------------------------------------------- backend


@runtime_checkable
class StorageBackend(Protocol):
    """What a backend module's ``open_backend(options)`` returns."""

    accounts: AccountStore
    rosters: RosterStore
    rooms: RoomStore
    pubsub: PubSubStore
    uploads: UploadStore

    def archive(self, name: str) -> ArchiveStore:
        """A named archive: "offline", "archive" (users' MAM), "muc" (rooms' MAM)."""

    def keyvalue(self, name: str) -> KeyValueStore:
        """A named key-value store: "private", "vcard", "roster-pending", ..."""

    async def archive_names(self) -> list[str]:
        """The names of the archives that hold at least one item, sorted."""

    async def keyvalue_names(self) -> list[str]:
        """The names of the key-value stores that hold at least one key, sorted."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...
