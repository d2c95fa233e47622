"""One asyncio lock per key (a user's roster, a user's offline queue...).

Read-modify-write sequences on one user's data must not interleave across awaits;
locks of different users never block each other. A lock lives only while someone
holds or waits for it.
"""

from __future__ import annotations

import asyncio
import weakref


class KeyedLocks:
    def __init__(self):
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def __call__(self, key: str) -> asyncio.Lock:
        """The lock of `key`: use as `async with locks(key):`."""
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock
