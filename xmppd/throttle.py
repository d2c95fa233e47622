"""Budgets of authentication attempts, per address and per account from an address.

Every password check takes one attempt from two token buckets: the address's (an IPv6
address counts as its whole network of `ipv6_prefix` bits, as one host owns a /64) and
the account's from that address. An empty bucket refuses the attempt *before* the
password is checked; a bucket refills in `auth_failure_window` seconds, and a successful
login gives its attempt back, so the budgets count failures. The account's budget is
kept per address on purpose: a stranger guessing a user's password uses up only his own
addresses' budgets and never locks the user out of his account from elsewhere.

Sans-IO: the clock is injected, nothing here sleeps.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import time
from collections.abc import Callable

MAX_FAILURE_DELAY = 30.0  # seconds; the longest a failure's answer is held back
MAX_BUCKETS = 100_000  # per kind: bounds the memory an address scan can take


@functools.lru_cache(maxsize=65536)
def address_group(peer: str, ipv6_prefix: int) -> str:
    """The key of every per-address limit: the address itself for IPv4 (also when it
    arrives IPv4-mapped on a dual-stack socket), its /`ipv6_prefix` network for IPv6."""
    try:
        address = ipaddress.ip_address(peer.split("%")[0])
    except ValueError:
        return peer
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, ipv6_prefix), strict=False))
    return str(address)


class TokenBuckets:
    """One bucket of `capacity` tokens per key, refilled evenly over `window` seconds."""

    def __init__(self, capacity: int, window: float, clock: Callable[[], float]):
        self.capacity = capacity
        self.rate = capacity / window if window > 0 else math.inf
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, as of)

    def tokens(self, key: str) -> float:
        tokens, since = self._buckets.get(key, (self.capacity, 0.0))
        return min(self.capacity, tokens + (self.clock() - since) * self.rate)

    def spent(self, key: str) -> int:
        """Tokens missing from the bucket, rounded up: the recent failures of `key`."""
        return math.ceil(self.capacity - self.tokens(key))

    def add(self, key: str, amount: float) -> None:
        tokens = min(self.capacity, self.tokens(key) + amount)
        self._buckets.pop(key, None)  # re-inserted last: the dict is in order of use
        if tokens < self.capacity:
            self._buckets[key] = (tokens, self.clock())
            if len(self._buckets) > MAX_BUCKETS:
                del self._buckets[next(iter(self._buckets))]


class AuthThrottle:
    """The attempt budgets of [c2s] and the delay of a failure's answer."""

    def __init__(self, options, clock: Callable[[], float] = time.monotonic):
        self.options = options
        self.per_address = TokenBuckets(options.auth_failures_per_ip, options.auth_failure_window, clock)
        self.per_account = TokenBuckets(options.auth_failures_per_account, options.auth_failure_window, clock)

    def group(self, peer: str) -> str:
        return address_group(peer, self.options.ipv6_prefix)

    def attempt(self, peer: str, account: str) -> str | None:
        """Take one attempt for `account` (a bare JID) from `peer`: None when granted, else
        the config key (section.option) of the budget that is used up."""
        address = self.group(peer)
        keys = (
            (self.per_address, address, "c2s.auth_failures_per_ip"),
            (self.per_account, f"{account} {address}", "c2s.auth_failures_per_account"),
        )
        for buckets, key, limit in keys:
            if buckets.tokens(key) < 1:
                return limit
        for buckets, key, _ in keys:
            buckets.add(key, -1)
        return None

    def succeeded(self, peer: str, account: str) -> None:
        """The attempt logged in: it gives its tokens back."""
        address = self.group(peer)
        self.per_address.add(address, 1)
        self.per_account.add(f"{account} {address}", 1)

    def failure_delay(self, peer: str) -> float:
        """How long to hold back the answer to a failure: nothing for the first recent
        failure from the address, then `auth_failure_delay`, doubling, up to 30 s."""
        failures = self.per_address.spent(self.group(peer))
        if failures < 2 or not self.options.auth_failure_delay:
            return 0.0
        return min(self.options.auth_failure_delay * 2 ** min(failures - 2, 16), MAX_FAILURE_DELAY)
