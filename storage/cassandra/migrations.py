"""Schema versions: the CQL files in schema/ applied in order, recorded in schema_version.

``apply_schema`` creates the keyspace (with the configured replication) when it is
missing, then applies every ``schema/NNN_<what>.cql`` whose number is not yet in
``schema_version``. Each statement of a file is ``IF NOT EXISTS``; a file interrupted
half-way is applied again as a whole on the next run, and a file is recorded only
after all its statements went through, so applying twice is a no-op.

Schema changes in Cassandra should come from one client at a time: when several
xmppd nodes share a cluster, run ``xmppctl storage init`` (which calls `init_schema`)
once and start the nodes with ``create_schema = false``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from importlib import resources

from .cql import CqlSession

COMPONENT = "xmppd"
_FILE_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.cql$")
_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")

SCHEMA_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    component   text,
    version     int,
    name        text,
    applied     timestamp,
    PRIMARY KEY (component, version)
)"""


@dataclass(frozen=True)
class SchemaFile:
    version: int
    name: str
    text: str

    def statements(self) -> list[str]:
        return split_statements(self.text)


def schema_files() -> list[SchemaFile]:
    """The schema files shipped with this package, in version order."""
    files = []
    for entry in resources.files(__package__).joinpath("schema").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            files.append(SchemaFile(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    files.sort(key=lambda schema_file: schema_file.version)
    versions = [schema_file.version for schema_file in files]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two schema files with one version number: {versions}")
    return files


def split_statements(text: str) -> list[str]:
    """The statements of a CQL file: ``--`` comments removed, split at ``;``, both
    only outside of quoted strings."""
    statements, current, quote, i = [], [], None, 0
    while i < len(text):
        char = text[i]
        if quote:
            current.append(char)
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
            current.append(char)
        elif text.startswith("--", i):
            newline = text.find("\n", i)
            i = len(text) if newline < 0 else newline
            continue
        elif char == ";":
            statements.append("".join(current).strip())
            current = []
        else:
            current.append(char)
        i += 1
    statements.append("".join(current).strip())
    return [statement for statement in statements if statement]


def check_keyspace_name(keyspace: str) -> str:
    if not _IDENTIFIER.match(keyspace):
        raise ValueError(
            f"invalid Cassandra keyspace name {keyspace!r}: letters, digits "
            "and underscores, starting with a letter, at most 48"
        )
    return keyspace


def replication_literal(replication: dict) -> str:
    """A replication map as CQL: {'class': 'SimpleStrategy', 'replication_factor': '1'}."""
    if "class" not in replication:
        raise ValueError("the replication settings need a 'class'")
    items = []
    for key, value in replication.items():
        items.append(f"{_quote(str(key))}: {_quote(str(value))}")
    return "{" + ", ".join(items) + "}"


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


async def create_keyspace(cql: CqlSession, keyspace: str, replication: dict, durable_writes: bool = True) -> None:
    await cql.execute_ddl(
        f"CREATE KEYSPACE IF NOT EXISTS {check_keyspace_name(keyspace)}"
        f" WITH replication = {replication_literal(replication)}"
        f" AND durable_writes = {'true' if durable_writes else 'false'}"
    )


async def applied_versions(cql: CqlSession, keyspace: str | None = None) -> set[int]:
    """Versions recorded in schema_version of `keyspace` (default: the session's)."""
    table = f"{check_keyspace_name(keyspace)}.schema_version" if keyspace else "schema_version"
    rows = await cql.rows(f"SELECT version FROM {table} WHERE component = ?", (COMPONENT,))
    return {version for (version,) in rows}


async def apply_schema(cql: CqlSession) -> list[int]:
    """Bring the session's keyspace to the newest schema; returns the versions applied
    now (empty when it was up to date)."""
    await cql.execute_ddl(SCHEMA_VERSION_TABLE)
    done = await applied_versions(cql)
    applied = []
    for schema_file in schema_files():
        if schema_file.version in done:
            continue
        for statement in schema_file.statements():
            await cql.execute_ddl(statement)
        await cql.execute(
            "INSERT INTO schema_version (component, version, name, applied) VALUES (?, ?, ?, ?)",
            (COMPONENT, schema_file.version, schema_file.name, int(time.time() * 1000)),
        )
        applied.append(schema_file.version)
    return applied
