"""End to end: what operators see of a running xmppd. /metrics in the Prometheus text
format (parsed strictly here) moves by the right amounts after logins, failed
authentications, messages, offline storage and uploads, and is refused to peers outside
[http] metrics_allow; /health answers 200 while serving and 503 from the first moment of
a shutdown; systemd hears READY=1, WATCHDOG=1 and STOPPING=1 on $NOTIFY_SOCKET; JSON
logs are one object per line and never hold a message body or a password."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp
import pytest

from tests.support.accounts import create_accounts
from tests.support.raw import RawClient
from tests.support.server import XmppdProcess
from tests.support.upload import download, http, payload, put, request_slot
from xmppd.client import Client

TIMEOUT = 10.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
NS_REGISTER = "jabber:iq:register"
FAST_AUTH_FAILURES = "auth_failure_delay = 0.01"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = XmppdProcess(tmp_path_factory.mktemp("observability"), c2s_section=FAST_AUTH_FAILURES).start()
    process.accounts = iter(create_accounts(process, [f"obs{n}" for n in range(12)]))
    yield process
    process.stop()


def local(jid: str) -> str:
    return jid.split("@")[0]


async def get(port: int, path: str) -> tuple[int, dict, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}{path}") as response:
            return response.status, dict(response.headers), await response.text()


# ------------------------------------------------------------------ the text format

SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)")
LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)')


def parse_exposition(text: str) -> dict[tuple, float]:
    """The samples of a text exposition (format 0.0.4) as {(name, ((label, value), ...)): value},
    failing on anything the format does not allow: a sample before its TYPE or of an
    undeclared family, a bad label, a duplicate series, histogram buckets that are not
    cumulative or lack +Inf, a _count that differs from the +Inf bucket."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    samples: dict[tuple, float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            assert len(line.split(" ", 3)) == 4, line
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped") and name not in types, line
            types[name] = kind
            continue
        assert line and not line.startswith("#"), f"stray line {line!r}"
        match = SAMPLE.fullmatch(line)
        assert match, f"not a sample: {line!r}"
        name, _, label_text, value = match.groups()
        labels = []
        position = 0
        while label_text and position < len(label_text):
            label = LABEL.match(label_text, position)
            assert label, f"bad labels in {line!r}"
            labels.append(
                (label.group(1), label.group(2).replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\"))
            )
            position = label.end()
        family = name
        if name not in types:
            family = re.sub(r"_(bucket|sum|count)$", "", name)
            assert types.get(family) == "histogram", f"sample of an undeclared family: {line!r}"
        if types[family] == "counter":
            assert name.endswith("_total"), name
        key = (name, tuple(labels))
        assert key not in samples, f"duplicate series {line!r}"
        samples[key] = math.inf if value == "+Inf" else float(value)
    for name, kind in types.items():
        if kind == "histogram":
            check_histogram(name, samples)
    return samples


def check_histogram(name: str, samples: dict) -> None:
    series: dict[tuple, list] = {}
    for (sample, labels), value in samples.items():
        if sample == f"{name}_bucket":
            rest = tuple(label for label in labels if label[0] != "le")
            le = dict(labels)["le"]
            series.setdefault(rest, []).append((math.inf if le == "+Inf" else float(le), value))
    for rest, buckets in series.items():
        buckets.sort()
        assert buckets[-1][0] == math.inf, f"{name}{rest}: no +Inf bucket"
        counts = [count for _, count in buckets]
        assert counts == sorted(counts), f"{name}{rest}: buckets not cumulative"
        assert samples[(f"{name}_count", rest)] == counts[-1]
        assert (f"{name}_sum", rest) in samples


async def scrape(server) -> dict[tuple, float]:
    status, headers, text = await get(server.http_port, "/metrics")
    assert status == 200, text
    assert headers["Content-Type"] == CONTENT_TYPE
    return parse_exposition(text)


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(labels.items())), 0.0)


def delta(before, after, name: str, **labels) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


# ------------------------------------------------------------------ /metrics


async def raw_login(server, jid: str, mechanism: str = "PLAIN", resource: str = "raw") -> RawClient:
    return await RawClient(server.domain).login(
        server.port, local(jid), "secret", resource=resource, mechanism=mechanism
    )


async def test_logins_failed_auth_and_stanzas_move_the_counters(server):
    alice_jid, bob_jid = next(server.accounts), next(server.accounts)
    before = await scrape(server)

    alice = await raw_login(server, alice_jid, "PLAIN")
    bob = await raw_login(server, bob_jid, "SCRAM-SHA-256")
    intruder = RawClient(server.domain)
    await intruder.secure(server.port)
    with pytest.raises(AssertionError, match="failure"):
        await intruder.authenticate(local(alice_jid), "not the password", "PLAIN")
    await intruder.close()

    for n in range(3):
        await alice.send(f"<message to='{bob.jid}' type='chat' id='m{n}'><body>hello {n}</body></message>")
    for n in range(3):
        await bob.expect(f"<body>hello {n}</body>")
    await alice.send("<iq type='get' id='ping1'><ping xmlns='urn:xmpp:ping'/></iq>")
    await alice.expect(r"id=.ping1.")

    during = await scrape(server)
    assert delta(before, during, "xmppd_auth_successes_total", mechanism="PLAIN") == 1
    assert delta(before, during, "xmppd_auth_successes_total", mechanism="SCRAM-SHA-256") == 1
    assert delta(before, during, "xmppd_auth_failures_total", mechanism="PLAIN") == 1
    assert delta(before, during, "xmppd_connections_accepted_total", listener="starttls") == 3
    assert delta(before, during, "xmppd_connections_accepted_total", listener="direct_tls") == 0
    assert delta(before, during, "xmppd_connections", listener="starttls") == 2
    assert delta(before, during, "xmppd_sessions", host=server.domain) == 2
    assert value(during, "xmppd_sessions_hibernating", host=server.domain) == 0
    assert delta(before, during, "xmppd_stanzas_received_total", kind="message") == 3
    assert delta(before, during, "xmppd_stanzas_received_total", kind="iq") == 1  # bind is not a stanza of a session
    assert delta(before, during, "xmppd_stanzas_received_total", kind="presence") == 0
    assert delta(before, during, "xmppd_stanzas_sent_total", kind="message") == 3
    assert delta(before, during, "xmppd_stanzas_sent_total", kind="iq") == 1
    # Three credential lookups, each timed (a histogram series per store and operation).
    assert delta(before, during, "xmppd_storage_operation_seconds_count", store="accounts", operation="get") >= 3

    await alice.close()
    await bob.close()


async def test_offline_messages_stored_and_delivered(server):
    sender_jid, recipient_jid = next(server.accounts), next(server.accounts)
    before = await scrape(server)
    sender = await raw_login(server, sender_jid)
    for n in range(2):
        await sender.send(f"<message to='{recipient_jid}' type='chat' id='o{n}'><body>later {n}</body></message>")
    await sender.send("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>")
    await sender.expect(r"id=.sync.")  # the messages before it are stored by now
    stored = await scrape(server)
    assert delta(before, stored, "xmppd_offline_messages_stored_total") == 2
    assert delta(before, stored, "xmppd_offline_messages_delivered_total") == 0
    assert (
        delta(before, stored, "xmppd_storage_operation_seconds_count", store="archive/offline", operation="append") == 2
    )
    # The recipient's queue held 1, then 2 messages.
    assert delta(before, stored, "xmppd_offline_queue_length_count") == 2
    assert delta(before, stored, "xmppd_offline_queue_length_sum") == 3
    assert delta(before, stored, "xmppd_offline_queue_length_bucket", le="1") == 1
    assert delta(before, stored, "xmppd_offline_queue_length_bucket", le="2") == 2

    recipient = await raw_login(server, recipient_jid)
    await recipient.send("<presence/>")
    await recipient.expect("<body>later 1</body>")
    delivered = await scrape(server)  # counted as they are sent
    assert delta(stored, delivered, "xmppd_offline_messages_delivered_total") == 2

    async def deleted():  # then deleted, in the background
        while not delta(
            stored,
            now := await scrape(server),
            "xmppd_storage_operation_seconds_count",
            store="archive/offline",
            operation="delete",
        ):
            await asyncio.sleep(0.05)
        return now

    after = await asyncio.wait_for(deleted(), 10)
    assert (
        delta(stored, after, "xmppd_storage_operation_seconds_count", store="archive/offline", operation="delete") == 1
    )
    await sender.close()
    await recipient.close()


async def test_upload_bytes_in_and_out(server):
    client = Client(next(server.accounts), "secret", verify_tls=False)
    await client.login("127.0.0.1", server.port)
    data = payload(100_000, seed=8)
    before = await scrape(server)
    try:
        async with http() as session:
            slot = await request_slot(client, f"upload.{server.domain}", "report.bin", len(data))
            assert (await put(session, slot, data)).status == 201
            response, body = await download(session, slot.get_url)
            assert response.status == 200 and body == data
            response, body = await download(session, slot.get_url, Range="bytes=0-999")
            assert response.status == 206 and len(body) == 1000
    finally:
        await client.logout()
    after = await scrape(server)
    assert delta(before, after, "xmppd_upload_bytes_total", direction="in") == len(data)
    assert delta(before, after, "xmppd_upload_bytes_total", direction="out") == len(data) + 1000


async def test_every_declared_metric_is_exposed_with_help_and_type(server):
    from xmppd.metrics import METRICS

    status, _, text = await get(server.http_port, "/metrics")
    assert status == 200
    for name, metric in METRICS.items():
        assert f"# TYPE {name} {metric.kind}\n" in text
        assert f"# HELP {name} " in text


# ------------------------------------------------------------------ /health


async def test_health_while_serving(server):
    """From an address in metrics_allow (loopback by default): the details too."""
    client = await raw_login(server, next(server.accounts))
    status, headers, text = await get(server.http_port, "/health")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    body = json.loads(text)
    assert body["status"] == "ok" and body["storage"] == "ok" and body["sessions"] >= 1
    await client.close()


# ------------------------------------------------------------------ access to /metrics


async def test_metrics_refused_outside_the_allow_list(make_xmppd):
    process = make_xmppd()  # its config has an [http] table: the option goes there
    process.config_path.write_text(
        process.config_path.read_text().replace(
            "[http]\n", '[http]\nmetrics_allow = ["192.0.2.0/24", "2001:db8::/32"]\n'
        )
    )
    process.start()
    status, _, text = await get(process.http_port, "/metrics")
    assert status == 403 and "metrics_allow" in text
    status, _, text = await get(process.http_port, "/health")
    assert status == 200  # load balancers may ask from anywhere
    assert json.loads(text) == {"status": "ok"}  # but only metrics_allow learns the load


def test_a_bad_metrics_allow_entry_stops_start_up(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[http]\nmetrics_allow = ["127.0.0.1", "localhost"]\n')
    result = subprocess.run(
        [sys.executable, "-m", "xmppd.cli", "--check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "http.metrics_allow[1]" in result.stderr and str(config) in result.stderr


# ------------------------------------------------------------------ shutdown, systemd


class NotifySocket:
    """A fake systemd notify socket: an AF_UNIX datagram socket the server sends to."""

    def __init__(self):
        self.directory = tempfile.TemporaryDirectory(prefix="sd", dir="/tmp")  # sun_path is short
        self.path = str(Path(self.directory.name) / "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.received: list[str] = []

    async def wait_for(self, wanted: str, timeout: float = TIMEOUT) -> str:
        """The next datagram that has the line `wanted`."""
        loop = asyncio.get_running_loop()

        async def receive():
            while True:
                message = (await loop.sock_recv(self.sock, 4096)).decode()
                self.received.append(message)
                if wanted in message.split("\n"):
                    return message

        return await asyncio.wait_for(receive(), timeout)

    def close(self):
        self.sock.close()
        self.directory.cleanup()


async def test_systemd_notify_and_health_during_graceful_shutdown(make_xmppd, monkeypatch):
    notify = NotifySocket()
    monkeypatch.setenv("NOTIFY_SOCKET", notify.path)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # a WATCHDOG=1 every 0.1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    process = make_xmppd(server_section="shutdown_delay = 3.0")
    try:
        process.start()
        ready = await notify.wait_for("READY=1")
        assert "STATUS=serving localhost" in ready.split("\n")
        await notify.wait_for("WATCHDOG=1")
        await notify.wait_for("WATCHDOG=1")
        status, _, _ = await get(process.http_port, "/health")
        assert status == 200

        process.process.send_signal(15)  # SIGTERM: a graceful shutdown begins
        await notify.wait_for("STOPPING=1")
        status, _, text = await get(process.http_port, "/health")
        assert status == 503 and json.loads(text)["status"] == "stopping"
        # Still serving meanwhile: a client may connect until the listeners close.
        client = RawClient()
        assert "<mechanism>" in await client.secure(process.port)
        await client.close()
        assert await asyncio.to_thread(process.process.wait, 30) == 0
    finally:
        notify.close()


# ------------------------------------------------------------------ logs

BODY = "Aubergine-Zeppelin-4417"
PASSWORD = "Quartz-Walrus-9023"
NEW_PASSWORD = "Tangerine-Otter-5186"
WRONG_PASSWORD = "Velvet-Cactus-3370"


async def test_json_logs_hold_no_bodies_and_no_passwords(make_xmppd):
    process = make_xmppd(
        """
        [extensions.register]
        allow_registration = true
        registration_throttle_seconds = 0.0
        """,
        server_section='log_format = "json"',
        c2s_section=FAST_AUTH_FAILURES,
    )
    process.config_path.write_text(process.config_path.read_text().replace('log_level = "info"', 'log_level = "debug"'))
    process.start()
    (friend_jid,) = create_accounts(process, ["friend"], password=PASSWORD)
    create_accounts(process, ["absent"], password=PASSWORD)

    # In-band registration (XEP-0077) with the password in the clear inside the stream.
    newcomer = RawClient(process.domain)
    await newcomer.secure(process.port)
    await newcomer.send(
        f"<iq type='set' id='reg'><query xmlns='{NS_REGISTER}'><username>newcomer</username>"
        f"<password>{PASSWORD}</password></query></iq>"
    )
    await newcomer.expect(r"<iq[^>]*type=.result.")
    await newcomer.close()

    # Logins with the password (PLAIN and SCRAM), a failed one, a password change.
    user = await RawClient(process.domain).login(process.port, "newcomer", PASSWORD, resource="a")
    friend = await RawClient(process.domain).login(
        process.port, "friend", PASSWORD, mechanism="SCRAM-SHA-1", resource="b"
    )
    intruder = RawClient(process.domain)
    await intruder.secure(process.port)
    with pytest.raises(AssertionError):
        await intruder.authenticate("friend", WRONG_PASSWORD, "PLAIN")
    await intruder.close()
    await user.send(
        f"<iq type='set' id='pw'><query xmlns='{NS_REGISTER}'><username>newcomer</username>"
        f"<password>{NEW_PASSWORD}</password></query></iq>"
    )
    await user.expect(r"id=.pw.")

    # The body: delivered live, stored offline, bounced from a user that does not exist.
    await user.send(f"<message to='{friend.jid}' type='chat'><body>{BODY}</body></message>")
    await friend.expect(BODY)
    await user.send(f"<message to='absent@{process.domain}' type='chat'><body>{BODY}</body></message>")
    await user.send(f"<message to='nobody@{process.domain}' type='chat' id='gone'><body>{BODY}</body></message>")
    await user.expect(r"<message[^>]*type=.error.")
    await user.close()
    await friend.close()
    assert process.stop() == 0

    secrets = [BODY, PASSWORD, NEW_PASSWORD, WRONG_PASSWORD]
    secrets += [
        base64.b64encode(f"\0friend\0{WRONG_PASSWORD}".encode()).decode(),
        base64.b64encode(f"\0newcomer\0{PASSWORD}".encode()).decode(),
    ]
    lines = [
        line for line in process.output if not line.startswith(("xmppd serving ", "data in "))
    ]  # the banner, on stdout
    assert len(lines) > 5, process.log
    events = []
    for line in lines:
        entry = json.loads(line)  # one JSON object per line, tracebacks included
        assert {"time", "level", "logger"} <= set(entry), line
        events.append(entry.get("event"))
    for secret in secrets:
        assert secret not in process.log, f"{secret} is in the log"
    assert {"user-registered", "password-changed", "shutting-down"} <= set(events), events
