"""Counters of what the server does, read by the admin tool (and /metrics later)."""
from __future__ import annotations

import collections


class Metrics:
    def __init__(self):
        self.counters: collections.Counter = collections.Counter()

    def count(self, name: str, amount: int = 1) -> None:
        self.counters[name] += amount
