"""Small helpers shared by the Cassandra stores."""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TypeVar

# Listings across many owners are spread over this many partitions (see 001_initial.cql).
# Part of the data layout: changing it needs a migration of the *_owners/by_* tables.
SHARDS = 16

# Most requests a store keeps in flight for one call (deletes and counts over many
# partitions): enough to hide latency, not enough to swamp a coordinator.
FAN_OUT = 32

T = TypeVar("T")


def shard_of(key: str) -> int:
    return zlib.crc32(key.encode("utf-8")) % SHARDS


def now_micros() -> int:
    """A write timestamp as Cassandra uses them (microseconds since the epoch)."""
    return time.time_ns() // 1000


async def bounded_gather(calls: Iterable[Callable[[], Awaitable[T]]], limit: int = FAN_OUT) -> list[T]:
    """Run the calls with at most `limit` in flight; results in order. Every call has
    finished (or was never started) when the first error is raised."""
    calls = list(calls)
    results: list = [None] * len(calls)
    semaphore = asyncio.Semaphore(limit)

    async def run(index: int, call) -> None:
        async with semaphore:
            results[index] = await call()

    outcomes = await asyncio.gather(*(run(i, call) for i, call in enumerate(calls)), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return results


async def merge_sorted(iterators: list[AsyncIterator[str]]) -> AsyncIterator[str]:
    """Merge ascending async iterators into one ascending iterator without duplicates.

    Each shard of an owners table is sorted by its clustering key; merging keeps the
    listing sorted while reading every shard page by page.
    """
    heads: dict[int, str] = {}

    async def advance(index: int) -> None:
        try:
            heads[index] = await anext(iterators[index])
        except StopAsyncIteration:
            heads.pop(index, None)

    await asyncio.gather(*(advance(index) for index in range(len(iterators))))
    last = None
    while heads:
        index = min(heads, key=heads.__getitem__)
        value = heads[index]
        if value != last:
            yield value
            last = value
        await advance(index)
