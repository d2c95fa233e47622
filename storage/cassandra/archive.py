"""Named archives (MAM, offline messages, MUC history) on Cassandra.

Layout (schema/001_initial.cql): an owner's archive is cut into time buckets of
``archive_bucket_seconds``; ``archive_items`` holds one bucket per partition, in the
order of the interface, (at, id). ``archive_items_by_with`` holds the same items
partitioned by the other party as well, for the "with" filter. ``archive_buckets``
lists the buckets that hold items, ``archive_ids`` says where an id is and
``archive_owners`` which owners have items.

Queries: the filters and the RSM cursor become at most one lower and one upper bound
on (at, id); the store walks the owner's buckets from the bucket index in the paging
direction and reads each as one clustering slice with a LIMIT of what is still
missing (max + 1, the extra item tells whether the page is complete). No query
filters rows on the server, none uses an offset. ``count`` is the sum of one
``COUNT(*)`` per bucket of the filter range (bucket partitions are bounded, and the
counts run concurrently); it is skipped when the page itself shows the whole result.

Idempotent append: the primary key is deterministic (bucket of `when`, `when`, id),
so a retried write cannot add a second row; ``archive_ids`` is read first and written
last, so an id found there is stored in full and the retry returns False. Concurrent
appends of one id in this process share one write (single flight). Two *processes*
appending the same id at the same instant could both return True, but would still
store one row; a lightweight transaction per message (four Paxos round trips on the
hottest path) would close that window, and the ids are made by the archiving process
itself, so it is not worth it.

Index rows (buckets, owners) are written with every append, so a lost one heals with
the next append into its bucket. Deleting single ids leaves them (an emptied bucket
costs a query one empty slice); deleting a whole archive and the retention sweep drop
the rows of the buckets they emptied, after checking the bucket is empty, with the
timestamp of the check: an append that lands after the check writes a newer row.

Retention: with ``archive_ttl = {name: seconds}`` items are written with a TTL
counted from their `when`, and the index rows with a TTL that outlives the bucket's
last item, so old data leaves by itself without tombstone sweeps. ``delete_older_than``
is the explicit, bounded sweep: for each owner it visits only the buckets that start
before the cut-off (from the bucket index), deletes whole buckets with one partition
tombstone and the boundary bucket with one range tombstone, and removes the ids rows
of what it deleted (which it must read to count them).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..interfaces import ArchivedStanza, ArchivePage, ArchiveQuery, UnknownArchiveId
from .common import SHARDS, bounded_gather, merge_sorted, now_micros, shard_of

if TYPE_CHECKING:
    from . import CassandraBackend

# The bucket index row that lists every bucket (the others name a party).
ALL_PARTIES = ""
# Cassandra's longest TTL (20 years).
MAX_TTL = 630_720_000


@dataclass(frozen=True)
class _Bound:
    """One end of a range in archive order: ``(at) >= (x)``, ``(at, id) > (x, i)``..."""

    at: float
    id: str | None  # None: a bound on `at` alone (start/end, inclusive)
    key: tuple  # total order of bounds, to pick the tighter one
    clause: str

    @property
    def params(self) -> tuple:
        return (self.at,) if self.id is None else (self.at, self.id)


def _start(at: float) -> _Bound:
    return _Bound(at, None, (at, 0, ""), "(at) >= (?)")


def _after(at: float, item_id: str) -> _Bound:
    return _Bound(at, item_id, (at, 1, item_id), "(at, id) > (?, ?)")


def _end(at: float) -> _Bound:
    return _Bound(at, None, (at, 2, ""), "(at) <= (?)")


def _before(at: float, item_id: str) -> _Bound:
    return _Bound(at, item_id, (at, 1, item_id), "(at, id) < (?, ?)")


def _lower(*bounds: _Bound | None) -> _Bound | None:
    present = [bound for bound in bounds if bound is not None]
    return max(present, key=lambda bound: bound.key) if present else None


def _upper(*bounds: _Bound | None) -> _Bound | None:
    present = [bound for bound in bounds if bound is not None]
    return min(present, key=lambda bound: bound.key) if present else None


def _is_empty_range(lower: _Bound | None, upper: _Bound | None) -> bool:
    return lower is not None and upper is not None and lower.key >= upper.key


def _within(at: float, item_id: str, lower: _Bound | None, upper: _Bound | None) -> bool:
    """Whether (at, id) lies inside the range; `at` is compared like the slices do."""
    point = (at, 1, item_id)
    return (lower is None or point > lower.key) and (upper is None or point < upper.key)


@dataclass(frozen=True)
class _Where:
    """Where an item is: what archive_ids holds."""

    id: str
    bucket: int
    at: float
    with_: str


class CassandraArchiveStore:
    capabilities = frozenset({"total", "ids", "full_id_range"})

    def __init__(self, backend: CassandraBackend, name: str):
        self._backend = backend
        self.name = name
        options = backend.options
        self.bucket_seconds = options.archive_bucket_seconds
        self.retention = options.archive_ttl.get(name)
        self.count_in_queries = options.archive_query_count
        self._in_flight: dict[tuple[str, str], asyncio.Future] = {}

    @property
    def cql(self):
        return self._backend.cql

    def bucket_of(self, at: float) -> int:
        return math.floor(at / self.bucket_seconds) * self.bucket_seconds

    # ------------------------------------------------------------ append

    async def append(self, owner: str, item: ArchivedStanza) -> bool:
        key = (owner, item.id)
        while (running := self._in_flight.get(key)) is not None:
            try:
                await asyncio.shield(running)
            except asyncio.CancelledError:
                if not running.cancelled():
                    raise  # we were cancelled, not the other append
                continue
            except Exception:
                continue  # the other append failed: try ourselves
            return False
        done = self._in_flight[key] = asyncio.get_running_loop().create_future()
        try:
            stored = await self._append(owner, item)
        except BaseException as error:
            if isinstance(error, Exception):
                done.set_exception(error)
                done.exception()  # retrieved: waiters retry on their own
            else:
                done.cancel()
            raise
        else:
            done.set_result(stored)
            return stored
        finally:
            del self._in_flight[key]

    async def append_many(self, items: list[tuple[str, ArchivedStanza]]) -> list[bool]:
        # Cassandra has no transaction to share: the appends run side by side.
        return list(await asyncio.gather(*(self.append(owner, item) for owner, item in items)))

    async def _append(self, owner: str, item: ArchivedStanza) -> bool:
        if await self._where(owner, item.id) is not None:
            return False
        bucket = self.bucket_of(item.when)
        item_ttl, index_ttl = self._ttls(item.when, bucket)
        index = "INSERT INTO archive_buckets (name, owner, with_jid, bucket) VALUES (?, ?, ?, ?) USING TTL ?"
        bucket_rows = [(index, (self.name, owner, ALL_PARTIES, bucket, index_ttl))]
        if item.with_ != ALL_PARTIES:
            bucket_rows.append((index, (self.name, owner, item.with_, bucket, index_ttl)))
        # Every row but the id, together; the id last: an id that is there means
        # "stored in full", so a retry after a failure here writes everything again.
        await self.cql.gather(
            self.cql.execute(
                "INSERT INTO archive_items (name, owner, bucket, at, id, with_jid, payload)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) USING TTL ?",
                (self.name, owner, bucket, item.when, item.id, item.with_, bytes(item.payload), item_ttl),
            ),
            self.cql.execute(
                "INSERT INTO archive_items_by_with (name, owner, with_jid, bucket, at, id,"
                " payload) VALUES (?, ?, ?, ?, ?, ?, ?) USING TTL ?",
                (self.name, owner, item.with_, bucket, item.when, item.id, bytes(item.payload), item_ttl),
            ),
            self.cql.batch(bucket_rows),  # one partition: one mutation
            self.cql.execute(
                "INSERT INTO archive_owners (name, shard, owner) VALUES (?, ?, ?) USING TTL ?",
                (self.name, shard_of(owner), owner, self._owner_ttl()),
            ),
        )
        await self.cql.execute(
            "INSERT INTO archive_ids (name, owner, id, bucket, at, with_jid) VALUES (?, ?, ?, ?, ?, ?) USING TTL ?",
            (self.name, owner, item.id, bucket, item.when, item.with_, item_ttl),
        )
        return True

    def _ttls(self, when: float, bucket: int) -> tuple[int, int]:
        """TTLs (0: none) of an item and of the index rows of its bucket: the index rows
        live until the last possible item of the bucket has expired."""
        if not self.retention:
            return 0, 0
        now = time.time()
        item = math.ceil(when + self.retention - now)
        index = math.ceil(bucket + self.bucket_seconds + self.retention - now)
        return min(max(item, 1), MAX_TTL), min(max(index, 1), MAX_TTL)

    def _owner_ttl(self) -> int:
        if not self.retention:
            return 0
        return min(self.retention + 2 * self.bucket_seconds, MAX_TTL)

    # ------------------------------------------------------------ lookups

    async def _where(self, owner: str, item_id: str) -> _Where | None:
        row = (
            await self.cql.execute(
                "SELECT bucket, at, with_jid FROM archive_ids WHERE name = ? AND owner = ? AND id = ?",
                (self.name, owner, item_id),
            )
        ).one()
        return _Where(item_id, row[0], row[1], row[2]) if row else None

    async def _position(self, owner: str, item_id: str | None) -> _Where | None:
        if item_id is None:
            return None
        where = await self._where(owner, item_id)
        if where is None:
            raise UnknownArchiveId(item_id)
        return where

    async def _buckets(
        self, owner: str, party: str, low: int | None, high: int | None, backward: bool = False
    ) -> AsyncIterator[int]:
        cql = "SELECT bucket FROM archive_buckets WHERE name = ? AND owner = ? AND with_jid = ?"
        params: list = [self.name, owner, party]
        if low is not None:
            cql += " AND bucket >= ?"
            params.append(low)
        if high is not None:
            cql += " AND bucket <= ?"
            params.append(high)
        if backward:
            cql += " ORDER BY with_jid DESC, bucket DESC"
        async for (bucket,) in self.cql.iterate(cql, params):
            yield bucket

    # ------------------------------------------------------------ queries

    async def query(self, owner: str, query: ArchiveQuery) -> ArchivePage:
        if query.max is not None and query.max < 0:
            raise ValueError("ArchiveQuery.max must not be negative")
        after_id, before_id, after, before = await asyncio.gather(
            self._position(owner, query.after_id),
            self._position(owner, query.before_id),
            self._position(owner, query.after),
            self._position(owner, query.before or None),
        )
        # The filters (what `count` counts) and the page range inside them.
        lower = _lower(
            _start(query.start) if query.start is not None else None,
            _after(after_id.at, after_id.id) if after_id else None,
        )
        upper = _upper(
            _end(query.end) if query.end is not None else None,
            _before(before_id.at, before_id.id) if before_id else None,
        )
        page_lower = _lower(lower, _after(after.at, after.id) if after else None)
        page_upper = _upper(upper, _before(before.at, before.id) if before else None)
        backward = query.before is not None

        if query.ids is not None:
            return await self._query_ids(owner, query, lower, upper, page_lower, page_upper, backward)

        limit = None if query.max is None else query.max + 1
        if _is_empty_range(page_lower, page_upper):
            rows = []
        else:
            rows = await self._read(owner, query.with_, page_lower, page_upper, backward, limit)
        complete = limit is None or len(rows) < limit
        rows = rows[: query.max] if query.max is not None else rows
        if backward:
            rows.reverse()
        if complete and query.after is None and not query.before:
            count = len(rows)  # the page is the whole result
        elif not (self.count_in_queries and query.count):
            count = None
        elif _is_empty_range(lower, upper):
            count = 0
        else:
            count = await self._count(owner, query.with_, lower, upper)
        return ArchivePage(items=rows, complete=complete, count=count)

    async def _read(
        self,
        owner: str,
        with_: str | None,
        lower: _Bound | None,
        upper: _Bound | None,
        backward: bool,
        limit: int | None,
    ) -> list[ArchivedStanza]:
        """Items in the range, in paging order, at most `limit`."""
        items: list[ArchivedStanza] = []
        if limit == 0:
            return items
        party = ALL_PARTIES if with_ is None else with_
        low = self.bucket_of(lower.at) if lower else None
        high = self.bucket_of(upper.at) if upper else None
        async for bucket in self._buckets(owner, party, low, high, backward):
            want = None if limit is None else limit - len(items)
            items += await self._slice(owner, with_, bucket, lower, upper, backward, want)
            if limit is not None and len(items) >= limit:
                break
        return items

    async def _slice(
        self,
        owner: str,
        with_: str | None,
        bucket: int,
        lower: _Bound | None,
        upper: _Bound | None,
        backward: bool,
        limit: int | None,
    ) -> list[ArchivedStanza]:
        if with_ is None:
            cql = "SELECT id, at, with_jid, payload FROM archive_items WHERE name = ? AND owner = ? AND bucket = ?"
            params: list = [self.name, owner, bucket]
        else:
            cql = (
                "SELECT id, at, payload FROM archive_items_by_with"
                " WHERE name = ? AND owner = ? AND with_jid = ? AND bucket = ?"
            )
            params = [self.name, owner, with_, bucket]
        for bound in (lower, upper):
            if bound is not None:
                cql += " AND " + bound.clause
                params += bound.params
        if backward:
            cql += " ORDER BY at DESC, id DESC"
        if limit is not None:
            cql += " LIMIT ?"
            params.append(limit)
            rows = (await self.cql.execute(cql, params, fetch_size=max(limit, 1))).current_rows
        else:
            rows = await self.cql.rows(cql, params)
        if with_ is None:
            return [ArchivedStanza(id=row[0], when=row[1], with_=row[2], payload=bytes(row[3])) for row in rows]
        return [ArchivedStanza(id=row[0], when=row[1], with_=with_, payload=bytes(row[2])) for row in rows]

    async def _count(
        self, owner: str, with_: str | None, lower: _Bound | None = None, upper: _Bound | None = None
    ) -> int:
        party = ALL_PARTIES if with_ is None else with_
        low = self.bucket_of(lower.at) if lower else None
        high = self.bucket_of(upper.at) if upper else None
        buckets = [bucket async for bucket in self._buckets(owner, party, low, high)]
        if with_ is None:
            cql = "SELECT COUNT(*) FROM archive_items WHERE name = ? AND owner = ? AND bucket = ?"
            key: tuple = (self.name, owner)
        else:
            cql = (
                "SELECT COUNT(*) FROM archive_items_by_with"
                " WHERE name = ? AND owner = ? AND with_jid = ? AND bucket = ?"
            )
            key = (self.name, owner, with_)
        extra: tuple = ()
        for bound in (lower, upper):
            if bound is not None:
                cql += " AND " + bound.clause
                extra += bound.params

        async def count(bucket: int) -> int:
            return (await self.cql.execute(cql, (*key, bucket, *extra))).one()[0]

        return sum(await bounded_gather([(lambda b=bucket: count(b)) for bucket in buckets]))

    async def _query_ids(
        self, owner: str, query: ArchiveQuery, lower, upper, page_lower, page_upper, backward: bool
    ) -> ArchivePage:
        """The ids filter: look every id up, filter and page the (bounded) list here."""
        found = await asyncio.gather(*(self._where(owner, item_id) for item_id in dict.fromkeys(query.ids)))
        selected = sorted(
            (
                where
                for where in found
                if where is not None
                and (query.with_ is None or where.with_ == query.with_)
                and _within(where.at, where.id, lower, upper)
            ),
            key=lambda where: (where.at, where.id),
        )
        count = len(selected)
        in_page = [where for where in selected if _within(where.at, where.id, page_lower, page_upper)]
        limit = len(in_page) if query.max is None else query.max
        complete = len(in_page) <= limit
        if backward:
            in_page = in_page[max(0, len(in_page) - limit) :] if limit else []
        else:
            in_page = in_page[:limit]
        items = await asyncio.gather(*(self._fetch(owner, where) for where in in_page))
        return ArchivePage(items=[item for item in items if item is not None], complete=complete, count=count)

    async def _fetch(self, owner: str, where: _Where) -> ArchivedStanza | None:
        row = (
            await self.cql.execute(
                "SELECT payload FROM archive_items WHERE name = ? AND owner = ? AND bucket = ? AND at = ? AND id = ?",
                (self.name, owner, where.bucket, where.at, where.id),
            )
        ).one()
        if row is None:
            return None
        return ArchivedStanza(id=where.id, when=where.at, with_=where.with_, payload=bytes(row[0]))

    async def count(self, owner: str) -> int:
        return await self._count(owner, None)

    # ------------------------------------------------------------ deletes

    async def delete(self, owner: str, ids: list[str] | None = None) -> int:
        if ids is None:
            return await self._delete_before(owner, None)
        found = [
            where
            for where in await asyncio.gather(*(self._where(owner, item_id) for item_id in dict.fromkeys(ids)))
            if where is not None
        ]
        if not found:
            return 0
        await bounded_gather([(lambda where=where: self._delete_item(owner, where)) for where in found])
        # The bucket index rows stay, even if a bucket is now empty: an emptied bucket
        # costs a query one empty slice, while dropping its row could race with an
        # append into the same bucket. Whole-archive deletes and retention sweeps
        # (old buckets) drop them.
        return len(found)

    async def _delete_item(self, owner: str, where: _Where) -> None:
        await self.cql.gather(
            self.cql.execute(
                "DELETE FROM archive_items WHERE name = ? AND owner = ? AND bucket = ? AND at = ? AND id = ?",
                (self.name, owner, where.bucket, where.at, where.id),
            ),
            self.cql.execute(
                "DELETE FROM archive_items_by_with WHERE name = ? AND owner = ? AND with_jid = ?"
                " AND bucket = ? AND at = ? AND id = ?",
                (self.name, owner, where.with_, where.bucket, where.at, where.id),
            ),
        )
        await self.cql.execute(
            "DELETE FROM archive_ids WHERE name = ? AND owner = ? AND id = ?", (self.name, owner, where.id)
        )

    async def delete_older_than(self, when: float) -> int:
        removed = 0
        async for owner in self.owners():
            removed += await self._delete_before(owner, when)
        return removed

    async def _delete_before(self, owner: str, when: float | None) -> int:
        """Delete the owner's items with `at` < when (all of them for None), bucket by
        bucket: whole buckets with a partition tombstone, the boundary bucket with a
        range tombstone; the ids rows one by one."""
        high = None if when is None else self.bucket_of(when)
        buckets = [bucket async for bucket in self._buckets(owner, ALL_PARTIES, None, high)]
        removed = 0
        for bucket in buckets:
            whole = when is None or bucket + self.bucket_seconds <= when
            cql = "SELECT id, with_jid FROM archive_items WHERE name = ? AND owner = ? AND bucket = ?"
            params: tuple = (self.name, owner, bucket)
            if not whole:
                cql += " AND at < ?"
                params += (when,)
            rows = await self.cql.rows(cql, params)
            if not rows:
                if whole:
                    await self._forget_bucket_if_empty(owner, ALL_PARTIES, bucket)
                continue
            parties = {party for _, party in rows}
            if whole:
                await self.cql.gather(
                    self.cql.execute(
                        "DELETE FROM archive_items WHERE name = ? AND owner = ? AND bucket = ?",
                        (self.name, owner, bucket),
                    ),
                    *(
                        self.cql.execute(
                            "DELETE FROM archive_items_by_with WHERE name = ? AND owner = ?"
                            " AND with_jid = ? AND bucket = ?",
                            (self.name, owner, party, bucket),
                        )
                        for party in parties
                    ),
                )
            else:
                await self.cql.gather(
                    self.cql.execute(
                        "DELETE FROM archive_items WHERE name = ? AND owner = ? AND bucket = ? AND at < ?",
                        (self.name, owner, bucket, when),
                    ),
                    *(
                        self.cql.execute(
                            "DELETE FROM archive_items_by_with WHERE name = ? AND owner = ?"
                            " AND with_jid = ? AND bucket = ? AND at < ?",
                            (self.name, owner, party, bucket, when),
                        )
                        for party in parties
                    ),
                )
            await bounded_gather(
                [
                    (
                        lambda item_id=item_id: self.cql.execute(
                            "DELETE FROM archive_ids WHERE name = ? AND owner = ? AND id = ?",
                            (self.name, owner, item_id),
                        )
                    )
                    for item_id, _ in rows
                ]
            )
            await bounded_gather(
                [
                    (lambda party=party, bucket=bucket: self._forget_bucket_if_empty(owner, party, bucket))
                    for party in parties | {ALL_PARTIES}
                ]
            )
            removed += len(rows)
        await self._forget_owner_if_empty(owner)
        return removed

    async def _forget_bucket_if_empty(self, owner: str, party: str, bucket: int) -> None:
        """Drop a bucket index row whose partition has no items left (the delete carries
        the time of the check: an append after it writes a newer index row)."""
        checked_at = now_micros()
        if party == ALL_PARTIES:
            cql = "SELECT id FROM archive_items WHERE name = ? AND owner = ? AND bucket = ? LIMIT 1"
            params: tuple = (self.name, owner, bucket)
        else:
            cql = (
                "SELECT id FROM archive_items_by_with WHERE name = ? AND owner = ?"
                " AND with_jid = ? AND bucket = ? LIMIT 1"
            )
            params = (self.name, owner, party, bucket)
        if (await self.cql.execute(cql, params)).one() is not None:
            return
        await self.cql.execute(
            "DELETE FROM archive_buckets USING TIMESTAMP ? WHERE name = ? AND owner = ?"
            " AND with_jid = ? AND bucket = ?",
            (checked_at, self.name, owner, party, bucket),
        )

    async def _forget_owner_if_empty(self, owner: str) -> None:
        checked_at = now_micros()
        if (
            await self.cql.execute(
                "SELECT bucket FROM archive_buckets WHERE name = ? AND owner = ? LIMIT 1", (self.name, owner)
            )
        ).one() is not None:
            return
        await self.cql.execute(
            "DELETE FROM archive_owners USING TIMESTAMP ? WHERE name = ? AND shard = ? AND owner = ?",
            (checked_at, self.name, shard_of(owner), owner),
        )

    # ------------------------------------------------------------ owners

    async def owners(self) -> AsyncIterator[str]:
        async def shard(number: int) -> AsyncIterator[str]:
            async for (owner,) in self.cql.iterate(
                "SELECT owner FROM archive_owners WHERE name = ? AND shard = ?", (self.name, number)
            ):
                yield owner

        async for owner in merge_sorted([shard(number) for number in range(SHARDS)]):
            yield owner
