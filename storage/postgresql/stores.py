"""The stores of storage/interfaces.py on PostgreSQL (tables in schema/001_initial.sql).

Each call is one statement, or one transaction on a connection of the backend's pool;
reads of several statements run in a read-only REPEATABLE READ transaction (one
snapshot), as SQLite's reads do.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import AsyncIterator

from xmppd.protocol.sasl import ScramCredentials

from .. import UPLOAD_COLUMNS, domain_of, upload_of
from ..archive_ranges import KeyRange, query_ranges
from ..interfaces import (
    Account,
    ArchivedStanza,
    ArchivePage,
    ArchiveQuery,
    PubSubItem,
    RosterItem,
    UnknownArchiveId,
    Upload,
)
from ..scram_secrets import decode_secrets, encode_secrets

DISTINCT_CHUNK = 500  # values per query when a store lists its owners
# Rows per statement when a delete may touch a whole archive: a retention run over a big
# archive is many short statements, none near command_timeout, none holding many locks.
DELETE_CHUNK = 5000


def _affected(status: str) -> int:
    """The row count of a command status: "INSERT 0 1", "UPDATE 2", "DELETE 0"."""
    return int(status.rpartition(" ")[2])


def _json(value) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


@contextlib.asynccontextmanager
async def _transaction(pool, **options):
    """A connection of the pool inside a transaction: committed when the block ends."""
    async with pool.acquire() as conn, conn.transaction(**options):
        yield conn


def _snapshot(pool):
    """A read-only transaction whose statements all see one snapshot."""
    return _transaction(pool, isolation="repeatable_read", readonly=True)


class _Params(list):
    """Query parameters: ``params(value)`` adds one and returns its placeholder."""

    def __call__(self, value) -> str:
        self.append(value)
        return f"${len(self)}"


async def distinct(pool, table: str, column: str, store: str | None = None) -> AsyncIterator[str]:
    """The distinct values of an indexed leading column (within one named store when
    `store` is given), sorted, DISTINCT_CHUNK per query. Each value is one index seek
    past the previous one (a loose index scan in a recursive query), so an owner with a
    million rows costs no more than one with a single row."""
    scope = "store = $3 AND " if store is not None else ""
    following = f"SELECT {column} FROM {table} WHERE {scope}{column} > {{}} ORDER BY {column} LIMIT 1"
    sql = (
        f"WITH RECURSIVE found(value) AS (({following.format('$1')})"
        f" UNION ALL SELECT ({following.format('found.value')}) FROM found"
        f" WHERE found.value IS NOT NULL)"
        f" SELECT value FROM found WHERE value IS NOT NULL LIMIT $2"
    )
    after = ""
    while True:
        rows = await pool.fetch(sql, after, DISTINCT_CHUNK, *([] if store is None else [store]))
        for (value,) in rows:
            yield value
        if len(rows) < DISTINCT_CHUNK:
            return
        after = rows[-1][0]


# ---------------------------------------------------------------- accounts


class PostgresqlAccountStore:
    def __init__(self, backend):
        self._backend = backend

    async def create(self, account: Account) -> bool:
        status = await self._backend.pool.execute(
            "INSERT INTO accounts (jid, domain, secrets, created) VALUES ($1, $2, $3, $4) ON CONFLICT (jid) DO NOTHING",
            account.jid,
            domain_of(account.jid),
            encode_secrets(account.secrets),
            float(account.created),
        )
        return _affected(status) == 1

    async def get(self, jid: str) -> Account | None:
        row = await self._backend.pool.fetchrow("SELECT secrets, created FROM accounts WHERE jid = $1", jid)
        if row is None:
            return None
        return Account(jid=jid, secrets=decode_secrets(row["secrets"]), created=row["created"])

    async def set_secrets(self, jid: str, secrets: dict[str, ScramCredentials]) -> bool:
        status = await self._backend.pool.execute(
            "UPDATE accounts SET secrets = $2 WHERE jid = $1", jid, encode_secrets(secrets)
        )
        return _affected(status) == 1

    async def delete(self, jid: str) -> bool:
        return _affected(await self._backend.pool.execute("DELETE FROM accounts WHERE jid = $1", jid)) == 1

    async def list(self, domain: str) -> list[str]:
        rows = await self._backend.pool.fetch("SELECT jid FROM accounts WHERE domain = $1 ORDER BY jid", domain)
        return [jid for (jid,) in rows]


# ---------------------------------------------------------------- rosters

# Every write of a roster changes its items first and moves the version last, in one
# transaction: the version row's lock then orders the writers of one roster on every
# node (none waits for an item while holding it, so they cannot deadlock).
_BUMP_VERSION = (
    "INSERT INTO roster_versions (owner, version) VALUES ($1, 1) ON CONFLICT (owner)"
    " DO UPDATE SET version = roster_versions.version + 1 RETURNING version"
)
_VERSION = "SELECT COALESCE((SELECT version FROM roster_versions WHERE owner = $1), 0)"
_ROSTER_COLUMNS = "contact, name, subscription, ask, pending_in, approved, groups"
_UPSERT_ITEM = (
    f"INSERT INTO roster_items (owner, {_ROSTER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    " ON CONFLICT (owner, contact) DO UPDATE SET name = EXCLUDED.name,"
    " subscription = EXCLUDED.subscription, ask = EXCLUDED.ask, pending_in = EXCLUDED.pending_in,"
    " approved = EXCLUDED.approved, groups = EXCLUDED.groups"
)


def _roster_values(owner: str, item: RosterItem) -> tuple:
    return (owner, item.jid, item.name, item.subscription, item.ask, item.pending_in, item.approved, list(item.groups))


def _roster_item(row) -> RosterItem:
    return RosterItem(
        jid=row["contact"],
        name=row["name"],
        subscription=row["subscription"],
        ask=row["ask"],
        pending_in=row["pending_in"],
        approved=row["approved"],
        groups=tuple(row["groups"]),
    )


class PostgresqlRosterStore:
    # Other xmppd processes write these rosters too: xmppd/roster_cache.py keeps no copy.
    shared_by_processes = True

    def __init__(self, backend):
        self._backend = backend

    async def get(self, owner: str) -> tuple[int, dict[str, RosterItem]]:
        async with _snapshot(self._backend.pool) as conn:
            version = await conn.fetchval(_VERSION, owner)
            rows = await conn.fetch(
                f"SELECT {_ROSTER_COLUMNS} FROM roster_items WHERE owner = $1 ORDER BY contact", owner
            )
        return version, {row["contact"]: _roster_item(row) for row in rows}

    async def get_item(self, owner: str, contact: str) -> RosterItem | None:
        row = await self._backend.pool.fetchrow(
            f"SELECT {_ROSTER_COLUMNS} FROM roster_items WHERE owner = $1 AND contact = $2", owner, contact
        )
        return _roster_item(row) if row else None

    async def put_item(self, owner: str, item: RosterItem) -> int:
        async with _transaction(self._backend.pool) as conn:
            await conn.execute(_UPSERT_ITEM, *_roster_values(owner, item))
            return await conn.fetchval(_BUMP_VERSION, owner)

    async def remove_item(self, owner: str, contact: str) -> int:
        async with _transaction(self._backend.pool) as conn:
            status = await conn.execute("DELETE FROM roster_items WHERE owner = $1 AND contact = $2", owner, contact)
            if _affected(status) == 0:  # nothing changed: same version
                return await conn.fetchval(_VERSION, owner)
            return await conn.fetchval(_BUMP_VERSION, owner)

    async def delete(self, owner: str) -> None:
        async with _transaction(self._backend.pool) as conn:
            await conn.execute("DELETE FROM roster_items WHERE owner = $1", owner)
            await conn.execute("DELETE FROM roster_versions WHERE owner = $1", owner)

    async def replace(self, owner: str, version: int, items: list[RosterItem]) -> None:
        async with _transaction(self._backend.pool) as conn:
            await conn.execute("DELETE FROM roster_items WHERE owner = $1", owner)
            await conn.executemany(_UPSERT_ITEM, [_roster_values(owner, item) for item in items])
            await conn.execute(
                "INSERT INTO roster_versions (owner, version) VALUES ($1, $2)"
                " ON CONFLICT (owner) DO UPDATE SET version = EXCLUDED.version",
                owner,
                version,
            )


# ---------------------------------------------------------------- archives


def _archived(row) -> ArchivedStanza:
    return ArchivedStanza(id=row["id"], when=row["when"], with_=row["with_"], payload=row["payload"])


class PostgresqlArchiveStore:
    """One named archive. Order is ("when", id), see schema/001_initial.sql."""

    capabilities = frozenset({"total", "ids", "full_id_range"})

    def __init__(self, backend, name: str):
        self._backend = backend
        self.name = name

    async def append(self, owner: str, item: ArchivedStanza) -> bool:
        return (await self.append_many([(owner, item)]))[0]

    async def append_many(self, items: list[tuple[str, ArchivedStanza]]) -> list[bool]:
        """One transaction: the batch shares one commit."""
        async with self._backend.pool.acquire() as conn, conn.transaction():
            return [
                _affected(
                    await conn.execute(
                        'INSERT INTO archive (store, owner, id, "when", with_, payload) VALUES ($1, $2, $3, $4, $5, $6)'
                        " ON CONFLICT (store, owner, id) DO NOTHING",
                        self.name,
                        owner,
                        item.id,
                        float(item.when),
                        item.with_,
                        bytes(item.payload),
                    )
                )
                == 1
                for owner, item in items
            ]

    async def query(self, owner: str, query: ArchiveQuery) -> ArchivePage:
        # At most two statements, no transaction: the keys of the ids the query names, in
        # one lookup; then the page and its total in one statement (one snapshot). The
        # filters and the page are ranges of ("when", id), each one range scan of
        # archive_by_time (or archive_by_with); the total counts the filters' range.
        if query.max is not None and query.max < 0:
            raise ValueError("ArchiveQuery.max must not be negative")
        pool = self._backend.pool
        named = [id_ for id_ in (query.after_id, query.before_id, query.after, query.before) if id_]
        keys = {}
        if named:
            rows = await pool.fetch(
                'SELECT id, "when" FROM archive WHERE store = $1 AND owner = $2 AND id = ANY($3::text[])',
                self.name,
                owner,
                named,
            )
            keys = {row["id"]: (row["when"], row["id"]) for row in rows}

        def position(id_: str) -> tuple[float, str]:
            if id_ not in keys:
                raise UnknownArchiveId(id_)
            return keys[id_]

        filters, page = query_ranges(query, position)
        params = _Params()

        def where(range_: KeyRange) -> str:
            clauses = [f"store = {params(self.name)}", f"owner = {params(owner)}"]
            if query.with_ is not None:
                clauses.append(f"with_ = {params(query.with_)}")
            if query.ids is not None:
                clauses.append(f"id = ANY({params(list(query.ids))}::text[])")
            if range_.lower is not None:
                operator = ">" if range_.lower_exclusive else ">="
                clauses.append(
                    f'("when", id) {operator} ({params(range_.lower[0])}::float8, {params(range_.lower[1])}::text)'
                )
            if range_.upper is not None:
                clauses.append(f'("when", id) < ({params(range_.upper[0])}::float8, {params(range_.upper[1])}::text)')
            return " AND ".join(clauses)

        backward = query.before is not None

        def order(table: str = "") -> str:
            direction = " DESC" if backward else ""
            return f'{table}"when"{direction}, {table}id{direction}'

        sql = f'SELECT id, "when", with_, payload FROM archive WHERE {where(page)} ORDER BY {order()}'
        if query.max is not None:
            sql += f" LIMIT {params(query.max + 1)}"  # one more tells whether the page is the last
        if query.count:  # one row with the total even when the page is empty
            sql = (
                f"SELECT counted.total, page.* FROM (SELECT count(*) AS total FROM archive"
                f" WHERE {where(filters)}) counted LEFT JOIN ({sql}) page ON true"
                f" ORDER BY {order('page.')}"
            )
        rows = await pool.fetch(sql, *params)
        count = rows[0]["total"] if query.count else None
        rows = [row for row in rows if row["id"] is not None]
        complete = query.max is None or len(rows) <= query.max
        rows = rows[: query.max] if not complete else rows
        if backward:
            rows.reverse()
        return ArchivePage(items=[_archived(row) for row in rows], complete=complete, count=count)

    async def count(self, owner: str) -> int:
        return await self._backend.pool.fetchval(
            "SELECT count(*) FROM archive WHERE store = $1 AND owner = $2", self.name, owner
        )

    async def delete(self, owner: str, ids: list[str] | None = None) -> int:
        if ids is None:
            return await self._delete_chunked("store = $1 AND owner = $2", self.name, owner)
        return _affected(
            await self._backend.pool.execute(
                "DELETE FROM archive WHERE store = $1 AND owner = $2 AND id = ANY($3::text[])",
                self.name,
                owner,
                list(ids),
            )
        )

    async def delete_older_than(self, when: float) -> int:
        return await self._delete_chunked('store = $1 AND "when" < $2', self.name, float(when))

    async def _delete_chunked(self, where: str, *params) -> int:
        """Delete DELETE_CHUNK rows per statement until fewer are left."""
        removed = 0
        while True:
            chunk = _affected(
                await self._backend.pool.execute(
                    f"DELETE FROM archive WHERE ctid = ANY(ARRAY(SELECT ctid FROM archive WHERE {where}"
                    f" LIMIT {DELETE_CHUNK}))",
                    *params,
                )
            )
            removed += chunk
            if chunk < DELETE_CHUNK:
                return removed

    def owners(self) -> AsyncIterator[str]:
        return distinct(self._backend.pool, "archive", "owner", store=self.name)


# ---------------------------------------------------------------- key-value


class PostgresqlKeyValueStore:
    def __init__(self, backend, name: str):
        self._backend = backend
        self.name = name

    async def get(self, owner: str, key: str) -> bytes | None:
        return await self._backend.pool.fetchval(
            "SELECT value FROM keyvalue WHERE store = $1 AND owner = $2 AND key = $3", self.name, owner, key
        )

    async def set(self, owner: str, key: str, value: bytes) -> None:
        await self._backend.pool.execute(
            "INSERT INTO keyvalue (store, owner, key, value) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (store, owner, key) DO UPDATE SET value = EXCLUDED.value",
            self.name,
            owner,
            key,
            bytes(value),
        )

    async def delete(self, owner: str, key: str | None = None) -> None:
        await self._backend.pool.execute(
            "DELETE FROM keyvalue WHERE store = $1 AND owner = $2 AND ($3::text IS NULL OR key = $3)",
            self.name,
            owner,
            key,
        )

    async def keys(self, owner: str) -> list[str]:
        rows = await self._backend.pool.fetch(
            "SELECT key FROM keyvalue WHERE store = $1 AND owner = $2 ORDER BY key", self.name, owner
        )
        return [key for (key,) in rows]

    def owners(self) -> AsyncIterator[str]:
        return distinct(self._backend.pool, "keyvalue", "owner", store=self.name)


# ---------------------------------------------------------------- rooms


class PostgresqlRoomStore:
    def __init__(self, backend):
        self._backend = backend

    async def get(self, room: str) -> dict | None:
        state = await self._backend.pool.fetchval("SELECT state FROM rooms WHERE jid = $1", room)
        return None if state is None else json.loads(state)

    async def save(self, room: str, state: dict) -> None:
        await self._backend.pool.execute(
            "INSERT INTO rooms (jid, service, state) VALUES ($1, $2, $3)"
            " ON CONFLICT (jid) DO UPDATE SET state = EXCLUDED.state",
            room,
            domain_of(room),
            _json(state),
        )

    async def delete(self, room: str) -> None:
        await self._backend.pool.execute("DELETE FROM rooms WHERE jid = $1", room)

    async def list(self, service: str) -> list[str]:
        rows = await self._backend.pool.fetch("SELECT jid FROM rooms WHERE service = $1 ORDER BY jid", service)
        return [jid for (jid,) in rows]

    def services(self) -> AsyncIterator[str]:
        return distinct(self._backend.pool, "rooms", "service")


# ---------------------------------------------------------------- pubsub


def _pubsub_item(row) -> PubSubItem:
    return PubSubItem(id=row["id"], payload=row["payload"], publisher=row["publisher"], when=row["when"])


# Held by a publishing transaction until it commits (any collision of the hash only
# makes two nodes' publishers wait for each other).
NODE_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended($1 || ' ' || $2, 0))"


class PostgresqlPubSubStore:
    def __init__(self, backend):
        self._backend = backend

    async def get_node(self, service: str, node: str) -> dict | None:
        config = await self._backend.pool.fetchval(
            "SELECT config FROM pubsub_nodes WHERE service = $1 AND node = $2", service, node
        )
        return None if config is None else json.loads(config)

    async def set_node(self, service: str, node: str, config: dict) -> None:
        await self._backend.pool.execute(
            "INSERT INTO pubsub_nodes (service, node, config) VALUES ($1, $2, $3)"
            " ON CONFLICT (service, node) DO UPDATE SET config = EXCLUDED.config",
            service,
            node,
            _json(config),
        )

    async def delete_node(self, service: str, node: str) -> None:
        async with _transaction(self._backend.pool) as conn:
            await conn.execute("DELETE FROM pubsub_items WHERE service = $1 AND node = $2", service, node)
            await conn.execute("DELETE FROM pubsub_nodes WHERE service = $1 AND node = $2", service, node)

    async def list_nodes(self, service: str) -> list[str]:
        rows = await self._backend.pool.fetch("SELECT node FROM pubsub_nodes WHERE service = $1 ORDER BY node", service)
        return [node for (node,) in rows]

    async def publish(self, service: str, node: str, item: PubSubItem, max_items: int | None) -> None:
        async with _transaction(self._backend.pool) as conn:
            # One publisher of a node at a time, on any node of a cluster: the trim then
            # sees every item published before it and keeps exactly the newest max_items.
            await conn.execute(NODE_LOCK, service, node)
            # A republished id takes a new seq: it is the newest again.
            await conn.execute(
                'INSERT INTO pubsub_items (service, node, id, payload, publisher, "when")'
                " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (service, node, id) DO UPDATE"
                " SET seq = nextval('pubsub_item_seq'), payload = EXCLUDED.payload,"
                ' publisher = EXCLUDED.publisher, "when" = EXCLUDED."when"',
                service,
                node,
                item.id,
                bytes(item.payload),
                item.publisher,
                float(item.when),
            )
            if max_items is not None:
                await conn.execute(
                    "DELETE FROM pubsub_items WHERE service = $1 AND node = $2 AND seq <="
                    " (SELECT seq FROM pubsub_items WHERE service = $1 AND node = $2"
                    "  ORDER BY seq DESC LIMIT 1 OFFSET $3)",
                    service,
                    node,
                    max_items,
                )

    async def get_items(
        self, service: str, node: str, ids: list[str] | None = None, max_items: int | None = None
    ) -> list[PubSubItem]:
        rows = await self._backend.pool.fetch(
            'SELECT id, payload, publisher, "when" FROM pubsub_items WHERE service = $1 AND node = $2'
            " AND ($3::text[] IS NULL OR id = ANY($3::text[])) ORDER BY seq DESC LIMIT $4",
            service,
            node,
            None if ids is None else list(ids),
            max_items,
        )
        return [_pubsub_item(row) for row in rows]

    async def retract(self, service: str, node: str, item_id: str) -> bool:
        return (
            _affected(
                await self._backend.pool.execute(
                    "DELETE FROM pubsub_items WHERE service = $1 AND node = $2 AND id = $3", service, node, item_id
                )
            )
            == 1
        )

    async def services(self) -> AsyncIterator[str]:
        rows = await self._backend.pool.fetch(
            "SELECT service FROM pubsub_nodes UNION SELECT service FROM pubsub_items ORDER BY 1"
        )
        for (service,) in rows:
            yield service


# ---------------------------------------------------------------- uploads


class PostgresqlUploadStore:
    def __init__(self, backend):
        self._backend = backend

    async def add(self, upload: Upload) -> None:
        await self._backend.pool.execute(
            f"INSERT INTO uploads ({UPLOAD_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            upload.id,
            upload.owner,
            upload.filename,
            upload.size,
            upload.content_type,
            float(upload.created),
            float(upload.expires),
            upload.completed,
        )

    async def get(self, upload_id: str) -> Upload | None:
        row = await self._backend.pool.fetchrow(f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = $1", upload_id)
        return upload_of(row) if row else None

    async def mark_completed(self, upload_id: str) -> bool:
        return (
            _affected(
                await self._backend.pool.execute(
                    "UPDATE uploads SET completed = true WHERE id = $1 AND NOT completed", upload_id
                )
            )
            == 1
        )

    async def list(self, owner: str) -> list[Upload]:
        rows = await self._backend.pool.fetch(
            f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE owner = $1 ORDER BY created, id", owner
        )
        return [upload_of(row) for row in rows]

    async def usage(
        self, owner: str, now: float, open_since: float | None = None, exclude: str = ""
    ) -> tuple[int, int]:
        row = await self._backend.pool.fetchrow(
            "SELECT COALESCE(SUM(size), 0)::bigint AS used, count(*) AS uploads FROM uploads"
            " WHERE owner = $1 AND expires >= $2 AND id <> $3 AND (completed OR created >= $4)",
            owner,
            float(now),
            exclude,
            math.inf if open_since is None else float(open_since),
        )
        return row["used"], row["uploads"]

    async def remove(self, upload_id: str) -> None:
        await self._backend.pool.execute("DELETE FROM uploads WHERE id = $1", upload_id)

    async def expired(self, now: float) -> list[Upload]:
        """Uploads whose expiry time has passed (expires < now), soonest first."""
        rows = await self._backend.pool.fetch(
            f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE expires < $1 ORDER BY expires, id", float(now)
        )
        return [upload_of(row) for row in rows]
