"""The stores of storage/interfaces.py on SQLite (tables in 001_initial.sql).

Each method builds a small function of a connection and hands it to the Database, which
runs it on the writer thread (in a group-committed transaction) or on a reader thread.
"""

from __future__ import annotations

import json
import math
import sqlite3
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
from .database import Database

# Rows per chunk when a store yields its owners, and per transaction when a delete may
# touch a whole archive: other writers get their turn between chunks.
OWNERS_CHUNK = 500
DELETE_CHUNK = 5000
IDS_CHUNK = 500  # ids per DELETE ... IN (...) statement


def _execute(sql: str, params: tuple):
    """A write of one statement whose result nobody needs."""

    def execute(conn: sqlite3.Connection) -> None:
        conn.execute(sql, params)

    return execute


def _json(value) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


async def _owners(db: Database, table: str, store: str) -> AsyncIterator[str]:
    """The distinct owners of one named store, sorted, read OWNERS_CHUNK at a time.

    Each owner is one index seek past the previous one (a skip scan), so an owner with
    a million rows costs no more than one with a single row.
    """

    def select(conn: sqlite3.Connection, after: str) -> list[str]:
        owners: list[str] = []
        while len(owners) < OWNERS_CHUNK:
            row = conn.execute(
                f"SELECT owner FROM {table} WHERE store = ? AND owner > ? ORDER BY owner LIMIT 1", (store, after)
            ).fetchone()
            if row is None:
                break
            after = row[0]
            owners.append(after)
        return owners

    after = ""
    while True:
        chunk = await db.read(lambda conn, after=after: select(conn, after))
        for owner in chunk:
            yield owner
        if len(chunk) < OWNERS_CHUNK:
            return
        after = chunk[-1]


def distinct_values(conn: sqlite3.Connection, table: str, column: str) -> list[str]:
    """The distinct values of an indexed leading column, sorted: one index seek per
    value (a skip scan), however many rows share it."""
    values: list[str] = []
    while True:
        row = conn.execute(
            f"SELECT {column} FROM {table} WHERE {column} > ? ORDER BY {column} LIMIT 1",
            (values[-1] if values else "",),
        ).fetchone()
        if row is None:
            return values
        values.append(row[0])


# ---------------------------------------------------------------- accounts


class SqliteAccountStore:
    def __init__(self, db: Database):
        self._db = db

    async def create(self, account: Account) -> bool:
        secrets = encode_secrets(account.secrets)

        def insert(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO accounts (jid, domain, secrets, created) VALUES (?, ?, ?, ?)",
                (account.jid, domain_of(account.jid), secrets, account.created),
            )
            return cursor.rowcount == 1

        return await self._db.write(insert)

    async def get(self, jid: str) -> Account | None:
        def select(conn: sqlite3.Connection):
            return conn.execute("SELECT secrets, created FROM accounts WHERE jid = ?", (jid,)).fetchone()

        row = await self._db.read(select)
        if row is None:
            return None
        return Account(jid=jid, secrets=decode_secrets(row[0]), created=row[1])

    async def set_secrets(self, jid: str, secrets: dict[str, ScramCredentials]) -> bool:
        encoded = encode_secrets(secrets)

        def update(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute("UPDATE accounts SET secrets = ? WHERE jid = ?", (encoded, jid))
            return cursor.rowcount == 1

        return await self._db.write(update)

    async def delete(self, jid: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM accounts WHERE jid = ?", (jid,)).rowcount == 1

        return await self._db.write(delete)

    async def list(self, domain: str) -> list[str]:
        def select(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute("SELECT jid FROM accounts WHERE domain = ? ORDER BY jid", (domain,))
            return [jid for (jid,) in rows]

        return await self._db.read(select)


# ---------------------------------------------------------------- rosters


def _bump_roster_version(conn: sqlite3.Connection, owner: str) -> int:
    conn.execute(
        "INSERT INTO roster_versions (owner, version) VALUES (?, 1)"
        " ON CONFLICT (owner) DO UPDATE SET version = version + 1",
        (owner,),
    )
    return _roster_version(conn, owner)


def _roster_version(conn: sqlite3.Connection, owner: str) -> int:
    row = conn.execute("SELECT version FROM roster_versions WHERE owner = ?", (owner,)).fetchone()
    return row[0] if row else 0


_ROSTER_COLUMNS = "contact, name, subscription, ask, pending_in, approved, groups"


def _roster_item(row) -> RosterItem:
    contact, name, subscription, ask, pending_in, approved, groups = row
    return RosterItem(
        jid=contact,
        name=name,
        subscription=subscription,
        ask=bool(ask),
        pending_in=bool(pending_in),
        approved=bool(approved),
        groups=tuple(json.loads(groups)),
    )


class SqliteRosterStore:
    def __init__(self, db: Database):
        self._db = db

    async def get(self, owner: str) -> tuple[int, dict[str, RosterItem]]:
        def select(conn: sqlite3.Connection):
            version = _roster_version(conn, owner)
            rows = conn.execute(
                f"SELECT {_ROSTER_COLUMNS} FROM roster_items WHERE owner = ? ORDER BY contact", (owner,)
            ).fetchall()
            return version, rows

        version, rows = await self._db.read(select)
        items = {}
        for row in rows:
            item = _roster_item(row)
            items[item.jid] = item
        return version, items

    async def get_item(self, owner: str, contact: str) -> RosterItem | None:
        def select(conn: sqlite3.Connection):
            return conn.execute(
                f"SELECT {_ROSTER_COLUMNS} FROM roster_items WHERE owner = ? AND contact = ?", (owner, contact)
            ).fetchone()

        row = await self._db.read(select)
        return _roster_item(row) if row else None

    async def put_item(self, owner: str, item: RosterItem) -> int:
        values = (
            owner,
            item.jid,
            item.name,
            item.subscription,
            int(item.ask),
            int(item.pending_in),
            int(item.approved),
            _json(list(item.groups)),
        )

        def upsert(conn: sqlite3.Connection) -> int:
            conn.execute(
                f"INSERT OR REPLACE INTO roster_items (owner, {_ROSTER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
            return _bump_roster_version(conn, owner)

        return await self._db.write(upsert)

    async def remove_item(self, owner: str, contact: str) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            cursor = conn.execute("DELETE FROM roster_items WHERE owner = ? AND contact = ?", (owner, contact))
            if cursor.rowcount == 0:  # nothing changed: same version
                return _roster_version(conn, owner)
            return _bump_roster_version(conn, owner)

        return await self._db.write(delete)

    async def delete(self, owner: str) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM roster_items WHERE owner = ?", (owner,))
            conn.execute("DELETE FROM roster_versions WHERE owner = ?", (owner,))

        await self._db.write(delete)

    async def replace(self, owner: str, version: int, items: list[RosterItem]) -> None:
        rows = [
            (
                owner,
                item.jid,
                item.name,
                item.subscription,
                int(item.ask),
                int(item.pending_in),
                int(item.approved),
                _json(list(item.groups)),
            )
            for item in items
        ]

        def replace(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM roster_items WHERE owner = ?", (owner,))
            conn.executemany(
                f"INSERT INTO roster_items (owner, {_ROSTER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows
            )
            conn.execute("INSERT OR REPLACE INTO roster_versions (owner, version) VALUES (?, ?)", (owner, version))

        await self._db.write(replace)


# ---------------------------------------------------------------- archives

_ARCHIVE_COLUMNS = 'id, "when", with_, payload'


def _archived(row) -> ArchivedStanza:
    return ArchivedStanza(id=row[0], when=row[1], with_=row[2], payload=bytes(row[3]))


class SqliteArchiveStore:
    """One named archive. Order is ("when", id), see 001_initial.sql."""

    capabilities = frozenset({"total", "ids", "full_id_range"})

    def __init__(self, db: Database, name: str):
        self._db = db
        self.name = name

    async def append(self, owner: str, item: ArchivedStanza) -> bool:
        return (await self.append_many([(owner, item)]))[0]

    async def append_many(self, items: list[tuple[str, ArchivedStanza]]) -> list[bool]:
        rows = [(self.name, owner, item.id, item.when, item.with_, item.payload) for owner, item in items]

        def insert(conn: sqlite3.Connection) -> list[bool]:
            return [
                conn.execute(
                    'INSERT OR IGNORE INTO archive (store, owner, id, "when", with_, payload)'
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    row,
                ).rowcount
                == 1
                for row in rows
            ]

        return await self._db.write(insert)

    async def query(self, owner: str, query: ArchiveQuery) -> ArchivePage:
        if query.max is not None and query.max < 0:
            raise ValueError("ArchiveQuery.max must not be negative")
        return await self._db.read(lambda conn: self._query(conn, owner, query))

    def _position(self, conn: sqlite3.Connection, owner: str, id_: str) -> tuple[float, str]:
        row = conn.execute(
            'SELECT "when", id FROM archive WHERE store = ? AND owner = ? AND id = ?', (self.name, owner, id_)
        ).fetchone()
        if row is None:
            raise UnknownArchiveId(id_)
        return row[0], row[1]

    def _query(self, conn: sqlite3.Connection, owner: str, query: ArchiveQuery) -> ArchivePage:
        # The filters and the page are ranges of the key ("when", id): each becomes one
        # range scan of archive_by_time (or archive_by_with); `count` uses the filters'.
        filters, page = query_ranges(query, lambda id_: self._position(conn, owner, id_))
        backward = query.before is not None

        where = ["store = ?", "owner = ?"]
        params: list = [self.name, owner]
        if query.with_ is not None:
            where.append("with_ = ?")
            params.append(query.with_)
        table = "archive"
        if query.ids is not None:
            # A few ids: look each one up rather than scan the owner's range.
            table = "archive INDEXED BY archive_by_id"
            where.append(f"id IN ({', '.join('?' * len(query.ids))})" if query.ids else "0")
            params.extend(query.ids)

        def bounded(range_: KeyRange) -> tuple[str, list]:
            clauses, values = list(where), list(params)
            if range_.lower is not None:
                clauses.append(f'("when", id) {">" if range_.lower_exclusive else ">="} (?, ?)')
                values.extend(range_.lower)
            if range_.upper is not None:
                clauses.append('("when", id) < (?, ?)')
                values.extend(range_.upper)
            return " AND ".join(clauses), values

        page_where, page_params = bounded(page)
        order = '"when" DESC, id DESC' if backward else '"when", id'
        sql = f"SELECT {_ARCHIVE_COLUMNS} FROM {table} WHERE {page_where} ORDER BY {order}"
        if query.max is not None:
            sql += " LIMIT ?"
            page_params.append(query.max + 1)  # one more tells whether the page is the last
        rows = conn.execute(sql, page_params).fetchall()
        complete = query.max is None or len(rows) <= query.max
        if not complete:
            rows = rows[: query.max]
        if backward:
            rows.reverse()

        count = None
        if query.count:
            count_where, count_params = bounded(filters)
            count = conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {count_where}", count_params).fetchone()[0]
        return ArchivePage(items=[_archived(row) for row in rows], complete=complete, count=count)

    async def count(self, owner: str) -> int:
        def select(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "SELECT COUNT(*) FROM archive WHERE store = ? AND owner = ?", (self.name, owner)
            ).fetchone()[0]

        return await self._db.read(select)

    async def delete(self, owner: str, ids: list[str] | None = None) -> int:
        if ids is None:
            return await self._delete_chunked("store = ? AND owner = ?", (self.name, owner))
        ids = list(ids)
        if not ids:
            return 0

        def delete(conn: sqlite3.Connection) -> int:
            removed = 0
            for start in range(0, len(ids), IDS_CHUNK):
                chunk = ids[start : start + IDS_CHUNK]
                removed += conn.execute(
                    f"DELETE FROM archive WHERE store = ? AND owner = ? AND id IN ({', '.join('?' * len(chunk))})",
                    (self.name, owner, *chunk),
                ).rowcount
            return removed

        return await self._db.write(delete)

    async def delete_older_than(self, when: float) -> int:
        return await self._delete_chunked('store = ? AND "when" < ?', (self.name, when))

    async def _delete_chunked(self, where: str, params: tuple) -> int:
        """Delete in transactions of DELETE_CHUNK rows so that a retention run over a big
        archive does not hold up the other writers."""

        def delete(conn: sqlite3.Connection) -> int:
            return conn.execute(
                f"DELETE FROM archive WHERE rowid IN (SELECT rowid FROM archive WHERE {where} LIMIT {DELETE_CHUNK})",
                params,
            ).rowcount

        removed = 0
        while True:
            chunk = await self._db.write(delete)
            removed += chunk
            if chunk < DELETE_CHUNK:
                return removed

    def owners(self) -> AsyncIterator[str]:
        return _owners(self._db, "archive", self.name)


# ---------------------------------------------------------------- key-value


class SqliteKeyValueStore:
    def __init__(self, db: Database, name: str):
        self._db = db
        self.name = name

    async def get(self, owner: str, key: str) -> bytes | None:
        def select(conn: sqlite3.Connection):
            return conn.execute(
                "SELECT value FROM keyvalue WHERE store = ? AND owner = ? AND key = ?", (self.name, owner, key)
            ).fetchone()

        row = await self._db.read(select)
        return bytes(row[0]) if row else None

    async def set(self, owner: str, key: str, value: bytes) -> None:
        values = (self.name, owner, key, bytes(value))
        await self._db.write(
            _execute("INSERT OR REPLACE INTO keyvalue (store, owner, key, value) VALUES (?, ?, ?, ?)", values)
        )

    async def delete(self, owner: str, key: str | None = None) -> None:
        if key is None:
            sql, params = "DELETE FROM keyvalue WHERE store = ? AND owner = ?", (self.name, owner)
        else:
            sql = "DELETE FROM keyvalue WHERE store = ? AND owner = ? AND key = ?"
            params = (self.name, owner, key)
        await self._db.write(_execute(sql, params))

    async def keys(self, owner: str) -> list[str]:
        def select(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT key FROM keyvalue WHERE store = ? AND owner = ? ORDER BY key", (self.name, owner)
            )
            return [key for (key,) in rows]

        return await self._db.read(select)

    def owners(self) -> AsyncIterator[str]:
        return _owners(self._db, "keyvalue", self.name)


# ---------------------------------------------------------------- rooms


class SqliteRoomStore:
    def __init__(self, db: Database):
        self._db = db

    async def get(self, room: str) -> dict | None:
        def select(conn: sqlite3.Connection):
            return conn.execute("SELECT state FROM rooms WHERE jid = ?", (room,)).fetchone()

        row = await self._db.read(select)
        return json.loads(row[0]) if row else None

    async def save(self, room: str, state: dict) -> None:
        values = (room, domain_of(room), _json(state))
        await self._db.write(_execute("INSERT OR REPLACE INTO rooms (jid, service, state) VALUES (?, ?, ?)", values))

    async def delete(self, room: str) -> None:
        await self._db.write(_execute("DELETE FROM rooms WHERE jid = ?", (room,)))

    async def list(self, service: str) -> list[str]:
        def select(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute("SELECT jid FROM rooms WHERE service = ? ORDER BY jid", (service,))
            return [jid for (jid,) in rows]

        return await self._db.read(select)

    async def services(self) -> AsyncIterator[str]:
        for service in await self._db.read(lambda conn: distinct_values(conn, "rooms", "service")):
            yield service


# ---------------------------------------------------------------- pubsub


def _pubsub_item(row) -> PubSubItem:
    return PubSubItem(id=row[0], payload=bytes(row[1]), publisher=row[2], when=row[3])


class SqlitePubSubStore:
    def __init__(self, db: Database):
        self._db = db

    async def get_node(self, service: str, node: str) -> dict | None:
        def select(conn: sqlite3.Connection):
            return conn.execute(
                "SELECT config FROM pubsub_nodes WHERE service = ? AND node = ?", (service, node)
            ).fetchone()

        row = await self._db.read(select)
        return json.loads(row[0]) if row else None

    async def set_node(self, service: str, node: str, config: dict) -> None:
        values = (service, node, _json(config))
        await self._db.write(
            _execute("INSERT OR REPLACE INTO pubsub_nodes (service, node, config) VALUES (?, ?, ?)", values)
        )

    async def delete_node(self, service: str, node: str) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM pubsub_items WHERE service = ? AND node = ?", (service, node))
            conn.execute("DELETE FROM pubsub_nodes WHERE service = ? AND node = ?", (service, node))

        await self._db.write(delete)

    async def list_nodes(self, service: str) -> list[str]:
        def select(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute("SELECT node FROM pubsub_nodes WHERE service = ? ORDER BY node", (service,))
            return [node for (node,) in rows]

        return await self._db.read(select)

    async def publish(self, service: str, node: str, item: PubSubItem, max_items: int | None) -> None:
        values = (service, node, item.id, item.payload, item.publisher, item.when)

        def publish(conn: sqlite3.Connection) -> None:
            # REPLACE deletes the old row of that id: the new one gets a new, highest seq.
            conn.execute(
                "INSERT OR REPLACE INTO pubsub_items"
                ' (service, node, id, payload, publisher, "when")'
                " VALUES (?, ?, ?, ?, ?, ?)",
                values,
            )
            if max_items is not None:
                conn.execute(
                    "DELETE FROM pubsub_items WHERE service = ? AND node = ? AND seq <="
                    " (SELECT seq FROM pubsub_items WHERE service = ? AND node = ?"
                    "  ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                    (service, node, service, node, max_items),
                )

        await self._db.write(publish)

    async def get_items(
        self, service: str, node: str, ids: list[str] | None = None, max_items: int | None = None
    ) -> list[PubSubItem]:
        sql = 'SELECT id, payload, publisher, "when" FROM pubsub_items WHERE service = ? AND node = ?'
        params: list = [service, node]
        if ids is not None:
            sql += f" AND id IN ({', '.join('?' * len(ids))})" if ids else " AND 0"
            params.extend(ids)
        sql += " ORDER BY seq DESC"
        if max_items is not None:
            sql += " LIMIT ?"
            params.append(max_items)

        def select(conn: sqlite3.Connection):
            return conn.execute(sql, params).fetchall()

        return [_pubsub_item(row) for row in await self._db.read(select)]

    async def retract(self, service: str, node: str, item_id: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            return (
                conn.execute(
                    "DELETE FROM pubsub_items WHERE service = ? AND node = ? AND id = ?", (service, node, item_id)
                ).rowcount
                == 1
            )

        return await self._db.write(delete)

    async def services(self) -> AsyncIterator[str]:
        def select(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute("SELECT service FROM pubsub_nodes UNION SELECT service FROM pubsub_items ORDER BY 1")
            return [service for (service,) in rows]

        for service in await self._db.read(select):
            yield service


# ---------------------------------------------------------------- uploads


class SqliteUploadStore:
    def __init__(self, db: Database):
        self._db = db

    async def add(self, upload: Upload) -> None:
        values = (
            upload.id,
            upload.owner,
            upload.filename,
            upload.size,
            upload.content_type,
            upload.created,
            upload.expires,
            int(upload.completed),
        )
        await self._db.write(
            _execute(f"INSERT INTO uploads ({UPLOAD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", values)
        )

    async def get(self, upload_id: str) -> Upload | None:
        def select(conn: sqlite3.Connection):
            return conn.execute(f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = ?", (upload_id,)).fetchone()

        row = await self._db.read(select)
        return upload_of(row) if row else None

    async def mark_completed(self, upload_id: str) -> bool:
        def update(conn: sqlite3.Connection) -> bool:
            return (
                conn.execute("UPDATE uploads SET completed = 1 WHERE id = ? AND completed = 0", (upload_id,)).rowcount
                == 1
            )

        return await self._db.write(update)

    async def list(self, owner: str) -> list[Upload]:
        def select(conn: sqlite3.Connection):
            return conn.execute(
                f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE owner = ? ORDER BY created, id", (owner,)
            ).fetchall()

        return [upload_of(row) for row in await self._db.read(select)]

    async def usage(
        self, owner: str, now: float, open_since: float | None = None, exclude: str = ""
    ) -> tuple[int, int]:
        def select(conn: sqlite3.Connection):
            return conn.execute(
                "SELECT COALESCE(SUM(size), 0), COUNT(*) FROM uploads WHERE owner = ? AND expires >= ?"
                " AND id != ? AND (completed = 1 OR created >= ?)",
                (owner, now, exclude, math.inf if open_since is None else open_since),
            ).fetchone()

        used, count = await self._db.read(select)
        return used, count

    async def remove(self, upload_id: str) -> None:
        await self._db.write(_execute("DELETE FROM uploads WHERE id = ?", (upload_id,)))

    async def expired(self, now: float) -> list[Upload]:
        """Uploads whose expiry time has passed (expires < now), soonest first."""

        def select(conn: sqlite3.Connection):
            return conn.execute(
                f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE expires < ? ORDER BY expires, id", (now,)
            ).fetchall()

        return [upload_of(row) for row in await self._db.read(select)]
