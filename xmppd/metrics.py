"""Metrics of what the server does, in the Prometheus text exposition format 0.0.4 (served
at /metrics by xmppd/monitoring.py) and as totals for `xmppctl status`.

Every metric is declared once, in METRICS: its type, labels and help text. Counters and
histograms live in plain dicts keyed by (metric name, label values), so that counting on
the hot path (a stanza in, a stanza out) is one dict update; gauges are callbacks run at
scrape time. Storage latency is measured by `TimedBackend`, a thin proxy that
Server.open() puts around the storage backend (no store or extension knows about it);
`CountedMedia` counts the bytes of HTTP uploads going into and out of the media store.
"""

from __future__ import annotations

import bisect
import collections
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass

from xmppd.protocol.namespaces import NS_CLIENT
from xmppd.storage.interfaces import UnknownArchiveId

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds: from a cached SQLite read (well under a millisecond) to a Cassandra timeout.
QUEUE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
STORAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class Metric:
    kind: str  # counter | gauge | histogram
    labels: tuple[str, ...]
    help: str
    buckets: tuple[float, ...] = ()  # histograms: upper bounds, +Inf implied


CONNECTIONS_ACCEPTED = "xmppd_connections_accepted_total"
CONNECTIONS_OPEN = "xmppd_connections"
SESSIONS = "xmppd_sessions"
SESSIONS_HIBERNATING = "xmppd_sessions_hibernating"
SESSIONS_HELD_BACK = "xmppd_sessions_held_back"
STANZAS_RECEIVED = "xmppd_stanzas_received_total"
STANZAS_SENT = "xmppd_stanzas_sent_total"
AUTH_SUCCESSES = "xmppd_auth_successes_total"
AUTH_FAILURES = "xmppd_auth_failures_total"
OFFLINE_STORED = "xmppd_offline_messages_stored_total"
OFFLINE_DELIVERED = "xmppd_offline_messages_delivered_total"
OFFLINE_QUEUE_LENGTH = "xmppd_offline_queue_length"
STORAGE_SECONDS = "xmppd_storage_operation_seconds"
STORAGE_ERRORS = "xmppd_storage_errors_total"
UPLOAD_BYTES = "xmppd_upload_bytes_total"
LIMIT_REACHED = "xmppd_limit_reached_total"

METRICS = {
    CONNECTIONS_ACCEPTED: Metric(
        "counter",
        ("listener",),
        "Client connections accepted, by listener: "
        "starttls (the RFC 6120 port), direct_tls (XEP-0368), websocket (RFC 7395) or bosh (XEP-0206).",
    ),
    CONNECTIONS_OPEN: Metric("gauge", ("listener",), "Client connections open now, by listener."),
    SESSIONS: Metric("gauge", ("host",), "Bound client resources, hibernating ones included."),
    SESSIONS_HIBERNATING: Metric(
        "gauge", ("host",), "Sessions kept without a connection by XEP-0198 stream management, waiting to be resumed."
    ),
    SESSIONS_HELD_BACK: Metric(
        "gauge",
        ("host",),
        "Connected sessions that stanzas wait for: their XEP-0198 "
        "window is full, their output is over c2s.max_output_buffer, or a backlog drains.",
    ),
    STANZAS_RECEIVED: Metric("counter", ("kind",), "Stanzas received from bound clients, by kind."),
    STANZAS_SENT: Metric("counter", ("kind",), "Stanzas written to clients, by kind (resends included)."),
    AUTH_SUCCESSES: Metric("counter", ("mechanism",), "Successful SASL authentications, by mechanism."),
    AUTH_FAILURES: Metric("counter", ("mechanism",), "Failed SASL authentications, by mechanism."),
    OFFLINE_STORED: Metric("counter", (), "Messages stored for users with no available resource (XEP-0160)."),
    OFFLINE_DELIVERED: Metric("counter", (), "Stored offline messages delivered to a resource coming online."),
    OFFLINE_QUEUE_LENGTH: Metric(
        "histogram",
        (),
        "Length of the recipient's offline queue once a message "
        "joined it (the limit is offline.max_messages_per_user).",
        QUEUE_BUCKETS,
    ),
    STORAGE_SECONDS: Metric(
        "histogram",
        ("store", "operation"),
        "Duration of storage operations, by store (archive/<name>, keyvalue/<name> for named ones) and operation.",
        STORAGE_BUCKETS,
    ),
    STORAGE_ERRORS: Metric("counter", ("store", "operation"), "Storage operations that raised an error."),
    UPLOAD_BYTES: Metric(
        "counter",
        ("direction",),
        "Bytes of HTTP uploads (XEP-0363) through the media "
        "store: in (PUT) and out (GET; not those served by presigned S3 URLs).",
    ),
    LIMIT_REACHED: Metric(
        "counter",
        ("limit",),
        "Requests refused, streams closed or deliveries held back "
        "because a configured limit was reached, by limit (its config key, "
        "section.option).",
    ),
}

STANZA_KINDS = {f"{{{NS_CLIENT}}}{kind}": kind for kind in ("message", "presence", "iq")}
_RECEIVED = {tag: (STANZAS_RECEIVED, (kind,)) for tag, kind in STANZA_KINDS.items()}
_SENT = {tag: (STANZAS_SENT, (kind,)) for tag, kind in STANZA_KINDS.items()}

Gauge = Callable[[], dict[tuple[str, ...], float]]  # label values -> value


class Metrics:
    def __init__(self):
        # Stanza counters exist from the start, so that a rate over them is defined.
        self.counters: collections.Counter = collections.Counter(
            {key: 0 for key in (*_RECEIVED.values(), *_SENT.values())}
        )
        self.histograms: dict[tuple, list] = {}  # key -> [per-bucket counts, sum]
        self.gauges: dict[str, Gauge] = {}

    # ------------------------------------------------------------- recording

    def count(self, name: str, *labels: str, amount: float = 1) -> None:
        """Add to counter `name`; `labels` are the values of its declared labels, in order."""
        self.counters[(name, labels)] += amount

    def stanza_received(self, tag: str) -> None:
        self.counters[_RECEIVED[tag]] += 1

    def stanza_sent(self, tag: str) -> None:
        key = _SENT.get(tag)
        if key is not None:
            self.counters[key] += 1

    def histogram(self, name: str, labels: tuple[str, ...]) -> list:
        """The series of histogram `name` with these label values, [counts per bucket
        (+Inf last), sum], for a caller that observes into it itself (`observe`)."""
        key = (name, labels)
        entry = self.histograms.get(key)
        if entry is None:
            entry = self.histograms[key] = [[0] * (len(METRICS[name].buckets) + 1), 0.0]
        return entry

    def observe(self, name: str, labels: tuple[str, ...], value: float) -> None:
        observe(self.histogram(name, labels), METRICS[name].buckets, value)

    def gauge(self, name: str, callback: Gauge) -> None:
        """Compute gauge `name` with `callback` at each scrape."""
        self.gauges[name] = callback

    # ------------------------------------------------------------- reading

    def totals(self) -> dict[str, float]:
        """Each counter summed over its labels, by short name (`xmppctl status`)."""
        totals: dict[str, float] = {}
        for (name, _), value in self.counters.items():
            short = name.removeprefix("xmppd_").removesuffix("_total")
            totals[short] = totals.get(short, 0) + value
        return totals

    def render(self) -> str:
        """The text exposition format 0.0.4, one family per declared metric."""
        samples: dict[str, list] = collections.defaultdict(list)
        for (name, labels), value in self.counters.items():
            samples[name].append((labels, value))
        for name, callback in self.gauges.items():
            samples[name] = list(callback().items())
        lines = []
        for name, metric in METRICS.items():
            lines.append(f"# HELP {name} {_escape_help(metric.help)}")
            lines.append(f"# TYPE {name} {metric.kind}")
            if metric.kind == "histogram":
                for (family, labels), (counts, total) in sorted(self.histograms.items()):
                    if family == name:
                        lines += _histogram_lines(name, metric, labels, counts, total)
                continue
            found = sorted(samples.get(name, ()))
            if not found and not metric.labels:
                found = [((), 0)]
            lines += [f"{name}{_labels(metric.labels, labels)} {_number(value)}" for labels, value in found]
        return "\n".join(lines) + "\n"


def observe(series: list, buckets: tuple[float, ...], value: float) -> None:
    series[0][bisect.bisect_left(buckets, value)] += 1  # the first bucket whose bound is >= value
    series[1] += value


def _histogram_lines(name: str, metric: Metric, labels, counts, total) -> list[str]:
    lines, cumulative = [], 0
    for bound, count in zip((*metric.buckets, float("inf")), counts):
        cumulative += count
        le = _labels((*metric.labels, "le"), (*labels, _number(bound)))
        lines.append(f"{name}_bucket{le} {cumulative}")
    plain = _labels(metric.labels, labels)
    lines.append(f"{name}_sum{plain} {_number(total)}")
    lines.append(f"{name}_count{plain} {cumulative}")
    return lines


def _labels(names, values) -> str:
    if not names:
        return ""
    return "{" + ",".join(f'{name}="{_escape_value(str(value))}"' for name, value in zip(names, values)) + "}"


def _escape_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


# ----------------------------------------------------------------- storage


class TimedStore:
    """A store whose public coroutine methods observe their duration in STORAGE_SECONDS
    (and count their errors); anything else is the store's own attribute."""

    def __init__(self, store, label: str, metrics: Metrics):
        self._store = store
        self._label = label
        self._metrics = metrics

    def __getattr__(self, name: str):
        attribute = getattr(self._store, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(attribute):
            return attribute
        metrics, labels = self._metrics, (self._label, name)
        series, buckets, clock = metrics.histogram(STORAGE_SECONDS, labels), STORAGE_BUCKETS, time.perf_counter

        async def timed(*args, **kwargs):
            start = clock()
            try:
                return await attribute(*args, **kwargs)
            except UnknownArchiveId:  # an answer (item-not-found), not a failure
                raise
            except Exception:
                metrics.count(STORAGE_ERRORS, *labels)
                raise
            finally:
                observe(series, buckets, clock() - start)

        self.__dict__[name] = timed  # made once: later lookups do not reach __getattr__
        return timed


class TimedBackend:
    """The storage backend with every store wrapped in a TimedStore."""

    def __init__(self, backend, metrics: Metrics):
        self._backend = backend
        self._metrics = metrics
        for name in ("accounts", "rosters", "rooms", "pubsub", "uploads"):
            setattr(self, name, TimedStore(getattr(backend, name), name, metrics))
        self._named: dict[str, TimedStore] = {}

    def archive(self, name: str) -> TimedStore:
        return self._wrap_named("archive", name, self._backend.archive)

    def keyvalue(self, name: str) -> TimedStore:
        return self._wrap_named("keyvalue", name, self._backend.keyvalue)

    def _wrap_named(self, kind: str, name: str, open_store) -> TimedStore:
        label = f"{kind}/{name}"
        store = self._named.get(label)
        if store is None:
            store = self._named[label] = TimedStore(open_store(name), label, self._metrics)
        return store

    def __getattr__(self, name: str):
        return getattr(self._backend, name)  # start, close, archive_names, backend specifics


class CountedMedia:
    """The media store, counting the bytes written to it and read from it (UPLOAD_BYTES)."""

    def __init__(self, media, metrics: Metrics):
        self._media = media
        self._metrics = metrics

    async def write(self, key: str, chunks, size: int, content_type: str) -> None:
        await self._media.write(key, self._counted_in(chunks), size, content_type)

    async def read(self, key: str, start: int = 0, end: int | None = None):
        # An async generator of its own, closed (with the store's) when the caller closes it.
        source = self._media.read(key, start, end)
        try:
            async for chunk in source:
                self._metrics.count(UPLOAD_BYTES, "out", amount=len(chunk))
                yield chunk
        finally:
            await source.aclose()

    async def _counted_in(self, chunks):
        async for chunk in chunks:
            self._metrics.count(UPLOAD_BYTES, "in", amount=len(chunk))
            yield chunk

    def __getattr__(self, name: str):
        return getattr(self._media, name)  # size, delete, close, presigned URLs
