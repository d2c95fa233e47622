"""Storage writes under way in the background, per owner.

A write started here does not hold up the stanza that caused it: the next stanza can be
routed while this one's commit is in flight, so that one sender's messages share group
commits. It is not forgotten either: whoever reads the owner's data back (a MAM query,
the delivery of an offline queue) first waits for `settled(owner)`, and shutdown waits
for every write still under way.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Coroutine

if TYPE_CHECKING:
    from xmppd.services import Tasks


class PendingWrites:
    def __init__(self, tasks: "Tasks"):
        self.tasks = tasks
        self.by_owner: dict[str, set[asyncio.Task]] = {}

    def start(self, owner: str, write: Coroutine) -> asyncio.Task:
        """Run `write` in the background, counted among `owner`'s writes until it ends."""
        task = self.tasks.spawn(write)
        self.add(owner, task)
        return task

    def add(self, owner: str, task: asyncio.Task) -> None:
        """Count `task`, already running, among `owner`'s writes (a write shared by several owners)."""
        tasks = self.by_owner.setdefault(owner, set())
        if task not in tasks:
            tasks.add(task)
            task.add_done_callback(lambda done: self._finished(owner, done))

    def _finished(self, owner: str, task: asyncio.Task) -> None:
        tasks = self.by_owner.get(owner)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self.by_owner[owner]

    async def settled(self, owner: str) -> None:
        """Wait until every write for `owner` started so far is over (failed ones too)."""
        tasks = self.by_owner.get(owner)
        if tasks:
            await asyncio.wait(set(tasks))

    async def all_settled(self, timeout: float) -> int:
        """Wait up to `timeout` seconds for every write under way; how many did not end."""
        tasks = {task for tasks in self.by_owner.values() for task in tasks}
        if not tasks:
            return 0
        _, late = await asyncio.wait(tasks, timeout=timeout)
        return len(late)
