"""Schema versions: the SQL files in schema/ applied in order, recorded in xmppd_schema.

`upgrade` runs in one transaction under a transaction-level advisory lock: nodes that
start together on one database apply each file once (the others wait for the lock,
then find nothing left to do), and a file that fails leaves the database as it was
(PostgreSQL's DDL is transactional).
"""

from __future__ import annotations

import logging
import re
from importlib import resources

from .. import StorageUnavailable

log = logging.getLogger(__name__)

_FILE_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
SCHEMA_LOCK = 0x786D7070D  # the advisory lock key of schema changes ("xmppd")

SCHEMA_TABLE = """
CREATE TABLE IF NOT EXISTS xmppd_schema (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied     timestamptz NOT NULL DEFAULT now()
)"""


def schema_files() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) of every schema file of this package, in order."""
    files = []
    for entry in resources.files(__package__).joinpath("schema").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            files.append((int(match.group(1)), entry.name, entry.read_text("utf-8")))
    files.sort()
    versions = [version for version, _, _ in files]
    if versions != list(range(1, len(files) + 1)):
        raise RuntimeError(f"postgresql schema files are not numbered 001, 002, ...: {versions}")
    return files


async def upgrade(conn) -> list[int]:
    """Apply the schema files the database lacks; returns the versions applied now."""
    files = schema_files()
    applied = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
        await conn.execute(SCHEMA_TABLE)
        done = {version for (version,) in await conn.fetch("SELECT version FROM xmppd_schema")}
        if done and max(done) > len(files):
            raise StorageUnavailable(
                f"the PostgreSQL database has schema version {max(done)}, newer than this xmppd"
                f" knows ({len(files)}); refusing to use it with an older version"
            )
        for version, name, sql in files:
            if version in done:
                continue
            log.info("event=schema-applying backend=postgresql schema=%s", name)
            await conn.execute(sql)
            await conn.execute("INSERT INTO xmppd_schema (version, name) VALUES ($1, $2)", version, name)
            applied.append(version)
    return applied
