"""A real, single Apache Cassandra node for the storage tests.

The node is Apache Cassandra itself (``org.apache.cassandra:cassandra-all`` from Maven
Central), never a fake:

1. ``resolve_cassandra()`` runs Maven once on ``tests/support/cassandra/pom.xml`` and
   copies the release with its runtime dependencies into a cache outside the
   repository (``$XDG_CACHE_HOME/xmppd/cassandra-<version>/lib``, ``~/.cache`` by
   default). Later runs use the cache and never start Maven.
2. ``cassandra_node()`` writes a minimal ``cassandra.yaml`` into a temporary directory
   (every address 127.0.0.1, free ports, data in the temporary directory, a single token
   and no bootstrap so that start-up is quick), starts ``CassandraDaemon`` in the
   background with the JVM options Cassandra 5.0 needs on Java 17, waits until a real
   CQL query succeeds, yields ``(host, port)`` and stops the node on exit.

``XMPPD_TEST_CASSANDRA=host:port`` makes both helpers use that cluster instead and
start nothing. When the node cannot be started, ``CassandraUnavailable`` carries the
reason (and the tail of the node's log); tests that need the node fail with it.

3. ``contract_backend(tmp_path)`` is what tests/storage/conftest.py calls: backends in
   one keyspace per run, emptied (TRUNCATE of the tables that hold rows) for each new
   tmp_path.

Environment knobs: ``XMPPD_CASSANDRA_VERSION`` (a 5.0.x release),
``XMPPD_CASSANDRA_START_TIMEOUT`` (seconds, default 180), ``XMPPD_CASSANDRA_KEEP``
(keep the temporary directory for a post-mortem), ``XMPPD_CASSANDRA_JVM_OPTS`` (extra
JVM options), ``XMPPD_TEST_CASSANDRA_KEYSPACE`` (default ``xmppd_test``; give each
concurrent run on a shared external cluster its own).

``python -m tests.support.cassandra`` starts a node, prints how long resolving and
starting took, and stops it; ``... serve`` keeps it running for XMPPD_TEST_CASSANDRA.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.maven import MavenUnavailable, cache_root, resolve_jars

CASSANDRA_VERSION = os.environ.get("XMPPD_CASSANDRA_VERSION", "5.0.9")
ENV_EXTERNAL = "XMPPD_TEST_CASSANDRA"
POM = Path(__file__).with_name("cassandra") / "pom.xml"
START_TIMEOUT = float(os.environ.get("XMPPD_CASSANDRA_START_TIMEOUT", "180"))
HEAP = ("-Xms512m", "-Xmx1g")
LOOPBACK = "127.0.0.1"
# A throw-away node on a small machine, not a production JVM: the serial collector
# and the C1 compiler only cost far less CPU while the node starts and warms up (the
# measured start is about a third faster on two cores) and are fast enough for tests.
JVM_TUNING = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:+ExitOnOutOfMemoryError")
# A node that is measured (bench/archive.py): the JVM's own server defaults (G1, C2).
JVM_SERVER = ("-XX:+UseG1GC", "-XX:+ExitOnOutOfMemoryError")

# What conf/jvm17-server.options of Cassandra 5.0 opens and exports for Java 17:
# Cassandra reaches into JDK internals (direct buffers, unsafe, class loading, JMX).
_JAVA17_MODULE_ACCESS = {
    "--add-exports": (
        "java.base/jdk.internal.misc",
        "java.base/jdk.internal.ref",
        "java.base/sun.nio.ch",
        "java.management.rmi/com.sun.jmx.remote.internal.rmi",
        "java.rmi/sun.rmi.registry",
        "java.rmi/sun.rmi.server",
        "java.sql/java.sql",
        "java.base/java.lang.ref",
        "jdk.unsupported/sun.misc",
        "jdk.compiler/com.sun.tools.javac.file",
        "jdk.attach/sun.tools.attach",
    ),
    "--add-opens": (
        "java.base/java.lang.module",
        "java.base/jdk.internal.loader",
        "java.base/jdk.internal.ref",
        "java.base/jdk.internal.reflect",
        "java.base/jdk.internal.math",
        "java.base/jdk.internal.module",
        "java.base/jdk.internal.util.jar",
        "jdk.management/com.sun.management.internal",
        "java.base/sun.nio.ch",
        "java.base/java.io",
        "java.base/java.nio",
        "java.base/java.lang",
        "java.base/java.lang.reflect",
        "java.base/java.util",
        "java.base/java.util.concurrent",
        "java.base/java.util.concurrent.atomic",
        "java.base/java.math",
        "java.base/java.net",
        "jdk.compiler/com.sun.tools.javac",
    ),
}


class CassandraUnavailable(RuntimeError):
    """No Cassandra node could be resolved or started; the message says why."""


@dataclass(frozen=True)
class Timings:
    resolve_seconds: float
    start_seconds: float
    from_cache: bool


last_timings: Timings | None = None


# ---------------------------------------------------------------- resolving the release


def resolve_cassandra(version: str = CASSANDRA_VERSION) -> tuple[Path, bool]:
    """The directory of Cassandra's jars, resolving it with Maven if not cached;
    returns ``(lib_dir, from_cache)`` (tests/support/maven.py)."""
    try:
        return resolve_jars(
            POM, cache_root() / f"cassandra-{version}", f"cassandra-all-{version}.jar", {"cassandra.version": version}
        )
    except MavenUnavailable as error:
        raise CassandraUnavailable(str(error)) from None


# ---------------------------------------------------------------- configuration


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def write_config(root: Path, native_port: int, storage_port: int) -> Path:
    """A cassandra.yaml for one throw-away node that starts fast on a small machine."""
    for sub in ("data", "commitlog", "saved_caches", "hints", "cdc_raw", "logs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    config = f"""\
cluster_name: xmppd-tests
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
num_tokens: 1
initial_token: 0
auto_bootstrap: false
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "{LOOPBACK}:{storage_port}"
listen_address: {LOOPBACK}
rpc_address: {LOOPBACK}
storage_port: {storage_port}
start_native_transport: true
native_transport_port: {native_port}
data_file_directories:
  - {root / "data"}
commitlog_directory: {root / "commitlog"}
saved_caches_directory: {root / "saved_caches"}
hints_directory: {root / "hints"}
cdc_raw_directory: {root / "cdc_raw"}
commitlog_sync: periodic
commitlog_sync_period: 10000ms
commitlog_segment_size: 8MiB
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
# A throw-away node: TRUNCATE and DROP without snapshots keep the tests fast.
auto_snapshot: false
snapshot_on_duplicate_row_detection: false
incremental_backups: false
hinted_handoff_enabled: false
dynamic_snitch: false
concurrent_reads: 4
concurrent_writes: 4
concurrent_counter_writes: 4
concurrent_compactors: 1
memtable_heap_space: 128MiB
memtable_offheap_space: 128MiB
key_cache_size: 8MiB
counter_cache_size: 0MiB
prepared_statements_cache_size: 8MiB
disk_failure_policy: stop
commit_failure_policy: stop
read_request_timeout: 10000ms
write_request_timeout: 10000ms
range_request_timeout: 20000ms
truncate_request_timeout: 60000ms
request_timeout: 20000ms
"""
    path = root / "cassandra.yaml"
    path.write_text(config)
    (root / "logback.xml").write_text(f"""\
<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>{root / "logs" / "system.log"}</file>
    <encoder><pattern>%-5level [%thread] %date{{ISO8601}} %logger{{0}}: %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="FILE"/></root>
</configuration>
""")
    return path


def java_command(lib: Path, root: Path, config: Path, tuning: tuple[str, ...] = JVM_TUNING) -> list[str]:
    java = shutil.which("java")
    if java is None:
        raise CassandraUnavailable("java is not installed: cannot start Cassandra")
    command = [
        java,
        *HEAP,
        "-Xss512k",
        *tuning,
        "-Djdk.attach.allowAttachSelf=true",
        "-Djava.net.preferIPv4Stack=true",
        "-Dio.netty.tryReflectionSetAccessible=true",
    ]
    command += os.environ.get("XMPPD_CASSANDRA_JVM_OPTS", "").split()
    for flag, targets in _JAVA17_MODULE_ACCESS.items():
        for target in targets:
            command += [flag, f"{target}=ALL-UNNAMED"]
    command += [
        f"-Dcassandra.config=file://{config}",
        f"-Dcassandra.storagedir={root}",
        f"-Dcassandra.logdir={root / 'logs'}",
        f"-Dlogback.configurationFile=file://{root / 'logback.xml'}",
        "-Dcassandra-foreground=yes",
        # Single node, fresh data: nothing to wait for, nothing to gossip about.
        "-Dcassandra.skip_wait_for_gossip_to_settle=0",
        "-Dcassandra.ring_delay_ms=1000",
        "-Dcassandra.load_ring_state=false",
        "-Dcassandra.initial_token=0",
        "-Dcassandra.superuser_setup_delay_ms=0",
        "-Dcassandra.skip_schema_check=true",
        "-cp",
        f"{lib}/*",
        "org.apache.cassandra.service.CassandraDaemon",
    ]
    return command


# ---------------------------------------------------------------- running a node


def _external() -> tuple[str, int] | None:
    value = os.environ.get(ENV_EXTERNAL, "").strip()
    if not value:
        return None
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise CassandraUnavailable(f"{ENV_EXTERNAL}={value!r} is not host:port")
    return host, int(port)


def wait_for_cql(
    host: str, port: int, deadline: float, process: subprocess.Popen | None = None, root: Path | None = None
) -> None:
    """Block until ``SELECT release_version FROM system.local`` answers."""
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise CassandraUnavailable(
                f"Cassandra exited with status {process.returncode} during start-up" + _log_tail(root)
            )
        try:
            with socket.create_connection((host, port), timeout=1):
                pass
        except OSError as error:
            last_error = error
            time.sleep(0.25)
            continue
        try:
            _query_release_version(host, port)
            return
        except Exception as error:  # the port opens a moment before CQL is usable
            last_error = error
            time.sleep(0.5)
    raise CassandraUnavailable(
        f"Cassandra at {host}:{port} did not answer CQL in time (last error: {last_error!r})" + _log_tail(root)
    )


def _query_release_version(host: str, port: int) -> str:
    from cassandra.cluster import Cluster

    cluster = Cluster([host], port=port, connect_timeout=5, control_connection_timeout=5, protocol_version=5)
    try:
        session = cluster.connect()
        return session.execute("SELECT release_version FROM system.local").one()[0]
    finally:
        cluster.shutdown()


def _log_tail(root: Path | None, lines: int = 40) -> str:
    """The end of the node's logs, for the message of a failed start."""
    if root is None:
        return ""
    text = []
    for log in (root / "logs" / "console.log", root / "logs" / "system.log"):
        if log.exists() and log.stat().st_size:
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            text.append(f"\n--- last lines of {log} ---\n" + "\n".join(tail))
    return "".join(text)


# Runs the JVM as its child and kills it when our end of its stdin closes, which also
# happens when the test process dies without cleaning up (kill -9, a crash): no
# orphaned 1 GB JVM stays behind on the machine, and its directory goes too (unless
# XMPPD_CASSANDRA_KEEP). SIGTERM is passed on.
_GUARD = """
import os, shutil, signal, subprocess, sys, threading
child = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL)
signal.signal(signal.SIGTERM, lambda *_: child.terminate())
orphaned = threading.Event()
def watch():
    sys.stdin.buffer.read()
    orphaned.set()
    if child.poll() is None:
        child.kill()
threading.Thread(target=watch, daemon=True).start()
code = child.wait()
if orphaned.is_set() and not os.environ.get("XMPPD_CASSANDRA_KEEP"):
    shutil.rmtree(os.getcwd(), ignore_errors=True)
sys.exit(code if code >= 0 else 128 - code)
"""


@dataclass
class _Node:
    process: subprocess.Popen
    root: Path
    port: int


def _start_node(lib: Path, tuning: tuple[str, ...] = JVM_TUNING) -> _Node:
    """Start one node and wait for CQL; a port taken in the meantime gets one retry."""
    for attempt in (1, 2):
        root = Path(tempfile.mkdtemp(prefix="xmppd-cassandra-"))
        native_port, storage_port = free_port(), free_port()
        while storage_port == native_port:
            storage_port = free_port()
        config = write_config(root, native_port, storage_port)
        with open(root / "logs" / "console.log", "wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-c", _GUARD, *java_command(lib, root, config, tuning)],
                cwd=root,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        node = _Node(process, root, native_port)
        try:
            wait_for_cql(LOOPBACK, native_port, time.monotonic() + START_TIMEOUT, process, root)
            return node
        except CassandraUnavailable as error:
            _discard(node)
            if attempt == 2 or "already in use" not in str(error):
                raise
    raise AssertionError("unreachable")


def _discard(node: _Node) -> None:
    keep = bool(os.environ.get("XMPPD_CASSANDRA_KEEP"))
    # A throw-away node needs no clean shutdown (flushing takes seconds): kill it,
    # unless its directory is kept for a look afterwards.
    _stop(node.process, grace=20.0 if keep else 0.0)
    if keep:
        print(f"kept Cassandra directory {node.root}")
    else:
        shutil.rmtree(node.root, ignore_errors=True)


@contextlib.contextmanager
def cassandra_node(version: str = CASSANDRA_VERSION, tuning: tuple[str, ...] = JVM_TUNING) -> Iterator[tuple[str, int]]:
    """Start one real Cassandra node for the duration of the block; yield (host, port)."""
    global last_timings
    external = _external()
    if external is not None:
        wait_for_cql(*external, deadline=time.monotonic() + 30)
        yield external
        return
    began = time.monotonic()
    lib, from_cache = resolve_cassandra(version)
    resolved = time.monotonic()
    node = _start_node(lib, tuning)
    try:
        last_timings = Timings(resolved - began, time.monotonic() - resolved, from_cache)
        yield LOOPBACK, node.port
    finally:
        _discard(node)


def _stop(process: subprocess.Popen, grace: float) -> None:
    """Stop the guard and its JVM: SIGTERM (passed on) when there is time for a clean
    shutdown, else closing the guard's stdin, which kills the JVM at once."""
    if process.poll() is None and grace > 0:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    if process.stdin is not None and not process.stdin.closed:
        process.stdin.close()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()  # the guard itself hangs: the JVM goes with our stdin pipe
        process.wait()


# ---------------------------------------------------------------- one node per test run

_shared_lock = threading.Lock()
_shared: tuple[str, int] | CassandraUnavailable | None = None
_shared_stack: contextlib.ExitStack | None = None


def shared_node() -> tuple[str, int]:
    """The node shared by the whole test run: started on first use, stopped at exit.

    A failure to start is remembered, so every test that needs the node fails at once
    with the same reason instead of waiting for another start-up.
    """
    global _shared, _shared_stack
    with _shared_lock:
        if _shared is None:
            stack = contextlib.ExitStack()
            try:
                _shared = stack.enter_context(cassandra_node())
            except CassandraUnavailable as error:
                _shared = error
            except Exception as error:  # noqa: BLE001 - report, never skip
                _shared = CassandraUnavailable(f"could not start Cassandra: {error!r}")
            else:
                _shared_stack = stack
                atexit.register(stop_shared_node)
        if isinstance(_shared, CassandraUnavailable):
            raise CassandraUnavailable(str(_shared))
        return _shared


def stop_shared_node() -> None:
    global _shared, _shared_stack
    with _shared_lock:
        if _shared_stack is not None:
            _shared_stack.close()
        _shared_stack = None
        _shared = None


# ---------------------------------------------------------------- backends for the tests

_admin = None  # (cluster, CqlSession) shared by the whole run
_emptied_for: set[str] = set()


def keyspace_for_tests() -> str:
    """The keyspace of the test run (XMPPD_TEST_CASSANDRA_KEYSPACE, default xmppd_test);
    on a shared external cluster give each concurrent run its own."""
    return os.environ.get("XMPPD_TEST_CASSANDRA_KEYSPACE", "xmppd_test")


def options_for_tests(**overrides):
    """Backend options for the run's node and keyspace (starts the node if needed)."""
    from xmppd.storage.cassandra import Options

    host, port = shared_node()
    overrides.setdefault("keyspace", keyspace_for_tests())
    return Options(contact_points=(host,), port=port, **overrides)


async def contract_backend(tmp_path, **overrides):
    """A new, not yet started Cassandra backend for the contract suite.

    The run shares one node and one keyspace (creating a keyspace costs seconds on
    Cassandra); the first call for a tmp_path empties every table that holds rows
    (TRUNCATE of those tables only, concurrently), later calls with the same tmp_path
    see the same data, as conftest.make_backend promises.
    """
    from xmppd.storage.cassandra import open_backend

    options = await asyncio.to_thread(options_for_tests, **overrides)
    if str(tmp_path) not in _emptied_for:
        await empty_keyspace(options)
        _emptied_for.add(str(tmp_path))
    return open_backend(options, str(tmp_path))


async def admin_session(options):
    """One connection for schema set-up and cleaning, made once per run."""
    global _admin
    from xmppd.storage.cassandra import connect, init_schema

    if _admin is None:
        await init_schema(options)
        cluster, cql = await connect(options)
        await cql.use_keyspace(options.keyspace)
        _admin = (cluster, cql)
        atexit.register(cluster.shutdown)
    return _admin[1]


async def empty_keyspace(options) -> list[str]:
    """TRUNCATE the tables of the test keyspace that hold any row; returns their names."""
    cql = await admin_session(options)
    tables = [
        name
        for (name,) in await cql.rows(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?", (options.keyspace,)
        )
        if name != "schema_version"
    ]
    # A one-row probe per table is a few milliseconds; a TRUNCATE is ~0.1 s (it flushes).
    probes = await asyncio.gather(*(cql.execute(f"SELECT * FROM {table} LIMIT 1") for table in tables))
    dirty = [table for table, probe in zip(tables, probes) if probe.current_rows]
    await asyncio.gather(*(cql.execute_ddl(f"TRUNCATE {table}") for table in dirty))
    return dirty


# ---------------------------------------------------------------- xmppd on the node


@pytest.fixture(scope="session")
def cassandra() -> tuple[str, int]:
    """(host, port) of the run's one Cassandra node, the node the storage suite uses too
    (started on first use); a node that cannot start fails the test with the reason."""
    return shared_node()


_keyspaces = iter(range(1, 1 << 30))


def new_keyspace(label: str) -> str:
    """A keyspace name of its own for one xmppd (or one copy) of this run."""
    return f"{keyspace_for_tests()}_{label}_{os.getpid()}_{next(_keyspaces)}"[:48]


def cassandra_section(keyspace: str, **options) -> str:
    """The TOML section [storage.cassandra] for the run's node and `keyspace`."""
    host, port = shared_node()
    extra = "".join(f"{key} = {_toml(value)}\n" for key, value in options.items())
    return f'[storage.cassandra]\ncontact_points = ["{host}"]\nport = {port}\nkeyspace = "{keyspace}"\n{extra}'


def xmppd_storage_config(keyspace: str, **options) -> str:
    """The TOML that puts an xmppd's every store on the run's node, in `keyspace`
    (created at start-up unless create_schema = false is among `options`)."""
    return '[storage]\ndefault = "cassandra"\n\n' + cassandra_section(keyspace, **options)


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f'"{value}"' if isinstance(value, str) else str(value)


async def open_keyspace(keyspace: str):
    """A started backend on an existing keyspace of the run's node (close it after)."""
    from xmppd.storage.cassandra import open_backend

    options = await asyncio.to_thread(options_for_tests, keyspace=keyspace, create_schema=False)
    backend = open_backend(options)
    await backend.start()
    return backend


def main(argv: list[str]) -> None:
    """``python -m tests.support.cassandra [serve]``: start a node, print its timings;
    with ``serve``, keep it running until interrupted (for XMPPD_TEST_CASSANDRA)."""
    began = time.monotonic()
    with cassandra_node() as (host, port):
        print(f"Cassandra {_query_release_version(host, port)} at {host}:{port}; {last_timings}", flush=True)
        if argv[1:2] == ["serve"]:
            print(f"export {ENV_EXTERNAL}={host}:{port}", flush=True)
            stopped = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stopped.set())
            try:
                stopped.wait()
            except KeyboardInterrupt:
                pass
    print(f"total with shutdown: {time.monotonic() - began:.1f}s")


if __name__ == "__main__":
    main(sys.argv)
