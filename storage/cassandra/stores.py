"""The stores of storage/interfaces.py on Cassandra, except archives (archive.py).

Tables are in schema/001_initial.cql. Every method is a few prepared statements on
whole partition keys, run asynchronously through `CqlSession`.

Lightweight transactions (Paxos, four round trips) are used only where two writers
must not both win: creating an account, changing the secrets of an account that may
just have been deleted, moving a roster version, completing an upload slot. Everything
else is an idempotent upsert that the driver may retry.

Index rows ("which owners have keys", "which rooms has a service") are removed when
their last row goes. The removal is written with the timestamp taken *before* the
emptiness check: a concurrent writer that adds a row after the check writes its index
row later, with a newer timestamp, and Cassandra keeps the newer write.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from xmppd.protocol.sasl import ScramCredentials

from .. import UPLOAD_COLUMNS, domain_of, upload_of
from ..interfaces import Account, PubSubItem, RosterItem, Upload
from ..scram_secrets import decode_secrets, encode_secrets
from .common import SHARDS, bounded_gather, merge_sorted, now_micros, shard_of

if TYPE_CHECKING:
    from . import CassandraBackend

DAY = 86400
# Statements per batch when a whole roster is written (Cassandra warns at 5 KiB).
ROSTER_BATCH = 20
# Order rows read per round trip when walking a pubsub node's items, newest first.
PAGE_OF_ORDER = 100


def _json(value) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


class _Store:
    def __init__(self, backend: CassandraBackend):
        self._backend = backend

    @property
    def cql(self):
        return self._backend.cql


async def distinct_keys(cql, table: str, column: str) -> list[str]:
    """The distinct values of `column` in the ``(column, shard)`` partition keys of
    `table`, sorted. A scan of partition keys over the whole ring: only for the few
    partitions of an index table (SHARDS per value), and only for admin work such as
    copying between backends."""
    return sorted({value async for value, _ in cql.iterate(f"SELECT DISTINCT {column}, shard FROM {table}")})


async def _sharded_listing(cql, select: str, key: tuple) -> AsyncIterator[str]:
    """The sorted union of one key's SHARDS partitions (``select`` ends with
    ``shard = ?`` and returns one clustering column)."""

    async def column(shard: int) -> AsyncIterator[str]:
        async for (value,) in cql.iterate(select, (*key, shard)):
            yield value

    async for value in merge_sorted([column(shard) for shard in range(SHARDS)]):
        yield value


# ---------------------------------------------------------------- accounts


class CassandraAccountStore(_Store):
    async def create(self, account: Account) -> bool:
        result = await self.cql.execute(
            "INSERT INTO accounts (jid, secrets, created) VALUES (?, ?, ?) IF NOT EXISTS",
            (account.jid, encode_secrets(account.secrets), account.created),
            idempotent=False,
        )
        if not result.was_applied:
            return False
        domain = domain_of(account.jid)
        await self.cql.execute(
            "INSERT INTO accounts_by_domain (domain, shard, jid) VALUES (?, ?, ?)",
            (domain, shard_of(account.jid), account.jid),
        )
        return True

    async def get(self, jid: str) -> Account | None:
        row = (await self.cql.execute("SELECT secrets, created FROM accounts WHERE jid = ?", (jid,))).one()
        if row is None:
            return None
        return Account(jid=jid, secrets=decode_secrets(row[0]), created=row[1])

    async def set_secrets(self, jid: str, secrets: dict[str, ScramCredentials]) -> bool:
        result = await self.cql.execute(
            "UPDATE accounts SET secrets = ? WHERE jid = ? IF EXISTS", (encode_secrets(secrets), jid), idempotent=False
        )
        return result.was_applied

    async def delete(self, jid: str) -> bool:
        result = await self.cql.execute("DELETE FROM accounts WHERE jid = ? IF EXISTS", (jid,), idempotent=False)
        if not result.was_applied:
            return False
        await self.cql.execute(
            "DELETE FROM accounts_by_domain WHERE domain = ? AND shard = ? AND jid = ?",
            (domain_of(jid), shard_of(jid), jid),
        )
        return True

    async def list(self, domain: str) -> list[str]:
        return [
            jid
            async for jid in _sharded_listing(
                self.cql, "SELECT jid FROM accounts_by_domain WHERE domain = ? AND shard = ?", (domain,)
            )
        ]


# ---------------------------------------------------------------- rosters

_ROSTER_COLUMNS = "contact, name, subscription, ask, pending_in, approved, groups"


def _roster_item(row) -> RosterItem:
    contact, name, subscription, ask, pending_in, approved, groups = row
    return RosterItem(
        jid=contact,
        name=name,
        subscription=subscription or "none",
        ask=bool(ask),
        pending_in=bool(pending_in),
        approved=bool(approved),
        groups=tuple(groups or ()),
    )


class CassandraRosterStore(_Store):
    """One partition per owner; the version is a static column moved by compare-and-set
    in the same conditional batch as the item change."""

    async def get(self, owner: str) -> tuple[int, dict[str, RosterItem]]:
        rows = await self.cql.rows(f"SELECT version, {_ROSTER_COLUMNS} FROM roster_items WHERE owner = ?", (owner,))
        version = 0
        items = {}
        for row in rows:
            version = row[0] or 0
            if row[1] is not None:  # a partition with only the static version
                items[row[1]] = _roster_item(row[1:])
        return version, items

    async def get_item(self, owner: str, contact: str) -> RosterItem | None:
        row = (
            await self.cql.execute(
                f"SELECT {_ROSTER_COLUMNS} FROM roster_items WHERE owner = ? AND contact = ?", (owner, contact)
            )
        ).one()
        return _roster_item(row) if row else None

    async def put_item(self, owner: str, item: RosterItem) -> int:
        change = (
            "INSERT INTO roster_items (owner, contact, name, subscription, ask,"
            " pending_in, approved, groups) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                owner,
                item.jid,
                item.name,
                item.subscription,
                item.ask,
                item.pending_in,
                item.approved,
                list(item.groups),
            ),
        )
        return await self._change(owner, change)

    async def remove_item(self, owner: str, contact: str) -> int:
        version = await self._version(owner)
        if await self.get_item(owner, contact) is None:
            return version
        change = ("DELETE FROM roster_items WHERE owner = ? AND contact = ?", (owner, contact))
        return await self._change(owner, change, version)

    async def delete(self, owner: str) -> None:
        version = await self._version(owner)
        while version:
            result = await self.cql.batch(
                [
                    ("DELETE FROM roster_items WHERE owner = ?", (owner,)),
                    ("UPDATE roster_items SET version = null WHERE owner = ? IF version = ?", (owner, version)),
                ],
                idempotent=False,
            )
            if result.was_applied:
                return
            version = _current_version(result)

    async def replace(self, owner: str, version: int, items: list[RosterItem]) -> None:
        if not version and not items:
            await self.delete(owner)
            return
        wanted = {item.jid for item in items}
        stale = [
            contact
            for (contact,) in await self.cql.rows("SELECT contact FROM roster_items WHERE owner = ?", (owner,))
            if contact is not None and contact not in wanted
        ]
        # Upserts in batches small enough for Cassandra's batch size limit, each one
        # partition (atomic there); the version moves last, with the same transaction as
        # every other change, so a concurrent change cannot be overwritten unseen.
        changes = [("DELETE FROM roster_items WHERE owner = ? AND contact = ?", (owner, contact)) for contact in stale]
        changes += [
            (
                "INSERT INTO roster_items (owner, contact, name, subscription, ask,"
                " pending_in, approved, groups) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    owner,
                    item.jid,
                    item.name,
                    item.subscription,
                    item.ask,
                    item.pending_in,
                    item.approved,
                    list(item.groups),
                ),
            )
            for item in items
        ]
        for start in range(0, len(changes), ROSTER_BATCH):
            await self.cql.batch(changes[start : start + ROSTER_BATCH])
        current = await self._version(owner)
        while current != version:
            if current:
                condition = (
                    "UPDATE roster_items SET version = ? WHERE owner = ? IF version = ?",
                    (version or None, owner, current),
                )
            else:
                condition = ("UPDATE roster_items SET version = ? WHERE owner = ? IF version = null", (version, owner))
            result = await self.cql.execute(*condition, idempotent=False)
            if result.was_applied:
                return
            current = _current_version(result)

    async def _version(self, owner: str) -> int:
        row = (await self.cql.execute("SELECT version FROM roster_items WHERE owner = ? LIMIT 1", (owner,))).one()
        return (row[0] or 0) if row else 0

    async def _change(self, owner: str, change: tuple, version: int | None = None) -> int:
        """Apply `change` and move the version from v to v + 1 atomically; on a lost race,
        retry from the version the transaction reported."""
        if version is None:
            version = await self._version(owner)
        while True:
            if version:
                bump = (
                    "UPDATE roster_items SET version = ? WHERE owner = ? IF version = ?",
                    (version + 1, owner, version),
                )
            else:
                bump = ("UPDATE roster_items SET version = ? WHERE owner = ? IF version = null", (1, owner))
            result = await self.cql.batch([change, bump], idempotent=False)
            if result.was_applied:
                return version + 1
            version = _current_version(result)


def _current_version(result) -> int:
    """The version a failed conditional batch saw (0: none)."""
    row = result.one()
    names = list(result.column_names or ())
    if row is None or "version" not in names:
        return 0
    return row[names.index("version")] or 0


# ---------------------------------------------------------------- key-value


class CassandraKeyValueStore(_Store):
    def __init__(self, backend: CassandraBackend, name: str):
        super().__init__(backend)
        self.name = name

    async def get(self, owner: str, key: str) -> bytes | None:
        row = (
            await self.cql.execute(
                "SELECT value FROM keyvalue WHERE name = ? AND owner = ? AND key = ?", (self.name, owner, key)
            )
        ).one()
        return bytes(row[0]) if row else None

    async def set(self, owner: str, key: str, value: bytes) -> None:
        await self.cql.execute(
            "INSERT INTO keyvalue (name, owner, key, value) VALUES (?, ?, ?, ?)", (self.name, owner, key, bytes(value))
        )
        # After the row, so that a concurrent delete's emptiness check cannot miss it.
        await self.cql.execute(
            "INSERT INTO keyvalue_owners (name, shard, owner) VALUES (?, ?, ?)", (self.name, shard_of(owner), owner)
        )

    async def delete(self, owner: str, key: str | None = None) -> None:
        checked_at = now_micros()
        if key is None:
            await self.cql.execute("DELETE FROM keyvalue WHERE name = ? AND owner = ?", (self.name, owner))
        else:
            await self.cql.execute(
                "DELETE FROM keyvalue WHERE name = ? AND owner = ? AND key = ?", (self.name, owner, key)
            )
            checked_at = now_micros()
            if (
                await self.cql.execute(
                    "SELECT key FROM keyvalue WHERE name = ? AND owner = ? LIMIT 1", (self.name, owner)
                )
            ).one() is not None:
                return
        await self.cql.execute(
            "DELETE FROM keyvalue_owners USING TIMESTAMP ? WHERE name = ? AND shard = ? AND owner = ?",
            (checked_at, self.name, shard_of(owner), owner),
        )

    async def keys(self, owner: str) -> list[str]:
        rows = await self.cql.rows("SELECT key FROM keyvalue WHERE name = ? AND owner = ?", (self.name, owner))
        return [key for (key,) in rows]

    async def owners(self) -> AsyncIterator[str]:
        async for owner in _sharded_listing(
            self.cql, "SELECT owner FROM keyvalue_owners WHERE name = ? AND shard = ?", (self.name,)
        ):
            yield owner


# ---------------------------------------------------------------- rooms


class CassandraRoomStore(_Store):
    async def get(self, room: str) -> dict | None:
        row = (await self.cql.execute("SELECT state FROM rooms WHERE room = ?", (room,))).one()
        return json.loads(row[0]) if row else None

    async def save(self, room: str, state: dict) -> None:
        await self.cql.gather(
            self.cql.execute("INSERT INTO rooms (room, state) VALUES (?, ?)", (room, _json(state))),
            self.cql.execute(
                "INSERT INTO rooms_by_service (service, shard, room) VALUES (?, ?, ?)",
                (domain_of(room), shard_of(room), room),
            ),
        )

    async def delete(self, room: str) -> None:
        await self.cql.gather(
            self.cql.execute("DELETE FROM rooms WHERE room = ?", (room,)),
            self.cql.execute(
                "DELETE FROM rooms_by_service WHERE service = ? AND shard = ? AND room = ?",
                (domain_of(room), shard_of(room), room),
            ),
        )

    async def services(self) -> AsyncIterator[str]:
        for service in await distinct_keys(self.cql, "rooms_by_service", "service"):
            yield service

    async def list(self, service: str) -> list[str]:
        return [
            room
            async for room in _sharded_listing(
                self.cql, "SELECT room FROM rooms_by_service WHERE service = ? AND shard = ?", (service,)
            )
        ]


# ---------------------------------------------------------------- pubsub


def _seq_key(seq: uuid.UUID):
    return seq.time, seq.bytes


class CassandraPubSubStore(_Store):
    """Items by id in pubsub_items; their order in pubsub_item_order (see the schema)."""

    async def get_node(self, service: str, node: str) -> dict | None:
        row = (
            await self.cql.execute("SELECT config FROM pubsub_nodes WHERE service = ? AND node = ?", (service, node))
        ).one()
        return json.loads(row[0]) if row else None

    async def set_node(self, service: str, node: str, config: dict) -> None:
        await self.cql.gather(
            self.cql.execute(
                "INSERT INTO pubsub_nodes (service, node, config) VALUES (?, ?, ?)", (service, node, _json(config))
            ),
            self._remember_service(service),
        )

    async def delete_node(self, service: str, node: str) -> None:
        await self.cql.gather(
            self.cql.execute("DELETE FROM pubsub_nodes WHERE service = ? AND node = ?", (service, node)),
            self.cql.execute("DELETE FROM pubsub_items WHERE service = ? AND node = ?", (service, node)),
            self.cql.execute("DELETE FROM pubsub_item_order WHERE service = ? AND node = ?", (service, node)),
        )
        checked_at = now_micros()
        if not await self.list_nodes(service):
            await self.cql.execute(
                "DELETE FROM pubsub_services USING TIMESTAMP ? WHERE shard = ? AND service = ?",
                (checked_at, shard_of(service), service),
            )

    async def list_nodes(self, service: str) -> list[str]:
        rows = await self.cql.rows("SELECT node FROM pubsub_nodes WHERE service = ?", (service,))
        return [node for (node,) in rows]

    async def publish(self, service: str, node: str, item: PubSubItem, max_items: int | None) -> None:
        old = await self._seq(service, node, item.id)
        seq = uuid.uuid1()
        await self.cql.gather(
            self.cql.execute(
                "INSERT INTO pubsub_items (service, node, id, seq, payload, publisher, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (service, node, item.id, seq, bytes(item.payload), item.publisher, item.when),
            ),
            self.cql.execute(
                "INSERT INTO pubsub_item_order (service, node, seq, id) VALUES (?, ?, ?, ?)",
                (service, node, seq, item.id),
            ),
            self._remember_service(service),
        )
        if old is not None:
            await self._forget_order(service, node, old, item.id)
        if max_items is not None:
            await self._trim(service, node, max_items)

    async def get_items(
        self, service: str, node: str, ids: list[str] | None = None, max_items: int | None = None
    ) -> list[PubSubItem]:
        if max_items is not None and max_items <= 0:
            return []
        if ids is not None:
            found = await self._items(service, node, list(dict.fromkeys(ids)))
            ordered = sorted(found.values(), key=lambda entry: _seq_key(entry[0]), reverse=True)
            return [entry[1] for entry in ordered][:max_items]
        items: list[PubSubItem] = []
        page = PAGE_OF_ORDER if max_items is None else min(PAGE_OF_ORDER, max_items + 4)
        batch: list[tuple[uuid.UUID, str]] = []
        async for seq, item_id in self.cql.iterate(
            "SELECT seq, id FROM pubsub_item_order WHERE service = ? AND node = ?", (service, node), page_size=page
        ):
            batch.append((seq, item_id))
            if len(batch) >= page:
                items += await self._resolve(service, node, batch)
                batch = []
                if max_items is not None and len(items) >= max_items:
                    return items[:max_items]
        items += await self._resolve(service, node, batch)
        return items[:max_items]

    async def retract(self, service: str, node: str, item_id: str) -> bool:
        seq = await self._seq(service, node, item_id)
        if seq is None:
            return False
        await self.cql.execute(
            "DELETE FROM pubsub_items WHERE service = ? AND node = ? AND id = ?", (service, node, item_id)
        )
        await self._forget_order(service, node, seq, item_id)
        return True

    async def services(self) -> AsyncIterator[str]:
        async for service in merge_sorted([self._services(shard) for shard in range(SHARDS)]):
            yield service

    async def _services(self, shard: int) -> AsyncIterator[str]:
        async for (service,) in self.cql.iterate("SELECT service FROM pubsub_services WHERE shard = ?", (shard,)):
            yield service

    async def _remember_service(self, service: str) -> None:
        await self.cql.execute(
            "INSERT INTO pubsub_services (shard, service) VALUES (?, ?)", (shard_of(service), service)
        )

    async def _seq(self, service: str, node: str, item_id: str) -> uuid.UUID | None:
        row = (
            await self.cql.execute(
                "SELECT seq FROM pubsub_items WHERE service = ? AND node = ? AND id = ?", (service, node, item_id)
            )
        ).one()
        return row[0] if row else None

    async def _items(self, service: str, node: str, ids: list[str]) -> dict[str, tuple[uuid.UUID, PubSubItem]]:
        if not ids:
            return {}
        rows = await self.cql.rows(
            "SELECT id, seq, payload, publisher, at FROM pubsub_items WHERE service = ? AND node = ? AND id IN ?",
            (service, node, ids),
        )
        return {
            row[0]: (row[1], PubSubItem(id=row[0], payload=bytes(row[2]), publisher=row[3], when=row[4]))
            for row in rows
        }

    async def _resolve(self, service: str, node: str, order: list[tuple[uuid.UUID, str]]) -> list[PubSubItem]:
        """The items of order rows that are current (their item has that seq)."""
        found = await self._items(service, node, list(dict.fromkeys(i for _, i in order)))
        return [found[item_id][1] for seq, item_id in order if item_id in found and found[item_id][0] == seq]

    async def _forget_order(self, service: str, node: str, seq: uuid.UUID, item_id: str):
        await self.cql.execute(
            "DELETE FROM pubsub_item_order WHERE service = ? AND node = ? AND seq = ? AND id = ?",
            (service, node, seq, item_id),
        )

    async def _trim(self, service: str, node: str, max_items: int) -> None:
        """Keep the newest max_items: walk the order, drop what lies beyond."""
        current = {
            item_id: seq
            for item_id, seq in await self.cql.rows(
                "SELECT id, seq FROM pubsub_items WHERE service = ? AND node = ?", (service, node)
            )
        }
        if len(current) <= max_items:
            return
        kept, doomed = 0, []
        async for seq, item_id in self.cql.iterate(
            "SELECT seq, id FROM pubsub_item_order WHERE service = ? AND node = ?", (service, node)
        ):
            if current.get(item_id) != seq:
                continue  # stale; removed with its item below
            kept += 1
            if kept > max_items:
                doomed.append((seq, item_id))
        await bounded_gather(
            [(lambda seq=seq, item_id=item_id: self._drop(service, node, seq, item_id)) for seq, item_id in doomed]
        )

    async def _drop(self, service: str, node: str, seq: uuid.UUID, item_id: str) -> None:
        await self.cql.execute(
            "DELETE FROM pubsub_items WHERE service = ? AND node = ? AND id = ?", (service, node, item_id)
        )
        await self._forget_order(service, node, seq, item_id)


# ---------------------------------------------------------------- uploads

# The days of upload_expiry_days all live in one partition: a few hundred rows at most.
_EXPIRY_SHARD = 0


def _day(when: float) -> int:
    return math.floor(when / DAY)


class CassandraUploadStore(_Store):
    async def add(self, upload: Upload) -> None:
        day = _day(upload.expires)
        await self.cql.execute(
            f"INSERT INTO uploads ({UPLOAD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                upload.id,
                upload.owner,
                upload.filename,
                upload.size,
                upload.content_type,
                upload.created,
                upload.expires,
                upload.completed,
            ),
        )
        await self.cql.gather(
            self.cql.execute(
                "INSERT INTO uploads_by_owner (owner, created, id) VALUES (?, ?, ?)",
                (upload.owner, upload.created, upload.id),
            ),
            self.cql.execute(
                "INSERT INTO uploads_by_expiry (day, expires, id) VALUES (?, ?, ?)", (day, upload.expires, upload.id)
            ),
            self.cql.execute("INSERT INTO upload_expiry_days (shard, day) VALUES (?, ?)", (_EXPIRY_SHARD, day)),
        )

    async def get(self, upload_id: str) -> Upload | None:
        row = (await self.cql.execute(f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = ?", (upload_id,))).one()
        return upload_of(row) if row else None

    async def mark_completed(self, upload_id: str) -> bool:
        result = await self.cql.execute(
            "UPDATE uploads SET completed = true WHERE id = ? IF completed = false", (upload_id,), idempotent=False
        )
        return result.was_applied

    async def list(self, owner: str) -> list[Upload]:
        rows = await self.cql.rows("SELECT id FROM uploads_by_owner WHERE owner = ?", (owner,))
        uploads = await bounded_gather([(lambda i=i: self.get(i)) for (i,) in rows])
        return [upload for upload in uploads if upload is not None]

    async def usage(
        self, owner: str, now: float, open_since: float | None = None, exclude: str = ""
    ) -> tuple[int, int]:
        # Cassandra sums in no index: the owner's rows are read (bounded by the upload
        # extension's limits on slots per account).
        counted = [
            u.size
            for u in await self.list(owner)
            if u.id != exclude
            and u.expires >= now
            and (u.completed or open_since is not None and u.created >= open_since)
        ]
        return sum(counted), len(counted)

    async def remove(self, upload_id: str) -> None:
        upload = await self.get(upload_id)
        if upload is None:
            return
        await self.cql.gather(
            self.cql.execute(
                "DELETE FROM uploads_by_owner WHERE owner = ? AND created = ? AND id = ?",
                (upload.owner, upload.created, upload.id),
            ),
            self.cql.execute(
                "DELETE FROM uploads_by_expiry WHERE day = ? AND expires = ? AND id = ?",
                (_day(upload.expires), upload.expires, upload.id),
            ),
        )
        await self.cql.execute("DELETE FROM uploads WHERE id = ?", (upload_id,))

    async def expired(self, now: float) -> list[Upload]:
        """Uploads whose expiry time has passed (expires < now), soonest first."""
        today = _day(now)
        days = await self.cql.rows(
            "SELECT day FROM upload_expiry_days WHERE shard = ? AND day <= ?", (_EXPIRY_SHARD, today)
        )
        found: list[tuple[float, str]] = []
        for (day,) in days:
            checked_at = now_micros()
            rows = await self.cql.rows(
                "SELECT expires, id FROM uploads_by_expiry WHERE day = ? AND expires < ?", (day, now)
            )
            found += rows
            if (
                not rows
                and day < today
                and (await self.cql.execute("SELECT id FROM uploads_by_expiry WHERE day = ? LIMIT 1", (day,))).one()
                is None
            ):
                await self.cql.execute(
                    "DELETE FROM upload_expiry_days USING TIMESTAMP ? WHERE shard = ? AND day = ?",
                    (checked_at, _EXPIRY_SHARD, day),
                )
        found.sort()
        uploads = await bounded_gather([(lambda i=i: self.get(i)) for _, i in found])
        return [upload for upload in uploads if upload is not None]
