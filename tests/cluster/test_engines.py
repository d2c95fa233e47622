"""The cluster engines the tests start (tests/support/engines.py, issue 15) serve what
the cluster keeps in them: a key that lives as long as its TTL, as a node's liveness
key and its users' session entries will. Each test writes a key with a short TTL,
reads it back, and polls (bounded) until the engine has dropped it."""

import asyncio
import time
import uuid

TTL = 0.5  # seconds
DEADLINE = 10.0  # seconds for an expired key to be gone


async def poll_until_gone(read) -> float:
    """Seconds until `read()` returns None, polled every 20 ms within DEADLINE."""
    began = time.monotonic()
    while await read() is not None:
        assert time.monotonic() - began < DEADLINE, f"the key outlived its {TTL} s TTL by {DEADLINE} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - began


async def test_redis_key_expires_after_its_ttl(redis_engine):
    from redis.asyncio import Redis

    client = Redis.from_url(redis_engine)
    key = f"test:node:{uuid.uuid4().hex}"
    try:
        written = time.monotonic()
        assert await client.set(key, b"alive", px=int(TTL * 1000))
        assert await client.get(key) == b"alive"
        assert 0 < await client.pttl(key) <= TTL * 1000
        await poll_until_gone(lambda: client.get(key))
        assert time.monotonic() - written >= TTL * 0.9  # not dropped early either
    finally:
        await client.aclose()


async def test_nats_key_value_entry_expires_after_the_bucket_ttl(nats_engine):
    import nats
    from nats.js.errors import KeyNotFoundError

    connection = await nats.connect(nats_engine, connect_timeout=5, max_reconnect_attempts=0)
    js = connection.jetstream()
    bucket = f"test_{uuid.uuid4().hex}"
    try:
        kv = await js.create_key_value(bucket=bucket, ttl=TTL)

        async def read():
            try:
                return (await kv.get("node1")).value
            except KeyNotFoundError:
                return None

        written = time.monotonic()
        await kv.put("node1", b"alive")
        assert await read() == b"alive"
        await poll_until_gone(read)
        assert time.monotonic() - written >= TTL * 0.9
    finally:
        await js.delete_key_value(bucket)
        await connection.close()
