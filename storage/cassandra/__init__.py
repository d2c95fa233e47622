"""Apache Cassandra as the storage backend: messages and state of a cluster of xmppd nodes.

Config section ``[storage.cassandra]`` (see `Options`). The tables are in
``schema/NNN_*.cql`` (migrations.py applies and records them); the stores are in
stores.py, the archives in archive.py, the asyncio bridge to the driver in cql.py.

Design in short: every query names a whole partition key (nothing is filtered on the
server, no secondary index); what grows without bound is split in time buckets (archives) or
hash shards (per-domain and per-name listings); paging walks clustering order, never
an offset; statements are prepared once and run with ``execute_async``, whose result
is handed to the asyncio loop thread-safely, so no call blocks the event loop;
lightweight transactions only where two writers must not both win.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from .. import StorageUnavailable
from .archive import CassandraArchiveStore
from .cql import CqlSession, consistency_level, serial_consistency_for
from .migrations import (
    applied_versions,
    apply_schema,
    check_keyspace_name,
    create_keyspace,
    schema_files,
)
from .stores import (
    CassandraAccountStore,
    CassandraKeyValueStore,
    CassandraPubSubStore,
    CassandraRoomStore,
    CassandraRosterStore,
    CassandraUploadStore,
    distinct_keys,
)

__all__ = ["Options", "CassandraBackend", "BackendNotStarted", "open_backend", "init_schema", "schema_files"]

log = logging.getLogger(__name__)


def _simple_strategy() -> dict:
    return {"class": "SimpleStrategy", "replication_factor": 1}


@dataclass(frozen=True)
class Options:
    contact_points: tuple[str, ...] = ("127.0.0.1",)
    port: int = 9042
    keyspace: str = "xmppd"
    # CQL replication map of the keyspace, used when xmppd creates it. A production
    # cluster: {"class": "NetworkTopologyStrategy", "dc1": 3}.
    replication: dict = field(default_factory=_simple_strategy)
    consistency: str = "LOCAL_QUORUM"  # reads and writes; LWTs use (LOCAL_)SERIAL
    local_dc: str | None = None  # None: the data center of the first contact
    create_schema: bool = True  # create/upgrade the keyspace at start
    username: str | None = None
    password: str | None = None
    archive_bucket_seconds: int = 86400  # width of an archive partition (time bucket)
    archive_ttl: dict = field(default_factory=dict)  # {archive name: retention seconds}
    archive_query_count: bool = True  # count matching items for every MAM query
    protocol_version: int = 5  # native protocol: 5 for Cassandra 4+, 4 for 3.x
    request_timeout: float = 10.0  # seconds per request
    connect_timeout: float = 10.0

    def problems(self) -> list[tuple[str, str]]:
        """(key, message) for every bad value; empty when the options are usable."""
        found = []
        try:
            check_keyspace_name(self.keyspace)
        except ValueError as error:
            found.append(("keyspace", str(error)))
        try:
            consistency_level(self.consistency)
        except ValueError as error:
            found.append(("consistency", str(error)))
        if not self.contact_points:
            found.append(("contact_points", "must name at least one Cassandra node"))
        if not 0 < self.port < 65536:
            found.append(("port", "must be a port number (1-65535)"))
        if "class" not in self.replication:
            found.append(("replication", "needs a 'class' (SimpleStrategy or NetworkTopologyStrategy)"))
        if self.archive_bucket_seconds <= 0:
            found.append(("archive_bucket_seconds", "must be positive"))
        for name, seconds in self.archive_ttl.items():
            if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds <= 0:
                found.append((f"archive_ttl.{name}", "must be a positive number of seconds"))
        if (self.username is None) != (self.password is None):
            found.append(("password" if self.password is None else "username", "username and password go together"))
        if self.request_timeout <= 0 or self.connect_timeout <= 0:
            found.append(("request_timeout", "timeouts must be positive"))
        return found

    def validate(self, where) -> None:
        """Called by xmppd/config.py: the first problem stops start-up, naming its key."""
        for key, message in self.problems():
            where.fail(key, message)

    def check(self) -> None:
        """Raise ValueError for options made in code (open_backend calls this)."""
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(f"{key}: {message}" for key, message in problems))


class BackendNotStarted(RuntimeError):
    """A store was used before `start()` or after `close()`."""


class CassandraBackend:
    """A StorageBackend on a Cassandra cluster. Call `start()` before use, `close()` after."""

    def __init__(self, options: Options, data_dir: str | None = None):
        self.options = options
        self.data_dir = data_dir  # unused: the data lives in the cluster
        self.cluster = None
        self._cql: CqlSession | None = None
        self.accounts = CassandraAccountStore(self)
        self.rosters = CassandraRosterStore(self)
        self.rooms = CassandraRoomStore(self)
        self.pubsub = CassandraPubSubStore(self)
        self.uploads = CassandraUploadStore(self)
        self._archives: dict[str, CassandraArchiveStore] = {}
        self._keyvalues: dict[str, CassandraKeyValueStore] = {}

    @property
    def cql(self) -> CqlSession:
        if self._cql is None:
            raise BackendNotStarted("the Cassandra backend is not started")
        return self._cql

    def archive(self, name: str) -> CassandraArchiveStore:
        store = self._archives.get(name)
        if store is None:
            store = self._archives[name] = CassandraArchiveStore(self, name)
        return store

    def keyvalue(self, name: str) -> CassandraKeyValueStore:
        store = self._keyvalues.get(name)
        if store is None:
            store = self._keyvalues[name] = CassandraKeyValueStore(self, name)
        return store

    async def archive_names(self) -> list[str]:
        return await distinct_keys(self.cql, "archive_owners", "name")

    async def keyvalue_names(self) -> list[str]:
        return await distinct_keys(self.cql, "keyvalue_owners", "name")

    async def start(self) -> None:
        if self._cql is not None:
            return
        self.cluster, cql = await connect(self.options)
        try:
            if self.options.create_schema:
                await create_keyspace(cql, self.options.keyspace, self.options.replication)
            else:
                await check_schema(cql, self.options.keyspace)
            await cql.use_keyspace(self.options.keyspace)
            if self.options.create_schema:
                applied = await apply_schema(cql)
                if applied:
                    log.info("Cassandra keyspace %s: applied schema versions %s", self.options.keyspace, applied)
        except BaseException:
            await asyncio.to_thread(self.cluster.shutdown)
            self.cluster = None
            raise
        self._cql = cql

    async def close(self) -> None:
        cluster, self.cluster, self._cql = self.cluster, None, None
        if cluster is not None:
            await asyncio.to_thread(cluster.shutdown)


async def check_schema(cql: CqlSession, keyspace: str) -> None:
    """Raise StorageUnavailable unless every schema version is applied in `keyspace`
    (for nodes started with create_schema = false; no keyspace selected yet)."""
    done: set[int] = set()
    if await cql.rows(
        "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ? AND table_name = 'schema_version'",
        (keyspace,),
    ):
        done = await applied_versions(cql, keyspace)
    missing = [schema_file.version for schema_file in schema_files() if schema_file.version not in done]
    if missing:
        raise StorageUnavailable(
            f"the Cassandra keyspace {keyspace} lacks schema versions {missing}: run "
            "`xmppctl storage init`, or set create_schema = true in [storage.cassandra]"
        )


async def connect(options: Options):
    """A driver Cluster and a CqlSession on it (no keyspace selected yet)."""
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable
    from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
    from cassandra.query import tuple_factory

    consistency = consistency_level(options.consistency)
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=options.local_dc)),
        consistency_level=consistency,
        serial_consistency_level=serial_consistency_for(consistency),
        request_timeout=options.request_timeout,
        row_factory=tuple_factory,
    )
    auth = None
    if options.username is not None:
        auth = PlainTextAuthProvider(username=options.username, password=options.password)
    cluster = Cluster(
        contact_points=list(options.contact_points),
        port=options.port,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        auth_provider=auth,
        protocol_version=options.protocol_version,
        connect_timeout=options.connect_timeout,
        control_connection_timeout=options.connect_timeout,
    )
    try:
        session = await asyncio.to_thread(cluster.connect)
    except NoHostAvailable as error:
        await asyncio.to_thread(cluster.shutdown)
        raise StorageUnavailable(
            f"cannot reach Cassandra at {', '.join(options.contact_points)} port {options.port}: {error}"
        ) from None
    except BaseException:
        await asyncio.to_thread(cluster.shutdown)
        raise
    return cluster, CqlSession(session, timeout=options.request_timeout, consistency=options.consistency)


async def init_schema(options: Options) -> list[int]:
    """Create the keyspace if needed and apply the schema versions it lacks; returns
    the versions applied now. For ``xmppctl storage init``."""
    cluster, cql = await connect(options)
    try:
        await create_keyspace(cql, options.keyspace, options.replication)
        await cql.use_keyspace(options.keyspace)
        return await apply_schema(cql)
    finally:
        await asyncio.to_thread(cluster.shutdown)


def open_backend(options: Options, data_dir: str | None = None) -> CassandraBackend:
    options.check()
    return CassandraBackend(options, data_dir)
