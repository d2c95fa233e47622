"""Observability without a network: the log formatters (one line per event, values quoted,
stanzas redacted), the metrics registry and its exposition, the storage and media
proxies, /health's answers when storage stalls or fails or the server stops, the
/metrics allow list, and sd_notify."""

import asyncio
import json
import logging
import socket
import sys
from contextlib import aclosing
from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request

from xmppd import config, logs, metrics, monitoring, systemd
from xmppd.metrics import CountedMedia, Metrics, TimedStore
from xmppd.protocol.jid import JID
from xmppd.protocol.stanza import MESSAGE, make_element, sub_element
from xmppd.server import Server
from xmppd.session import Session
from xmppd.storage.interfaces import UnknownArchiveId

SECRET_BODY = "Marmalade-Kestrel-8127"


def record(message, *args, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("xmppd.test", logging.INFO, __file__, 1, message, args, exc_info)


# ------------------------------------------------------------------ logs


def test_values_with_spaces_quotes_and_newlines_stay_one_field_of_one_line():
    entry = record("event=connection-lost peer=%s error=%s count=%d", "::1", 'reset "by"\npeer', 3)
    line = logs.KeyValueFormatter().format(entry)
    assert "\n" not in line
    assert line.endswith(' event=connection-lost peer=::1 error="reset \\"by\\"\\npeer" count=3')
    parsed = json.loads(logs.JsonFormatter().format(entry))
    assert parsed["error"] == 'reset "by"\npeer' and parsed["count"] == "3" and parsed["level"] == "info"


def test_other_loggers_messages_go_to_msg_and_tracebacks_stay_on_the_line():
    assert logs.fields(record("Task was destroyed but it is pending!")) == {
        "msg": "Task was destroyed but it is pending!"
    }
    assert logs.fields(record("%s: applying %s", "/x", "001.sql")) == {"msg": "/x: applying 001.sql"}
    assert logs.fields(
        record(
            "event=x pct=100%%",
        )
    ) == {"event": "x", "pct": "100%%"}  # no args: not %-formatted
    assert logs.fields(record("event=x pct=%d%%", 5)) == {"event": "x", "pct": "5%"}
    try:
        raise ValueError("boom")
    except ValueError:
        entry = record("event=crashed", exc_info=sys.exc_info())
    line = logs.KeyValueFormatter().format(entry)
    assert "\n" not in line and "ValueError: boom" in line
    assert "ValueError: boom" in json.loads(logs.JsonFormatter().format(entry))["exception"]


def test_redacted_keeps_names_and_attributes_and_drops_every_text():
    message = make_element(MESSAGE, {"to": "bob@localhost", "type": "chat", "id": "m1"})
    sub_element(message, "{jabber:client}body", text=SECRET_BODY)
    sub_element(sub_element(message, "{urn:example}x", {"n": "1"}), "{urn:example}secret", text="key material")
    text = logs.redacted(message)
    assert SECRET_BODY not in text and "key material" not in text
    assert "<body/>" in text and 'to="bob@localhost"' in text and 'n="1"' in text
    assert message.findtext("{jabber:client}body") == SECRET_BODY  # the stanza itself is untouched


class Wire:
    peer = "test"
    congested = False  # takes everything at once
    unsent = 0

    def __init__(self):
        self.out = []

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def close(self, condition=None, text=None) -> None:
        pass

    async def drained(self) -> None:
        pass


@pytest.fixture
async def server(tmp_path):
    cfg = config.parse({"server": {"data_dir": str(tmp_path), "extensions": ["ping"]}}, "test")
    server = Server(cfg)
    await server.open()
    yield server
    await server.stop()


async def test_a_crashed_stanza_handler_logs_the_stanza_without_its_body(server, caplog):
    host = server.hosts["localhost"]
    alice = Session(host, JID.parse("alice@localhost/a"), Wire())
    bob = Session(host, JID.parse("bob@localhost/b"), Wire())
    host.add_session(alice)
    host.add_session(bob)

    async def crash(stanza):
        if stanza.type != "error":
            raise RuntimeError("a bug")
        return False

    host.bus.hook("message/full", crash, 100)
    message = make_element(MESSAGE, {"to": "bob@localhost/b", "type": "chat", "id": "c1"})
    sub_element(message, "{jabber:client}body", text=SECRET_BODY)
    with caplog.at_level(logging.ERROR):
        await server.router.from_client(alice, message)
    crashed = [r for r in caplog.records if "stanza-handler-crashed" in str(r.msg)]
    assert crashed
    line = logs.KeyValueFormatter().format(crashed[0])
    assert SECRET_BODY not in line and "<body/>" in line and "RuntimeError: a bug" in line
    assert b"internal-server-error" in b"".join(alice.connection.out)  # bounced to its sender
    assert server.metrics.counters[(metrics.STANZAS_SENT, ("message",))] == 1  # the error reply


# ------------------------------------------------------------------ metrics


def test_exposition_escapes_labels_and_fills_histogram_buckets():
    registry = Metrics()
    registry.count(metrics.AUTH_FAILURES, 'odd"mech\\\n')
    registry.count(metrics.UPLOAD_BYTES, "in", amount=1500)
    for seconds in (0.0005, 0.0007, 20.0):  # on a bound, between two, past the last
        registry.observe(metrics.STORAGE_SECONDS, ("accounts", "get"), seconds)
    registry.gauge(metrics.SESSIONS, lambda: {("localhost",): 4})
    text = registry.render()
    assert 'xmppd_auth_failures_total{mechanism="odd\\"mech\\\\\\n"} 1\n' in text
    assert 'xmppd_upload_bytes_total{direction="in"} 1500\n' in text
    assert 'xmppd_sessions{host="localhost"} 4\n' in text
    assert "xmppd_offline_messages_stored_total 0\n" in text  # unlabelled counters start at 0
    prefix = 'xmppd_storage_operation_seconds_bucket{store="accounts",operation="get",le='
    assert f'{prefix}"0.0005"}} 1\n' in text and f'{prefix}"0.001"}} 2\n' in text
    assert f'{prefix}"10"}} 2\n' in text and f'{prefix}"+Inf"}} 3\n' in text
    assert 'xmppd_storage_operation_seconds_count{store="accounts",operation="get"} 3\n' in text
    assert registry.totals()["upload_bytes"] == 1500 and registry.totals()["stanzas_sent"] == 0


class Store:
    def __init__(self):
        self.items = ["a", "b"]

    async def get(self, key):
        return key

    async def fail(self):
        raise OSError("disk on fire")

    async def missing(self):
        raise UnknownArchiveId("x")

    async def owners(self):
        for item in self.items:
            yield item


async def test_timed_store_times_calls_counts_errors_and_passes_the_rest():
    registry = Metrics()
    store = TimedStore(Store(), "archive/test", registry)
    assert await store.get("k") == "k" and await store.get("j") == "j"
    with pytest.raises(OSError):
        await store.fail()
    with pytest.raises(UnknownArchiveId):
        await store.missing()
    assert [owner async for owner in store.owners()] == ["a", "b"]  # an async generator, untouched
    assert store.items == ["a", "b"]
    assert registry.histograms[(metrics.STORAGE_SECONDS, ("archive/test", "get"))][0][-1] == 0
    assert sum(registry.histograms[(metrics.STORAGE_SECONDS, ("archive/test", "get"))][0]) == 2
    assert registry.counters[(metrics.STORAGE_ERRORS, ("archive/test", "fail"))] == 1
    assert (metrics.STORAGE_ERRORS, ("archive/test", "missing")) not in registry.counters


class Media:
    def __init__(self):
        self.files = {}
        self.closed = 0

    async def write(self, key, chunks, size, content_type):
        self.files[key] = b"".join([chunk async for chunk in chunks])

    async def read(self, key, start=0, end=None):
        try:
            data = self.files[key][start : None if end is None else end + 1]
            for offset in range(0, len(data), 10):
                yield data[offset : offset + 10]
        finally:
            self.closed += 1


async def test_counted_media_counts_bytes_in_and_out_and_closes_the_stores_reader():
    registry = Metrics()
    media = CountedMedia(backend := Media(), registry)

    async def chunks():
        yield b"x" * 25
        yield b"y" * 15

    await media.write("f", chunks(), 40, "application/octet-stream")
    async with aclosing(media.read("f", 0, 29)) as reader:
        first = await anext(reader)  # a client that goes away early
    assert first == b"x" * 10 and backend.closed == 1
    assert [chunk async for chunk in media.read("f")] != []
    assert registry.counters[(metrics.UPLOAD_BYTES, ("in",))] == 40
    assert registry.counters[(metrics.UPLOAD_BYTES, ("out",))] == 10 + 40
    assert media.files is backend.files  # anything else is the store's


@pytest.mark.parametrize(
    "peer,allowed",
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.1.2.3", True),
        ("10.2.0.1", False),
        ("192.0.2.1", False),
        ("fe80::1%eth0", False),
        (None, False),
        ("", False),
    ],
)
def test_metrics_allow_list(server, peer, allowed):
    server.monitoring.allowed = config.HttpOptions(metrics_allow=("127.0.0.1", "::1", "10.1.0.0/16")).metrics_networks
    assert server.monitoring.is_allowed(peer) is allowed


# ------------------------------------------------------------------ /health


class StalledAccounts:
    def __init__(self, error=None):
        self.error = error

    async def get(self, jid):
        if self.error:
            raise self.error
        await asyncio.Event().wait()


async def health(server, peer: str = "127.0.0.1") -> tuple[int, dict]:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (peer, 40000) if name == "peername" else default
    response = await server.monitoring.serve_health(make_mocked_request("GET", "/health", transport=transport))
    return response.status, json.loads(response.text)


async def test_health_answers_503_unless_serving_with_storage_answering(server, monkeypatch):
    monkeypatch.setattr(monitoring, "HEALTH_TIMEOUT", 0.05)
    assert await health(server) == (503, {"status": "new", "sessions": 0, "storage": "ok"})
    server.state = "serving"
    assert await health(server) == (200, {"status": "ok", "sessions": 0, "storage": "ok"})
    accounts = server.storage.accounts
    server.storage.accounts = StalledAccounts()
    assert await health(server) == (503, {"status": "unavailable", "sessions": 0, "storage": "timeout"})
    server.storage.accounts = StalledAccounts(OSError("database is locked"))
    assert await health(server) == (503, {"status": "unavailable", "sessions": 0, "storage": "unavailable"})
    server.storage.accounts = accounts
    server.state = "stopping"
    assert await health(server) == (503, {"status": "stopping", "sessions": 0, "storage": "ok"})


async def test_health_details_only_for_metrics_allow(server):
    server.state = "serving"
    assert await health(server, peer="192.0.2.1") == (200, {"status": "ok"})
    assert await health(server, peer="::1") == (200, {"status": "ok", "sessions": 0, "storage": "ok"})


# ------------------------------------------------------------------ systemd


def test_notify_sends_datagrams_to_a_path_or_an_abstract_socket(monkeypatch, tmp_path):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(f"\0xmppd-test-{id(receiver)}")
        receiver.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", f"@xmppd-test-{id(receiver)}")
        assert systemd.notify("READY=1\nSTATUS=serving")
        assert receiver.recv(100) == b"READY=1\nSTATUS=serving"
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert systemd.notify("STOPPING=1") is False  # logged, not raised


@pytest.mark.parametrize(
    "usec,pid,interval",
    [
        ("30000000", None, 15.0),
        ("30000000", "self", 15.0),
        ("30000000", "1", None),
        ("0", None, None),
        ("soon", None, None),
        (None, None, None),
    ],
)
def test_watchdog_interval(monkeypatch, usec, pid, interval):
    import os

    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", str(os.getpid()) if pid == "self" else pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert systemd.watchdog_interval() == interval
