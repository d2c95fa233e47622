"""Time-ordered unique ids for stored stanzas (offline queue, archives).

An id is a UUID version 7 (RFC 9562): 48 bits of Unix milliseconds, then a 12-bit
counter (RFC 9562 section 6.2, method 1) and 62 random bits. Within one process the
ids only grow, even when the clock steps back; the random bits keep ids of several
nodes apart. Their canonical lowercase form sorts as the ids were made.

The random bits tell ids apart, they guard no secret: they come from a generator seeded
once from the OS (an OS call per id was a tenth of the cost of archiving a message).
"""

from __future__ import annotations

import os
import random
import threading
import time

_COUNTER_MAX = 0xFFF
_random = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(32)))  # workers' ids stay apart
_lock = threading.Lock()
_last_ms = 0
_counter = 0


_last_at = [0, 0]  # ms and counter of the last id made with `at`


def time_ordered_id(at: float | None = None) -> str:
    """A new UUIDv7 string, greater than every id this process made before; or, `at` a
    Unix time, one that sorts among the ids made at that time, after the one made with
    the same millisecond just before (stanzas kept late, in the places they had)."""
    global _last_ms, _counter
    if at is not None:
        with _lock:
            ms = int(at * 1000)
            if ms == _last_at[0] and _last_at[1] < _COUNTER_MAX:
                _last_at[1] += 1
            else:
                _last_at[:] = [ms, _random.randrange(_COUNTER_MAX // 2)]
            return _uuid7(*_last_at)
    with _lock:
        now = time.time_ns() // 1_000_000
        if now > _last_ms:
            _last_ms, _counter = now, _random.randrange(_COUNTER_MAX // 2)
        elif _counter < _COUNTER_MAX:
            _counter += 1
        else:  # 4096 ids in one millisecond: borrow the next one
            _last_ms, _counter = _last_ms + 1, 0
        ms, counter = _last_ms, _counter
    return _uuid7(ms, counter)


def _uuid7(ms: int, counter: int) -> str:
    value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | _random.getrandbits(62)
    digits = f"{value:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
