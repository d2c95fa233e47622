"""python -m bench --scenario archive: message archive insert and query throughput of
the storage backends, SQLite and Apache Cassandra side by side in one run.

The store is driven through its interface (``ArchiveStore.append``/``query``), as the
MAM, offline and MUC extensions drive it, without an XMPP server in between: what is
measured is the backend. Cassandra is a real single node started the way the tests
start it (tests/support/cassandra.py; ``XMPPD_TEST_CASSANDRA=host:port`` uses a running
one), in a keyspace made for the run; SQLite is a fresh file in a temporary directory.

The workload, the same on both: `messages` chat messages (about 400 bytes each, with a
UUIDv7 id as the server makes them) over 100 users and 20 contacts each, spread over
the last 7 days (several Cassandra time buckets per user), appended with 64 in flight.
Then the reads a MAM client makes: every user pages through the whole archive
forwards (50 a page, with the total count, as XEP-0313 answers), asks for the last
page, and for the last page of one contact (the "with" filter); 16 queries in flight.

Output: one JSON line per backend on stdout, a side-by-side table, and the same table
appended to bench/RESULTS.md with the date and the machine (replacing the previous
archive section; `recorded()` lets the server bench keep it, and what follows it, when
it rewrites the file).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import random
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from xmppd.ids import time_ordered_id
from xmppd.storage import open_backend
from xmppd.storage.interfaces import ArchivedStanza, ArchiveQuery
from xmppd.storage.sqlite import Options as SqliteOptions

from . import report
from .report import log

HEADING = "## Archive storage: SQLite and Cassandra"
MESSAGES = {"full": 20_000, "quick": 2_000}
USERS = 100
CONTACTS = 20
SPAN = 7 * 86400.0  # the messages' times cover the last week
PAGE = 50  # a MAM client's page
INSERTS_IN_FLIGHT = 64
QUERIES_IN_FLIGHT = 16
TIME_LIMIT = 600.0  # seconds for one backend's whole run
LOAD: list[float] = []  # 1-minute load averages seen around the runs
BACKENDS = ("sqlite", "cassandra")


def _payload(n: int, sender: str, to: str) -> bytes:
    return (
        f"<message xmlns='jabber:client' type='chat' id='m{n}' from='{sender}/phone' to='{to}'>"
        f"<body>Message number {n}: a line of chat of a typical length, with a little text.</body>"
        f"<origin-id xmlns='urn:xmpp:sid:0' id='{time_ordered_id()}'/>"
        f"<active xmlns='http://jabber.org/protocol/chatstates'/>"
        f"<markable xmlns='urn:xmpp:chat-markers:0'/></message>"
    ).encode()


def workload(messages: int, run: int) -> list[tuple[str, ArchivedStanza]]:
    """(owner, item) in the order they are appended; the owners are new in every run."""
    now = time.time()
    step = SPAN / messages
    items = []
    for n in range(messages):
        owner = f"r{run}u{n % USERS}@bench.example"
        contact = f"contact{(n * 7) % CONTACTS}@bench.example"
        items.append(
            (
                owner,
                ArchivedStanza(
                    id=time_ordered_id(), when=now - SPAN + n * step, with_=contact, payload=_payload(n, contact, owner)
                ),
            )
        )
    return items


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _timed(calls, in_flight: int) -> tuple[float, list[float], list]:
    """Run the calls with `in_flight` at once: (seconds, latencies in ms, results)."""
    semaphore = asyncio.Semaphore(in_flight)
    latencies: list[float] = []

    async def one(call):
        async with semaphore:
            began = time.perf_counter()
            result = await call()
            latencies.append((time.perf_counter() - began) * 1000)
            return result

    began = time.perf_counter()
    results = await asyncio.gather(*(one(call) for call in calls))
    return time.perf_counter() - began, latencies, results


async def measure(backend, messages: int, run: int) -> dict:
    """Insert, then query, through one started backend; the figures of one run."""
    store = backend.archive("archive")
    items = workload(messages, run)
    owners = sorted({owner for owner, _ in items})
    cpu = resource.getrusage(resource.RUSAGE_SELF)

    seconds, latencies, stored = await _timed(
        [(lambda owner=owner, item=item: store.append(owner, item)) for owner, item in items], INSERTS_IN_FLIGHT
    )
    if not all(stored) or sum([await store.count(owner) for owner in owners]) != messages:
        raise RuntimeError("not every message was stored once")
    figures = {
        "messages": messages,
        "insert_per_s": messages / seconds,
        "insert_p50_ms": statistics.median(latencies),
        "insert_p99_ms": _percentile(latencies, 0.99),
    }

    async def page_through(owner: str) -> tuple[int, int, list[float]]:
        pages, seen, after, latencies = 0, 0, None, []
        while True:
            began = time.perf_counter()
            page = await store.query(owner, ArchiveQuery(after=after, max=PAGE))
            latencies.append((time.perf_counter() - began) * 1000)
            pages, seen = pages + 1, seen + len(page.items)
            if page.complete:
                return pages, seen, latencies
            after = page.items[-1].id

    seconds, _, results = await _timed(
        [(lambda owner=owner: page_through(owner)) for owner in owners], QUERIES_IN_FLIGHT
    )
    if sum(seen for _, seen, _ in results) != messages:
        raise RuntimeError("paging forwards did not see every message once")
    page_latencies = [latency for _, _, latencies in results for latency in latencies]
    figures.update(
        {
            "query_pages_per_s": sum(pages for pages, _, _ in results) / seconds,
            "query_items_per_s": messages / seconds,
            "query_page_p50_ms": statistics.median(page_latencies),
            "query_page_p99_ms": _percentile(page_latencies, 0.99),
        }
    )

    _, latencies, _ = await _timed(
        [(lambda owner=owner: store.query(owner, ArchiveQuery(before="", max=PAGE))) for owner in owners],
        QUERIES_IN_FLIGHT,
    )
    figures["last_page_p50_ms"] = statistics.median(latencies)
    random.seed(run)
    _, latencies, _ = await _timed(
        [
            (lambda owner=owner, contact=contact: store.query(owner, ArchiveQuery(with_=contact, before="", max=PAGE)))
            for owner, contact in [(owner, f"contact{random.randrange(CONTACTS)}@bench.example") for owner in owners]
        ],
        QUERIES_IN_FLIGHT,
    )
    figures["with_filter_page_p50_ms"] = statistics.median(latencies)
    # The second page without its total (Cassandra's archive_query_count = false).
    second = {owner: (await store.query(owner, ArchiveQuery(max=PAGE, count=False))).items[-1].id for owner in owners}
    _, latencies, _ = await _timed(
        [
            (lambda owner=owner: store.query(owner, ArchiveQuery(after=second[owner], max=PAGE, count=False)))
            for owner in owners
        ],
        QUERIES_IN_FLIGHT,
    )
    figures["page_without_count_p50_ms"] = statistics.median(latencies)
    used = resource.getrusage(resource.RUSAGE_SELF)
    figures["client_cpu_s"] = used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime
    return {name: round(value, 3) if isinstance(value, float) else value for name, value in figures.items()}


@contextlib.asynccontextmanager
async def open_store(kind: str, scratch: Path, node: tuple[str, int] | None):
    """A started backend of `kind` with an empty archive for the run."""
    if kind == "sqlite":
        backend = open_backend("sqlite", SqliteOptions(), str(scratch))
    else:
        if node is None:
            raise RuntimeError("no Cassandra node")
        from xmppd.storage.cassandra import Options as CassandraOptions  # an optional extra

        log("archive / cassandra: making a keyspace (not measured)")
        options = CassandraOptions(contact_points=(node[0],), port=node[1], keyspace=f"bench_archive_{os.getpid()}")
        backend = open_backend("cassandra", options, None)
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


def version(kind: str) -> str:
    if kind == "sqlite":
        import sqlite3

        return f"SQLite {sqlite3.sqlite_version}"
    from tests.support.cassandra import CASSANDRA_VERSION, HEAP, JVM_SERVER

    return f"Apache Cassandra {CASSANDRA_VERSION}, one node ({' '.join(HEAP + JVM_SERVER)})"


def table(results: dict) -> str:
    lines = ["| figure | better | SQLite | Cassandra | Cassandra/SQLite |", "|---|---|---:|---:|---:|"]
    sqlite, cassandra = results.get("sqlite", {}), results.get("cassandra", {})
    keys = [
        key
        for key in {**sqlite, **cassandra}
        if key not in report.SKIP and report.is_number(sqlite.get(key, cassandra.get(key)))
    ]
    for key in keys:
        a, b = sqlite.get(key), cassandra.get(key)
        ratio = f"{b / a:.2f}" if report.direction(key) and report.is_number(a) and report.is_number(b) and a else "—"
        lines.append(f"| {key} | {report.direction(key) or ''} | {report.fmt(a)} | {report.fmt(b)} | {ratio} |")
    for kind in BACKENDS:
        if "error" in results.get(kind, {}):
            lines.append(f"\n{kind}: error: {results[kind]['error']}")
    return "\n".join(lines)


def section(results: dict, runs: int, messages: int, command: str) -> str:
    machine = report.machine()
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return "\n".join(
        [
            HEADING,
            "",
            f"Run on {now} with `{command}` (bench/archive.py): {messages:,} messages over {USERS} users, "
            f"appended {INSERTS_IN_FLIGHT} at a time, then read back in pages of {PAGE} "
            f"({QUERIES_IN_FLIGHT} queries at a time); medians of {runs} run(s).",
            "",
            f"- Machine: {machine['nproc']} CPUs, {machine['cpu']}, Linux {machine['kernel']}, "
            f"Python {machine['python']}, {machine['loop']}",
            f"- Backends: {version('sqlite')} (WAL, group commit) in this process's threads; "
            f"{version('cassandra')} on the same machine, consistency LOCAL_QUORUM of one replica",
            "- `client_cpu_s` is this process's CPU time (the Cassandra node's own CPU is not in it).",
            "- Reading it: SQLite answers from this process's threads; every Cassandra operation is",
            "  several requests through the Python driver to a JVM on the same two CPUs (an append: the",
            "  id lookup that makes it idempotent, four writes, the id row; a page: the cursor lookup,",
            "  the bucket index, the bucket slices and, for the total, one COUNT per bucket). What",
            "  Cassandra buys is a cluster of nodes and no single file, not speed on one machine.",
            f"- Load average (1 min) around the runs: min {min(LOAD, default=0):.1f}, max {max(LOAD, default=0):.1f} "
            f"on {machine['nproc']} CPUs"
            + (
                ": the machine was busy with other work, the figures are low and noisy."
                if max(LOAD, default=0) > (machine["nproc"] or 1)
                else "."
            ),
            "",
            table(results),
            "",
        ]
    )


def recorded(path: str | os.PathLike) -> str:
    """The archive section of an existing results file ("" if none), to keep it when
    the file is rewritten."""
    try:
        text = Path(path).read_text()
    except OSError:
        return ""
    index = text.find(HEADING)
    return "" if index < 0 else "\n" + text[index:]


async def run_all(messages: int, runs: int, node: tuple[str, int] | None) -> dict:
    results = {}
    scratch = Path(tempfile.mkdtemp(prefix="xmppd-bench-archive-"))
    try:
        for kind in BACKENDS:
            per_run = []
            try:
                async with asyncio.timeout(TIME_LIMIT), open_store(kind, scratch / kind, node) as backend:
                    log(f"archive / {kind}: warming up with {messages // 10} messages (not measured)")
                    await measure(backend, messages // 10, run=0)  # the JVM's JIT, caches
                    for run in range(1, runs + 1):
                        log(f"archive / {kind}: run {run} of {runs}, {messages} messages")
                        LOAD.append(os.getloadavg()[0])
                        per_run.append(await measure(backend, messages, run))
                        LOAD.append(os.getloadavg()[0])
            except Exception as error:  # reported; the other backend carries on
                per_run.append({"error": repr(error)[:500]})
            results[kind] = report.median_of_runs(per_run)
            print(json.dumps({"scenario": "archive", "backend": kind, **results[kind]}), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return results


def run(args, command: str) -> int:
    """The archive scenario with the options of ``python -m bench``."""
    from tests.support.cassandra import JVM_SERVER, CassandraUnavailable, cassandra_node

    messages = MESSAGES["quick" if args.quick else "full"]
    runs = args.runs or 1
    with contextlib.ExitStack() as stack:
        log("archive: starting a Cassandra node (tests/support/cassandra.py, server JVM settings)")
        try:
            node = stack.enter_context(cassandra_node(tuning=JVM_SERVER))
        except CassandraUnavailable as error:
            log(f"archive: {error}")
            node = None
        results = asyncio.run(run_all(messages, runs, node))
    text = section(results, runs, messages, command)
    print()
    print(text)
    path = args.results or (None if args.quick else str(Path(__file__).parent / "RESULTS.md"))
    if path:
        report.record_section(Path(path), HEADING, text)
        log(f"archive figures written to {path}")
    return 0 if all("error" not in figures for figures in results.values()) else 1
