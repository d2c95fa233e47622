"""python -m bench --scenario cluster_engine: Redis and NATS measured on the same
cross-node load, to choose xmppd's cluster engine (issue 15).

Not a server comparison: no xmppd runs. Each figure comes from two OS processes that
stand for two xmppd nodes (``python -m bench.cluster_engine ROLE SPEC``, started by
this module), talking through one engine started the way the tests start it
(tests/support/engines.py; ``XMPPD_TEST_REDIS`` / ``XMPPD_TEST_NATS`` use running ones).

(a) Delivery: node A sends stanza-sized payloads (400 bytes) to node B's inbox; B takes
    each one (checks order and duplicates per sender) and acknowledges it back to A,
    which is what A would wait for before the XEP-0198 ack to its client. First 1,000
    messages/s for a few seconds, then as fast as a window of 256 unacknowledged allows
    (bounded in count and time). ``ack_*``: A's send to A's receipt of B's ack;
    ``one_way_*``: A's send to B taking it (one clock: CLOCK_MONOTONIC of one machine).
    Four ways of doing it:
    - ``redis_pubsub``: PUBLISH to B's channel; B's acks PUBLISHed back. Nothing is
      kept: a message B is not subscribed for at that instant is gone.
    - ``redis_streams``: XADD to B's stream; B reads with XREADGROUP (a consumer group:
      what B took and did not XACK stays pending, for B or another node to claim), then
      XACK and XADD of the acks to A's stream, in one pipeline.
    - ``nats_core``: request/reply on B's subject: the reply is B's ack. Nothing kept.
    - ``nats_jetstream``: publish to a file-stored work-queue stream (the PubAck says it
      is stored; ``Nats-Msg-Id`` lets the engine drop a re-sent duplicate), B's durable
      consumer with explicit acks, B's acks to A on a core subject.
    The Redis senders pipeline what is due in one round trip; the NATS client buffers.
(b) Session registry: both nodes at once register 2 resources for each of their users,
    look each user up, unregister them, 32 operations in flight per node. Redis: a hash
    per user (HSET and SADD to the node's set in one MULTI, HGETALL, HDEL). NATS: a
    JetStream key-value entry per user (JSON of its resources), changed by
    compare-and-set on the entry's revision (get, then create/update/delete with the
    revision; a lost race is retried and counted).
(c) Dead node: node B refreshes its liveness every 0.5 s with a 2 s lifetime; node A
    watches; B is SIGKILLed at a random point of its heartbeat and the time until A sees
    it gone is measured, several times. Redis: ``SET EX``, seen by polling EXISTS every
    100 ms and by the keyspace event ``expired``. NATS: a key-value bucket with a 2 s
    TTL, polled every 100 ms, and a heartbeat subject (gone after 2 s without one).
(d) Engine restart: a node writes durably (Redis XADD; JetStream publish with
    ``Nats-Msg-Id``) as fast as acknowledgements come; the engine is SIGKILLed and
    started again on the same port; the node retries what failed. Then: are all the
    acknowledged writes there, how many are there twice, how long until writes succeed.

Output: one JSON line per figure set on stdout, tables, and the section ``HEADING`` of
bench/RESULTS.md (replaced in place; the rest of the file is kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from . import report
from .report import log

HEADING = "## Cluster engine: Redis and NATS, figures (bench/cluster_engine.py)"
ROOT = Path(__file__).resolve().parent.parent
MODES = ("redis_pubsub", "redis_streams", "nats_core", "nats_jetstream")
PAYLOAD = 400  # bytes, a chat message with a few extensions
RATE = 1000  # messages/s of the fixed-rate phase
SIZES = {
    "full": {
        "rate_seconds": 3.0,
        "max_count": 60_000,
        "max_seconds": 2.0,
        "users": 1000,
        "kills": 2,
        "write_seconds": 3.0,
    },
    "quick": {
        "rate_seconds": 1.0,
        "max_count": 2_000,
        "max_seconds": 1.0,
        "users": 100,
        "kills": 1,
        "write_seconds": 2.0,
    },
}
WARM_UP = 200  # messages before the measured phases
WINDOW = 256  # unacknowledged messages at the max rate
ACK_GRACE = 5.0  # seconds to wait for the last acks
REGISTRY_IN_FLIGHT = 32
RESOURCES = 2
TTL, HEARTBEAT, POLL = 2.0, 0.5, 0.1  # seconds: liveness lifetime, refresh, watch
DOWN = 0.5  # seconds an engine stays dead in (d)
NODE_TIMEOUT = 60.0  # seconds for any node process to answer
LOAD: list[float] = []


# ---------------------------------------------------------------- helpers of the nodes


def emit(value: dict) -> None:
    print(json.dumps(value), flush=True)


def cpu_seconds() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


_FILLER = (
    b"<message xmlns='jabber:client' type='chat' id='a1b2c3' from='alice@example.com/phone' "
    b"to='bob@example.com'><body>A line of chat of a typical length.</body>"
    b"<active xmlns='http://jabber.org/protocol/chatstates'/>"
    b"<markable xmlns='urn:xmpp:chat-markers:0'/>" + b"x" * PAYLOAD
)


def payload(phase: int, seq: int) -> bytes:
    """`phase seq sent-at-ns` then a stanza, PAYLOAD bytes in all."""
    head = b"%d %010d %020d " % (phase, seq, time.monotonic_ns())
    return head + _FILLER[: PAYLOAD - len(head)]


def parse(data: bytes) -> tuple[int, int, int]:
    return data[0] - 48, int(data[2:12]), int(data[13:33])


def seqs_text(seqs: list[int]) -> bytes:
    return ",".join(map(str, seqs)).encode()


def seqs_of(data: bytes) -> list[int]:
    return [int(part) for part in data.split(b",")]


class Coalescer:
    """What is added while a flush is in flight goes out in the next one, in order: one
    round trip per batch instead of one per item."""

    def __init__(self, flush):
        self.items: list = []
        self.flush = flush
        self.wake = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    def add(self, item) -> None:
        self.items.append(item)
        self.wake.set()

    async def _run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            items, self.items = self.items, []
            if items:
                await self.flush(items)


async def stdin_line() -> str:
    return await asyncio.to_thread(sys.stdin.readline)


async def redis_client(url: str):
    from redis.asyncio import Redis

    return Redis.from_url(url, max_connections=64)


async def nats_client(url: str):
    import nats

    return await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)


async def key_value(js, bucket: str, **config):
    """The bucket, made by whichever node comes first."""
    from nats.js.errors import BadRequestError

    try:
        return await js.create_key_value(bucket=bucket, **config)
    except BadRequestError:
        return await js.key_value(bucket)


# ---------------------------------------------------------------- (a) delivery: transports


class RedisPubSub:
    def __init__(self, url: str, tag: str):
        self.url, self.inbox, self.acks = url, f"inbox:{tag}:B", f"acks:{tag}:A"

    async def open_sender(self, on_ack) -> None:
        self.redis = await redis_client(self.url)
        self.pubsub = self.redis.pubsub()
        await self.pubsub.subscribe(self.acks)
        self.listener = asyncio.create_task(self._listen(lambda data: on_ack(seqs_of(data))))

    async def send(self, batch: list[tuple[int, bytes]]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for _, data in batch:
                pipe.publish(self.inbox, data)
            await pipe.execute()

    async def open_receiver(self, took) -> None:
        self.redis = await redis_client(self.url)
        self.pubsub = self.redis.pubsub()
        await self.pubsub.subscribe(self.inbox)
        acks = Coalescer(lambda seqs: self.redis.publish(self.acks, seqs_text(seqs)))
        self.listener = asyncio.create_task(self._listen(lambda data: acks.add(took(data))))

    async def _listen(self, handle) -> None:
        async for message in self.pubsub.listen():
            if message["type"] == "message":
                handle(message["data"])

    async def close(self, receiver: bool) -> None:
        self.listener.cancel()
        await asyncio.gather(self.listener, return_exceptions=True)
        await self.pubsub.aclose()
        await self.redis.aclose()


class RedisStreams:
    GROUP = "nodes"
    BLOCK = 200  # ms a read waits for entries: how long `close` may wait for it

    def __init__(self, url: str, tag: str):
        self.url, self.inbox, self.acks = url, f"inbox:{tag}:B", f"acks:{tag}:A"
        self.open = True

    async def open_sender(self, on_ack) -> None:
        self.redis = await redis_client(self.url)

        async def read_acks():
            last = "0-0"
            while self.open:
                for _, entries in await self.redis.xread({self.acks: last}, count=1024, block=self.BLOCK) or []:
                    for entry_id, fields in entries:
                        on_ack(seqs_of(fields[b"s"]))
                        last = entry_id

        self.listener = asyncio.create_task(read_acks())

    async def send(self, batch: list[tuple[int, bytes]]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for _, data in batch:
                pipe.xadd(self.inbox, {"p": data}, maxlen=100_000, approximate=True)
            await pipe.execute()

    async def open_receiver(self, took) -> None:
        self.redis = await redis_client(self.url)
        await self.redis.xgroup_create(self.inbox, self.GROUP, id="$", mkstream=True)

        async def consume():
            while self.open:
                for _, entries in (
                    await self.redis.xreadgroup(self.GROUP, "B", {self.inbox: ">"}, count=512, block=self.BLOCK) or []
                ):
                    seqs = [took(fields[b"p"]) for _, fields in entries]
                    async with self.redis.pipeline(transaction=False) as pipe:
                        pipe.xack(self.inbox, self.GROUP, *[entry_id for entry_id, _ in entries])
                        pipe.xadd(self.acks, {"s": seqs_text(seqs)}, maxlen=100_000, approximate=True)
                        await pipe.execute()

        self.listener = asyncio.create_task(consume())

    async def close(self, receiver: bool) -> None:
        self.open = False  # a blocked read does not end on cancel: it ends with its BLOCK
        await self.listener
        if receiver:
            await self.redis.delete(self.inbox, self.acks)
        await self.redis.aclose()


class NatsCore:
    def __init__(self, url: str, tag: str):
        self.url, self.inbox = url, f"inbox.{tag}.B"
        self.requests: set[asyncio.Task] = set()

    async def open_sender(self, on_ack) -> None:
        self.nc = await nats_client(self.url)
        self.on_ack = on_ack

    async def send(self, batch: list[tuple[int, bytes]]) -> None:
        for seq, data in batch:  # tasks start in order: the requests go out in order
            task = asyncio.create_task(self._request(seq, data))
            self.requests.add(task)
            task.add_done_callback(self.requests.discard)

    async def _request(self, seq: int, data: bytes) -> None:
        await self.nc.request(self.inbox, data, timeout=30)
        self.on_ack([seq])

    async def open_receiver(self, took) -> None:
        self.nc = await nats_client(self.url)

        async def handle(msg):
            took(msg.data)
            await msg.respond(b"")

        await self.nc.subscribe(self.inbox, cb=handle)
        await self.nc.flush()

    async def close(self, receiver: bool) -> None:
        for task in self.requests:
            task.cancel()
        await self.nc.close()


class NatsJetStream:
    def __init__(self, url: str, tag: str):
        self.url, self.tag = url, tag
        self.stream, self.inbox, self.acks = f"INBOX_{tag}", f"inbox.{tag}.B", f"acks.{tag}.A"
        self.stored: list[asyncio.Future] = []

    async def open_sender(self, on_ack) -> None:
        self.nc = await nats_client(self.url)
        self.js = self.nc.jetstream()

        async def handle(msg):
            on_ack(seqs_of(msg.data))

        await self.nc.subscribe(self.acks, cb=handle)
        await self.nc.flush()

    async def send(self, batch: list[tuple[int, bytes]]) -> None:
        for seq, data in batch:
            self.stored.append(
                await self.js.publish_async(self.inbox, data, headers={"Nats-Msg-Id": f"A-{self.tag}-{seq}"})
            )

    async def open_receiver(self, took) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType

        self.nc = await nats_client(self.url)
        self.js = self.nc.jetstream()
        await self.js.add_stream(
            name=self.stream,
            subjects=[f"inbox.{self.tag}.*"],
            storage=StorageType.FILE,
            retention=RetentionPolicy.WORK_QUEUE,
            max_msgs=1_000_000,
        )
        acks = Coalescer(lambda seqs: self.nc.publish(self.acks, seqs_text(seqs)))

        async def handle(msg):
            seq = took(msg.data)
            await msg.ack()
            acks.add(seq)

        await self.js.subscribe(
            self.inbox,
            durable="node-B",
            stream=self.stream,
            manual_ack=True,
            cb=handle,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=4096, ack_wait=30),
        )

    async def close(self, receiver: bool) -> None:
        if receiver:
            await self.js.delete_stream(self.stream)
        else:
            failed = sum(1 for future in self.stored if future.done() and future.exception())
            if failed:
                log(f"nats_jetstream: {failed} publishes not stored")
        await self.nc.close()


TRANSPORTS = {
    "redis_pubsub": RedisPubSub,
    "redis_streams": RedisStreams,
    "nats_core": NatsCore,
    "nats_jetstream": NatsJetStream,
}


# ---------------------------------------------------------------- (a) delivery: the two nodes


async def role_receiver(spec: dict) -> dict:
    """Node B: take what comes, check order and duplicates; report at end of stdin."""
    transport = TRANSPORTS[spec["mode"]](spec["url"], spec["tag"])
    latencies: dict[int, list[float]] = {1: [], 2: []}
    seen: set[int] = set()
    counts = {"received": 0, "duplicates": 0, "out_of_order": 0}
    last = -1

    def took(data: bytes) -> int:
        nonlocal last
        phase, seq, sent = parse(data)
        if phase in latencies:
            latencies[phase].append((time.monotonic_ns() - sent) / 1e9)
        if seq in seen:
            counts["duplicates"] += 1
        else:
            seen.add(seq)
            counts["received"] += 1
            counts["out_of_order"] += seq < last
            last = max(last, seq)
        return seq

    await transport.open_receiver(took)
    began = cpu_seconds()
    emit({"ready": True})
    await stdin_line()
    cpu = cpu_seconds() - began
    await transport.close(receiver=True)
    return {
        **counts,
        "cpu_s": cpu,
        **{
            f"p{phase}_one_way_{name}_ms": ms(percentile(values, fraction))
            for phase, values in latencies.items()
            for name, fraction in (("p50", 0.5), ("p99", 0.99))
        },
    }


async def role_sender(spec: dict) -> dict:
    """Node A: a warm-up, then the fixed rate, then the max rate; acks timed per message."""
    transport = TRANSPORTS[spec["mode"]](spec["url"], spec["tag"])
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    acked = asyncio.Event()
    last_ack = 0.0

    def on_ack(seqs: list[int]) -> None:
        nonlocal last_ack
        last_ack = time.perf_counter()
        latencies.extend(last_ack - sent_at.pop(seq) for seq in seqs if seq in sent_at)
        acked.set()

    await transport.open_sender(on_ack)
    cpu = cpu_seconds()
    seq = 0

    async def send(phase: int, n: int) -> None:
        nonlocal seq
        batch = []
        for _ in range(n):
            sent_at[seq] = time.perf_counter()
            batch.append((seq, payload(phase, seq)))
            seq += 1
        await transport.send(batch)

    async def drain() -> None:
        deadline = time.perf_counter() + ACK_GRACE
        while sent_at and time.perf_counter() < deadline:
            acked.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(acked.wait(), deadline - time.perf_counter())

    async def phase_run(phase: int, rate: float | None, count: int, seconds: float) -> dict:
        latencies.clear()
        first = seq
        began = time.perf_counter()
        while seq - first < count and time.perf_counter() - began < seconds:
            if rate:
                due = min(count, int((time.perf_counter() - began) * rate) + 1) - (seq - first)
                if due > 0:
                    await send(phase, due)
                await asyncio.sleep(0.001)
            elif len(sent_at) < WINDOW:
                await send(phase, min(WINDOW - len(sent_at), count - (seq - first)))
            else:
                acked.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(acked.wait(), ACK_GRACE)
        sending = time.perf_counter() - began
        await drain()
        sent = seq - first
        return {
            "sent": sent,
            "acked": sent - len(sent_at),
            "lost": len(sent_at),
            "sent_per_s": round(sent / sending, 1),
            "acked_per_s": round((sent - len(sent_at)) / max(last_ack - began, 1e-9), 1),
            "ack_p50_ms": ms(percentile(latencies, 0.5)),
            "ack_p99_ms": ms(percentile(latencies, 0.99)),
        }

    await phase_run(0, None, WARM_UP, ACK_GRACE)
    sent_at.clear()
    result = {
        "p1": await phase_run(1, RATE, int(RATE * spec["rate_seconds"]), spec["rate_seconds"] + 1),
        "p2": await phase_run(2, None, spec["max_count"], spec["max_seconds"]),
        "cpu_s": cpu_seconds() - cpu,
    }
    await transport.close(receiver=False)
    return result


# ---------------------------------------------------------------- (b) session registry


class RedisRegistry:
    def __init__(self, url: str, tag: str, node: str):
        self.url, self.tag, self.node = url, tag, node
        self.retries = 0

    async def open(self) -> None:
        self.redis = await redis_client(self.url)

    async def register(self, user: str, resource_: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(f"sess:{self.tag}:{user}", resource_, self.node)
            pipe.sadd(f"node:{self.tag}:{self.node}", user)
            await pipe.execute()

    async def lookup(self, user: str) -> dict:
        return await self.redis.hgetall(f"sess:{self.tag}:{user}")

    async def unregister(self, user: str, resource_: str) -> None:
        await self.redis.hdel(f"sess:{self.tag}:{user}", resource_)

    async def close(self) -> None:
        await self.redis.delete(f"node:{self.tag}:{self.node}")
        await self.redis.aclose()


class NatsRegistry:
    def __init__(self, url: str, tag: str, node: str):
        self.url, self.tag, self.node = url, tag, node
        self.retries = 0

    async def open(self) -> None:
        from nats.js.api import StorageType

        self.nc = await nats_client(self.url)
        self.kv = await key_value(self.nc.jetstream(), f"sessions_{self.tag}", history=1, storage=StorageType.FILE)

    async def _entry(self, user: str):
        from nats.js.errors import KeyDeletedError, KeyNotFoundError

        try:
            entry = await self.kv.get(user)
        except (KeyNotFoundError, KeyDeletedError):
            return {}, None
        return json.loads(entry.value or b"{}"), entry.revision

    async def _change(self, user: str, change) -> None:
        """Compare-and-set on the entry's revision; a lost race is read again."""
        from nats.js.errors import KeyWrongLastSequenceError

        while True:
            resources, revision = await self._entry(user)
            change(resources)
            try:
                if revision is None:
                    await self.kv.create(user, json.dumps(resources).encode())
                elif resources:
                    await self.kv.update(user, json.dumps(resources).encode(), last=revision)
                else:
                    await self.kv.delete(user, last=revision)
                return
            except KeyWrongLastSequenceError:
                self.retries += 1

    async def register(self, user: str, resource_: str) -> None:
        await self._change(user, lambda resources: resources.__setitem__(resource_, self.node))

    async def lookup(self, user: str) -> dict:
        return (await self._entry(user))[0]

    async def unregister(self, user: str, resource_: str) -> None:
        await self._change(user, lambda resources: resources.pop(resource_, None))

    async def close(self) -> None:
        await self.nc.close()


async def role_registry(spec: dict) -> dict:
    """One node's users: register every resource, look every user up, unregister."""
    registry = {"redis": RedisRegistry, "nats": NatsRegistry}[spec["engine"]](spec["url"], spec["tag"], spec["node"])
    await registry.open()
    users = [f"{spec['node']}-user{n}" for n in range(spec["users"])]
    pairs = [(user, f"res{r}") for r in range(RESOURCES) for user in users]
    warm = [f"{spec['node']}-warm{n}" for n in range(REGISTRY_IN_FLIGHT)]  # the client's connections
    await asyncio.gather(*(registry.register(user, "res0") for user in warm))
    await asyncio.gather(*(registry.unregister(user, "res0") for user in warm))
    emit({"ready": True})
    await stdin_line()  # both nodes start together
    semaphore = asyncio.Semaphore(REGISTRY_IN_FLIGHT)
    result = {}
    for name, calls in (
        ("register", [lambda u=u, r=r: registry.register(u, r) for u, r in pairs]),
        ("lookup", [lambda u=u: registry.lookup(u) for u in users]),
        ("unregister", [lambda u=u, r=r: registry.unregister(u, r) for u, r in pairs]),
    ):
        latencies: list[float] = []

        async def one(call):
            async with semaphore:
                began = time.perf_counter()
                value = await call()
                latencies.append(time.perf_counter() - began)
                return value

        began = time.perf_counter()
        values = await asyncio.gather(*(one(call) for call in calls))
        # In units of 10 µs: the result line stays small.
        result[name] = {
            "ops": len(calls),
            "seconds": time.perf_counter() - began,
            "latencies": [round(latency * 1e5) for latency in latencies],
        }
        if name == "lookup" and any(len(value) != RESOURCES for value in values):
            raise RuntimeError("a lookup did not find every resource of its user")
    result["cas_retries"] = registry.retries
    await registry.close()
    return result


# ---------------------------------------------------------------- (c) dead node


async def role_heartbeat(spec: dict) -> dict:
    """Node B: says it is alive every HEARTBEAT seconds until it is killed."""
    tag = spec["tag"]
    if spec["engine"] == "redis":
        redis = await redis_client(spec["url"])

        async def beat():
            await redis.set(f"live:{tag}:B", b"1", px=int(TTL * 1000))
    else:
        nc = await nats_client(spec["url"])
        kv = await key_value(nc.jetstream(), f"live_{tag}", history=1, ttl=TTL)

        async def beat():
            await kv.put("B", b"1")
            await nc.publish(f"heartbeat.{tag}.B", b"")
            await nc.flush()

    await beat()
    emit({"ready": True})
    while True:  # bounded by the SIGKILL, or by the parent's timeout
        await asyncio.sleep(HEARTBEAT)
        await beat()


async def role_watcher(spec: dict) -> dict:
    """Node A: the CLOCK_MONOTONIC instant each method saw B gone."""
    tag = spec["tag"]
    seen: dict[str, float] = {}
    methods = []
    if spec["engine"] == "redis":
        redis = await redis_client(spec["url"])
        await redis.config_set("notify-keyspace-events", "Ex")
        pubsub = redis.pubsub()
        await pubsub.subscribe("__keyevent@0__:expired")
        key = f"live:{tag}:B"

        async def alive() -> bool:
            return bool(await redis.exists(key))

        def heard() -> bool:
            return True

        async def expired_event():
            async for message in pubsub.listen():
                if message["type"] == "message" and message["data"] == key.encode():
                    seen.setdefault("redis_expired_event", time.monotonic())
                    return

        methods = ["redis_exists_poll", "redis_expired_event"]
        watchers = [expired_event()]
    else:
        from nats.js.errors import KeyDeletedError, KeyNotFoundError

        nc = await nats_client(spec["url"])
        kv = await key_value(nc.jetstream(), f"live_{tag}", history=1, ttl=TTL)
        last_beat = [0.0]

        async def on_beat(msg):
            last_beat[0] = time.monotonic()

        await nc.subscribe(f"heartbeat.{tag}.B", cb=on_beat)

        def heard() -> bool:
            return bool(last_beat[0])

        async def alive() -> bool:
            try:
                await kv.get("B")
                return True
            except (KeyNotFoundError, KeyDeletedError):
                return False

        async def heartbeat_silence():
            while time.monotonic() - last_beat[0] <= TTL:
                await asyncio.sleep(POLL)
            seen.setdefault("nats_heartbeat_subject", time.monotonic())

        methods = ["nats_kv_ttl_poll", "nats_heartbeat_subject"]
        watchers = [heartbeat_silence()]

    async def poll():
        while await alive():
            await asyncio.sleep(POLL)
        seen.setdefault(methods[0], time.monotonic())

    deadline = time.monotonic() + 10
    while not (await alive() and heard()):  # B's first heartbeat is in before "ready"
        if time.monotonic() > deadline:
            raise RuntimeError("node B never seen alive")
        await asyncio.sleep(POLL)
    emit({"ready": True})
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(poll(), *watchers), TTL * 5)
    return {method: seen.get(method) for method in methods}


# ---------------------------------------------------------------- (d) engine restart


class RedisWriter:
    def __init__(self, url: str, tag: str):
        self.url, self.stream = url, f"durable:{tag}"

    async def open(self) -> None:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # No retries of the client's own: the writer retries, and counts what that costs.
        self.redis = Redis.from_url(self.url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=0.5, socket_timeout=1)

    async def write(self, seqs: range) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for seq in seqs:
                pipe.xadd(self.stream, {"s": seq})
            await pipe.execute()

    async def stored(self) -> list[int]:
        seqs, start = [], "-"
        while True:
            entries = await self.redis.xrange(self.stream, min=start, count=10_000)
            seqs += [int(fields[b"s"]) for _, fields in entries]
            if len(entries) < 10_000:
                return seqs
            start = b"(" + entries[-1][0]

    async def close(self) -> None:
        await self.redis.delete(self.stream)
        await self.redis.aclose()


class NatsWriter:
    def __init__(self, url: str, tag: str):
        self.url, self.tag = url, tag
        self.stream, self.subject = f"DURABLE_{tag}", f"durable.{tag}"

    async def open(self) -> None:
        import nats
        from nats.js.api import StorageType

        async def expected(error):  # the engine is down on purpose: no tracebacks
            pass

        self.nc = await nats.connect(
            self.url, connect_timeout=1, reconnect_time_wait=0.05, max_reconnect_attempts=200, error_cb=expected
        )
        self.js = self.nc.jetstream()
        await self.js.add_stream(name=self.stream, subjects=[self.subject], storage=StorageType.FILE)

    async def write(self, seqs: range) -> None:
        # The same Nats-Msg-Id on a retry: the engine stores a re-sent message once.
        stored = [
            await self.js.publish_async(self.subject, b"%d" % seq, headers={"Nats-Msg-Id": f"{self.tag}-{seq}"})
            for seq in seqs
        ]
        await asyncio.wait_for(asyncio.gather(*stored), 0.5)

    async def stored(self) -> list[int]:
        seqs = []
        subscription = await self.js.subscribe(self.subject, ordered_consumer=True)
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            while True:
                seqs.append(int((await subscription.next_msg(timeout=1)).data))
        await subscription.unsubscribe()
        return seqs

    async def close(self) -> None:
        await self.js.delete_stream(self.stream)
        await self.nc.close()


async def role_writer(spec: dict) -> dict:
    """Durable writes, 64 a batch, for `seconds`; a failed batch is retried (20 ms apart)
    until the engine acknowledges it. Then what the engine holds is read back."""
    writer = {"redis": RedisWriter, "nats": NatsWriter}[spec["engine"]](spec["url"], spec["tag"])
    await writer.open()
    acked, seq, failures, failed, recovered = 0, 0, 0, False, None
    deadline = time.monotonic() + spec["seconds"]
    while time.monotonic() < deadline:
        try:
            await writer.write(range(seq, seq + 64))
        except Exception:  # noqa: BLE001 - whatever the client raises while the engine is down
            failures += 1
            failed = True
            await asyncio.sleep(0.02)
            continue
        if failed and recovered is None:
            recovered = time.monotonic()
        if seq == 0:
            emit({"ready": True})
        seq += 64
        acked = seq
    stored = await writer.stored()
    await writer.close()
    return {
        "acked": acked,
        "stored": len(stored),
        "acked_lost": len(set(range(acked)) - set(stored)),
        "duplicates": len(stored) - len(set(stored)),
        "failed_batches": failures,
        "recovered": recovered,
    }


ROLES = {
    "receiver": role_receiver,
    "sender": role_sender,
    "registry": role_registry,
    "heartbeat": role_heartbeat,
    "watcher": role_watcher,
    "writer": role_writer,
}


def node_main(role: str, spec_json: str) -> None:
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    emit({"result": run(ROLES[role](json.loads(spec_json)))})


# ---------------------------------------------------------------- the parent


class Node:
    """One node process: JSON lines from its stdout, commands to its stdin."""

    def __init__(self, role: str, process: asyncio.subprocess.Process):
        self.role, self.process = role, process

    @classmethod
    async def start(cls, role: str, spec: dict) -> Node:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.cluster_engine",
            role,
            json.dumps(spec),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 24,
        )
        return cls(role, process)

    async def line(self, timeout: float = NODE_TIMEOUT) -> dict:
        data = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not data:
            raise RuntimeError(f"{self.role} node exited ({await self.process.wait()}) without an answer")
        try:
            return json.loads(data)
        except ValueError as error:
            raise RuntimeError(
                f"{self.role} node said {len(data)} bytes that are not JSON ({error}): "
                f"{data[:100]!r} ... {data[-100:]!r}"
            ) from None

    async def ready(self) -> None:
        if not (await self.line()).get("ready"):
            raise RuntimeError(f"{self.role} node did not say it was ready")

    async def result(self, timeout: float = NODE_TIMEOUT) -> dict:
        return (await self.line(timeout))["result"]

    def tell(self, text: str = "go") -> None:
        self.process.stdin.write(text.encode() + b"\n")

    async def finish(self) -> dict:
        self.process.stdin.close()
        return await self.result()

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()


@contextlib.asynccontextmanager
async def nodes():
    started: list[Node] = []

    async def start(role: str, spec: dict) -> Node:
        started.append(await Node.start(role, spec))
        return started[-1]

    try:
        yield start
    finally:
        for node in started:
            await node.stop()


class EngineCpu:
    """CPU seconds of the engine's process (None for an engine this run did not start)."""

    def __init__(self, pid: int | None):
        self.pid = pid

    def seconds(self) -> float | None:
        if self.pid is None:
            return None
        with open(f"/proc/{self.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def per_message_us(seconds: float | None, messages: int) -> float | None:
    return None if seconds is None or not messages else round(seconds / messages * 1e6, 1)


async def delivery(mode: str, url: str, cpu: EngineCpu, sizes: dict) -> dict:
    tag = f"{mode}{os.getpid()}{random.randrange(1 << 30)}"
    spec = {"mode": mode, "url": url, "tag": tag, **sizes}
    async with nodes() as start:
        receiver = await start("receiver", spec)
        await receiver.ready()
        engine_before = cpu.seconds()
        sender = await start("sender", spec)
        sent = await sender.result(NODE_TIMEOUT)
        engine = cpu.seconds()
        took = await receiver.finish()
    messages = sent["p1"]["acked"] + sent["p2"]["acked"]
    figures = {"mode": mode}
    for phase, prefix in (("p1", "rate"), ("p2", "max")):
        part = sent[phase]
        figures.update(
            {
                f"{prefix}_sent_per_s": part["sent_per_s"],
                f"{prefix}_acked_per_s": part["acked_per_s"],
                f"{prefix}_ack_p50_ms": part["ack_p50_ms"],
                f"{prefix}_ack_p99_ms": part["ack_p99_ms"],
                f"{prefix}_one_way_p50_ms": took[f"{phase}_one_way_p50_ms"],
                f"{prefix}_one_way_p99_ms": took[f"{phase}_one_way_p99_ms"],
                f"{prefix}_lost": part["lost"],
            }
        )
    figures.update(
        {
            "duplicates": took["duplicates"],
            "out_of_order": took["out_of_order"],
            "max_messages": sent["p2"]["sent"],
            "engine_cpu_us_per_msg": per_message_us(
                None if engine_before is None else engine - engine_before, messages + WARM_UP
            ),
            "nodes_cpu_us_per_msg": per_message_us(sent["cpu_s"] + took["cpu_s"], messages + WARM_UP),
        }
    )
    return figures


async def registry(engine: str, url: str, sizes: dict) -> dict:
    tag = f"{engine}{os.getpid()}{random.randrange(1 << 30)}"
    async with nodes() as start:
        members = [
            await start("registry", {"engine": engine, "url": url, "tag": tag, "node": node, "users": sizes["users"]})
            for node in ("A", "B")
        ]
        for member in members:
            await member.ready()
        for member in members:
            member.tell()
        results = [await member.result() for member in members]
    figures = {"engine": engine, "users": sizes["users"] * len(members), "resources_per_user": RESOURCES}
    for name in ("register", "lookup", "unregister"):
        parts = [result[name] for result in results]
        latencies = [latency / 1e5 for part in parts for latency in part["latencies"]]
        figures[f"{name}_per_s"] = round(sum(part["ops"] for part in parts) / max(part["seconds"] for part in parts), 1)
        figures[f"{name}_p50_ms"] = ms(percentile(latencies, 0.5))
        figures[f"{name}_p99_ms"] = ms(percentile(latencies, 0.99))
    figures["cas_retries"] = sum(result["cas_retries"] for result in results)
    return figures


async def liveness(engine: str, url: str, sizes: dict, run: int) -> dict:
    """SIGKILL node B `kills` times; per method, the times until node A saw it gone (ms,
    None for a death it missed)."""
    chance = random.Random(run)  # the same kill points for both engines
    seen: dict[str, list[float | None]] = {}
    for trial in range(sizes["kills"]):
        spec = {"engine": engine, "url": url, "tag": f"{engine}{os.getpid()}r{run}t{trial}"}
        async with nodes() as start:
            victim = await start("heartbeat", spec)
            await victim.ready()
            watcher = await start("watcher", spec)
            await watcher.ready()
            await asyncio.sleep(chance.uniform(0.2, 1.2))  # a random point of the heartbeat
            killed = time.monotonic()
            victim.process.kill()
            await victim.process.wait()
            for method, when in (await watcher.result(TTL * 6)).items():
                seen.setdefault(method, []).append(None if when is None else ms(when - killed))
    return seen


async def restart(kind: str, engine, sizes: dict, run: int) -> dict:
    """SIGKILL the engine under a stream of acknowledged writes, start it again on the
    same port DOWN seconds later: what was acknowledged must all be there, once."""
    spec = {"engine": kind, "url": engine.url, "tag": f"{kind}{os.getpid()}r{run}", "seconds": sizes["write_seconds"]}
    async with nodes() as start:
        writer = await start("writer", spec)
        await writer.ready()
        await asyncio.sleep(sizes["write_seconds"] / 4)
        killed = time.monotonic()
        engine.kill()
        await asyncio.sleep(DOWN)
        starting = time.monotonic()
        engine.start()  # in this thread: PR_SET_PDEATHSIG follows the thread that forks
        started = time.monotonic() - starting
        result = await writer.result()
    recovered = result.pop("recovered")
    return {
        "engine": kind,
        **result,
        "engine_start_ms": ms(started),
        "written_again_after_kill_ms": None if recovered is None else ms(recovered - killed),
    }


def engine_versions() -> dict:
    import subprocess

    from tests.support.engines import binary

    versions = {}
    for kind in ("redis", "nats"):
        try:
            out = subprocess.run([binary(kind), "--version"], capture_output=True, text=True, timeout=10).stdout
        except Exception as error:  # noqa: BLE001 - a version is context only
            out = repr(error)
        versions[kind] = out.strip().splitlines()[0] if out.strip() else "?"
    import redis
    from nats.aio.client import __version__ as nats_py

    versions["clients"] = f"redis-py {redis.__version__} (hiredis: {redis.utils.HIREDIS_AVAILABLE}), nats-py {nats_py}"
    return versions


async def forget_buckets(url: str) -> None:
    """Delete the key-value buckets of (b) and (c), named after this process."""
    nc = await nats_client(url)
    js = nc.jetstream()
    for info in await js.streams_info():
        if info.config.name.startswith("KV_") and str(os.getpid()) in info.config.name:
            await js.delete_stream(info.config.name)
    await nc.close()


async def run_all(sizes: dict, urls: dict, engines: dict, runs: int) -> dict:
    """Every part in turn, `runs` times; `engines` has the EngineProcess of each engine
    this run started (the engine's CPU time and the restart need it). Medians over the
    runs; the liveness part pools its kills."""
    per_run: dict[str, dict[str, list]] = {"delivery": {}, "registry": {}, "liveness": {}, "restart": {}}
    for run in range(1, runs + 1):
        cpus = {kind: EngineCpu(engines[kind].process.pid if kind in engines else None) for kind in urls}
        parts = [
            (
                "delivery",
                mode,
                lambda mode=mode: delivery(mode, urls[mode.split("_")[0]], cpus[mode.split("_")[0]], sizes),
            )
            for mode in MODES
        ]
        parts += [("registry", kind, lambda kind=kind: registry(kind, urls[kind], sizes)) for kind in urls]
        parts += [("liveness", kind, lambda kind=kind: liveness(kind, urls[kind], sizes, run)) for kind in urls]
        parts += [("restart", kind, lambda kind=kind: restart(kind, engines[kind], sizes, run)) for kind in engines]
        for part, name, measure in parts:
            log(f"cluster_engine / {part} / {name}: run {run} of {runs}")
            LOAD.append(os.getloadavg()[0])
            began = time.monotonic()
            try:
                figures = await asyncio.wait_for(measure(), NODE_TIMEOUT * 2)
            except Exception as error:  # reported; the other parts carry on
                figures = {"error": repr(error)[:500]}
            LOAD.append(os.getloadavg()[0])
            if part != "liveness":
                figures["part_seconds"] = round(time.monotonic() - began, 1)
            per_run[part].setdefault(name, []).append(figures)
            print(
                json.dumps({"scenario": "cluster_engine", "part": part, "name": name, "run": run, **figures}),
                flush=True,
            )
    if "nats" in urls:
        await forget_buckets(urls["nats"])
    results = {
        part: {name: report.median_of_runs(values) for name, values in names.items()}
        for part, names in per_run.items()
        if part != "liveness"
    }
    results["liveness"] = {}
    for name, values in per_run["liveness"].items():
        pooled: dict = {}
        for figures in values:
            for method, times in figures.items():
                pooled.setdefault(method, []).extend(times if isinstance(times, list) else [times])
        results["liveness"][name] = pooled
    return results


# ---------------------------------------------------------------- the results


def _table(columns: dict, keys: list[str] | None = None) -> str:
    names = list(columns)
    keys = keys or [
        key for key in {k: 0 for figures in columns.values() for k in figures} if key not in ("mode", "engine", "error")
    ]
    lines = ["| figure | better | " + " | ".join(names) + " |", "|---|---|" + "---:|" * len(names)]
    for key in keys:
        lines.append(
            f"| {key} | {report.direction(key) or ''} | "
            + " | ".join(report.fmt(columns[name].get(key)) for name in names)
            + " |"
        )
    for name in names:
        if "error" in columns[name]:
            lines.append(f"\n{name}: error: {columns[name]['error']}")
    return "\n".join(lines)


def _liveness_table(results: dict) -> str:
    lines = ["| engine | method | kills | missed | min_ms | median_ms | max_ms |", "|---|---|---:|---:|---:|---:|---:|"]
    for engine, pooled in results.items():
        for error in pooled.get("error", []):
            lines.append(f"| {engine} | error: {error} | | | | | |")
        for method, times in pooled.items():
            found = [time_ for time_ in times if time_ is not None]
            if method != "error":
                lines.append(
                    f"| {engine} | {method} | {len(times)} | {len(times) - len(found)} | "
                    f"{report.fmt(min(found, default=None))} | "
                    f"{report.fmt(statistics.median(found) if found else None)} | "
                    f"{report.fmt(max(found, default=None))} |"
                )
    return "\n".join(lines)


def section(results: dict, sizes: dict, runs: int, versions: dict, command: str) -> str:
    machine = report.machine()
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return "\n".join(
        [
            HEADING,
            "",
            f"Run on {now} with `{command}`: two OS processes stand for two xmppd nodes, on one engine "
            f"each time (bench/cluster_engine.py says what each part does); medians of {runs} run(s), the "
            "parts of a run one after the other, the kills of (c) pooled over the runs.",
            "",
            f"- Machine: {machine['nproc']} CPUs, {machine['cpu']}, Linux {machine['kernel']}, "
            f"Python {machine['python']}, {machine['loop']} in the nodes",
            f"- Engines: {versions['redis']} (append-only file, fsync every second); {versions['nats']} "
            f"(JetStream file store). Clients: {versions['clients']}.",
            "- Everything on one machine over loopback: the engine and both nodes share the same "
            f"{machine['nproc']} CPUs (nothing pinned), no network between the nodes; these are the costs "
            "of the engines and their Python clients, not of a real network.",
            f"- Load average (1 min) around the parts: min {min(LOAD, default=0):.1f}, max {max(LOAD, default=0):.1f} "
            f"on {machine['nproc']} CPUs"
            + (
                ": the machine was busy with other work, the figures are low and noisy."
                if max(LOAD, default=0) > (machine["nproc"] or 1)
                else "."
            ),
            "",
            f"(a) Delivery, 400-byte payloads A to B, acknowledged back to A: `rate_*` at {RATE:,} messages/s "
            f"for {sizes['rate_seconds']:.0f} s, `max_*` with {WINDOW} unacknowledged at most "
            f"({sizes['max_count']:,} messages or {sizes['max_seconds']:.0f} s). `*_cpu_us_per_msg`: CPU "
            "time per acknowledged message of the engine and of both nodes together.",
            "",
            _table(results["delivery"]),
            "",
            f"(b) Session registry: {RESOURCES} resources per user, two nodes at once, "
            f"{REGISTRY_IN_FLIGHT} operations in flight each.",
            "",
            _table(results["registry"]),
            "",
            f"(c) A SIGKILLed node: time from the kill to the other node seeing it gone; liveness "
            f"refreshed every {HEARTBEAT} s with a {TTL:.0f} s lifetime, watched every {POLL} s; kills at "
            "random points of the heartbeat, the same for both engines.",
            "",
            _liveness_table(results["liveness"]),
            "",
            f"(d) The engine SIGKILLed under a stream of acknowledged writes (64 a batch; a failed "
            f"batch is retried every 20 ms), started again on the same port {DOWN} s later: "
            "`acked_lost` counts acknowledged writes missing after the restart, `duplicates` writes "
            "stored twice (a retried batch the engine had partly taken), `engine_start_ms` the time "
            "from starting the engine to its first answer, `written_again_after_kill_ms` from the "
            f"SIGKILL to the writer's next acknowledged batch ({DOWN} s of it with no engine at all).",
            "",
            _table(results["restart"]) if results["restart"] else "Not run: the engines were not started by this run.",
            "",
        ]
    )


def run(args, command: str) -> int:
    """The cluster_engine scenario with the options of ``python -m bench``."""
    from tests.support.engines import ENV_EXTERNAL, EngineProcess

    sizes = SIZES["quick" if args.quick else "full"]
    with tempfile.TemporaryDirectory(prefix="xmppd-bench-engines-") as scratch:
        urls, started = {}, {}
        try:
            for kind in ("redis", "nats"):
                if os.environ.get(ENV_EXTERNAL[kind]):  # neither CPU time nor a restart then
                    urls[kind] = os.environ[ENV_EXTERNAL[kind]]
                    continue
                started[kind] = EngineProcess(kind, Path(scratch) / kind).start()
                urls[kind] = started[kind].url
            log(f"cluster_engine: engines at {', '.join(urls.values())}")
            results = asyncio.run(run_all(sizes, urls, started, args.runs or 1))
        finally:
            for engine in started.values():
                engine.stop()
    text = section(results, sizes, args.runs or 1, engine_versions(), command)
    print()
    print(text)
    path = args.results or (None if args.quick else str(Path(__file__).parent / "RESULTS.md"))
    if path:
        report.record_section(Path(path), HEADING, text)
        log(f"cluster engine figures written to {path}")
    return 0 if all("error" not in figures for part in results.values() for figures in part.values()) else 1


if __name__ == "__main__":
    node_main(sys.argv[1], sys.argv[2])
