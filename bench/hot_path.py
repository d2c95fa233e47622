"""python -m bench --scenario hot_path: where the microseconds of one message go inside
xmppd, with the archive off and on (issue 16's profile of the hot paths).

An xmppd Server runs in this process on a fresh SQLite file (synchronous = "full", the
default), with two sessions whose connections keep what is written to them (no network,
no load generator: the server's own work only). Alice sends `messages` chat messages to
Bob's bare JID, 256 in flight at most (as a client with a XEP-0198 window), and the run
waits for every write the messages started. For each extension set:

- CPU per message of the whole process and of the SQLite writer thread alone;
- the time per message inside each stanza handler (the event bus's `pre-message/*` and
  `message/*` chains), which says what archiving one message costs and where.

Each figure is the minimum over the runs (the least disturbed by the rest of the
machine). Output: a table on stdout, recorded in bench/RESULTS.md under its heading.
"""

from __future__ import annotations

import asyncio
import functools
import tempfile
import time
from collections import Counter
from pathlib import Path

from lxml import etree

from xmppd import config
from xmppd.accounts import create_user
from xmppd.protocol.jid import JID
from xmppd.protocol.stanza import MESSAGE, make_element, sub_element
from xmppd.server import Server
from xmppd.session import Session
from xmppd.storage.sqlite import database

from . import report
from .report import log

HEADING = "## Hot path: CPU per message inside xmppd"
SETS = {
    "no archive": ["presence", "roster"],
    "archive (mam)": ["presence", "roster", "mam"],
    "make run defaults": [],  # every bundled extension
}
MESSAGES = {"full": 5000, "quick": 500}
IN_FLIGHT = 256
RUNS = {"full": 5, "quick": 1}


class Wire:
    """A connection that takes everything at once and keeps nothing."""

    peer = "bench"
    congested = False
    unsent = 0

    def __init__(self):
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += 1

    def close(self, condition=None, text=None) -> None:
        pass

    def drop(self) -> None:
        pass

    async def drained(self) -> None:
        pass


class WriterClock:
    """CPU time of the SQLite writer thread, read around each group commit."""

    def __init__(self):
        self.seconds = 0.0
        self._commit = database.Database._commit_batch

    def __enter__(self):
        clock, commit = self, self._commit

        def timed(db, conn, loop, batch):
            started = time.thread_time()
            try:
                commit(db, conn, loop, batch)
            finally:
                clock.seconds += time.thread_time() - started

        database.Database._commit_batch = timed
        return self

    def __exit__(self, *exc):
        database.Database._commit_batch = self._commit


def time_handlers(host) -> Counter:
    """Wrap the message handlers of `host`'s bus to sum the time spent in each."""
    spent: Counter = Counter()

    def timed(name, handler):
        @functools.wraps(handler)
        async def wrapper(event):
            started = time.perf_counter()
            try:
                return await handler(event)
            finally:
                spent[name] += time.perf_counter() - started

        return wrapper

    for event, chain in host.bus._handlers.items():
        if event.startswith(("pre-message/", "message/")):
            chain[:] = [
                (priority, order, timed(f"{event} {handler.__qualname__}", handler))
                for priority, order, handler in chain
            ]
    return spent


def chat(to: str, n: int) -> etree._Element:
    message = make_element(MESSAGE, {"to": to, "type": "chat", "id": f"m{n}"})
    sub_element(message, "{jabber:client}body", text=f"Message number {n}: a line of chat of a typical length.")
    return message


async def one_run(extensions: list[str], messages: int) -> dict:
    with tempfile.TemporaryDirectory() as data_dir:
        server = Server(
            config.parse({"server": {"data_dir": data_dir, "extensions": extensions, "log_level": "warning"}}, "bench")
        )
        await server.open()
        try:
            host = server.hosts["localhost"]
            for user in ("alice", "bob"):
                await create_user(host, user, "secret")
            sessions = []
            for jid in ("alice@localhost/phone", "bob@localhost/phone"):
                session = Session(host, JID.parse(jid), Wire())
                session.available = True
                host.add_session(session)
                sessions.append(session)
            alice, bob = sessions

            async def send(count: int, first: int) -> None:
                pending: list = []
                for n in range(first, first + count):
                    pending += await server.router.from_client(alice, chat("bob@localhost", n))
                    if len(pending) >= IN_FLIGHT:
                        await asyncio.gather(*pending)
                        pending = []
                await asyncio.gather(*pending)

            await send(min(300, messages), 0)  # warm: caches, first batches
            spent = time_handlers(host)
            with WriterClock() as writer:
                cpu, wall = time.process_time(), time.perf_counter()
                await send(messages, 10_000_000)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            return {
                "cpu_us": 1e6 * cpu / messages,
                "writer_us": 1e6 * writer.seconds / messages,
                "wall_us": 1e6 * wall / messages,
                "handlers": {name: 1e6 * seconds / messages for name, seconds in spent.items()},
            }
        finally:
            await server.stop()


def run(args, command: str) -> int:
    size = "quick" if args.quick else "full"
    runs = args.runs or RUNS[size]
    results = {}
    for name, extensions in SETS.items():
        best: dict = {}
        for _ in range(runs):
            result = asyncio.run(one_run(extensions, MESSAGES[size]))
            for key in ("cpu_us", "writer_us", "wall_us"):
                best[key] = min(best.get(key, result[key]), result[key])
            for handler, value in result["handlers"].items():
                best.setdefault("handlers", {})[handler] = min(best.get("handlers", {}).get(handler, value), value)
        results[name] = best
        log(f"hot_path {name}: {best['cpu_us']:.1f} us CPU per message")
    text = table(results, command, MESSAGES[size], runs)
    print(text)
    path = args.results or (None if args.quick else str(Path(__file__).parent / "RESULTS.md"))
    if path:
        report.record_section(Path(path), HEADING, text)
        log(f"hot_path figures written to {path}")
    return 0


def table(results: dict, command: str, messages: int, runs: int) -> str:
    lines = [
        HEADING,
        "",
        f"`{command}`: {messages} messages alice -> bob (bare JID), in-process, SQLite "
        f"synchronous = full; minimum of {runs} runs; µs per message.",
        "",
        "| extensions | CPU (process) | of which SQLite writer | wall |",
        "|---|---:|---:|---:|",
    ]
    for name, best in results.items():
        lines.append(f"| {name} | {best['cpu_us']:.1f} | {best['writer_us']:.1f} | {best['wall_us']:.1f} |")
    for name, best in results.items():
        lines += ["", f"Time inside the message handlers, {name} (µs per message, the largest first):", ""]
        for handler, value in sorted(best.get("handlers", {}).items(), key=lambda item: -item[1])[:8]:
            lines.append(f"- {value:.1f} `{handler}`")
    return "\n".join(lines) + "\n"
