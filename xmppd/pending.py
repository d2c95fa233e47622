"""Storage writes under way in the background, per owner.

A write started here does not hold up the stanza that caused it: the next stanza can be
routed while this one's commit is in flight, so that one sender's messages share group
commits. It is not forgotten either: whoever reads the owner's data back (a MAM query,
the delivery of an offline queue) first waits for `settled(owner)`, and shutdown waits
for every write still under way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xmppd.services import Tasks
    from xmppd.storage.interfaces import ArchivedStanza, ArchiveStore

RETRY_DELAYS = (0.1, 0.5, 2.0, 5.0, 10.0)  # seconds between attempts of a failed archive write


class PendingWrites:
    def __init__(self, tasks: Tasks):
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


class ArchiveWriter:
    """Appends to an archive in the background, batched: the items given while the event
    loop runs one turn go to storage as one ArchiveStore.append_many (no task and no
    commit per message), retried when it fails (it is idempotent). `append` returns the
    task to wait for: a sender's XEP-0198 ack waits for it (Stanza.writes), a query of
    the owner's archive waits for `settled(owner)`. At most `max_pending` items are under
    way; beyond that `append` waits, so memory stays bounded when storage stalls."""

    def __init__(
        self,
        store: ArchiveStore,
        tasks: Tasks,
        log: logging.Logger,
        *,
        max_pending: int,
        on_added: Callable[[str], Awaitable[None]] | None = None,
    ):
        self.store = store
        self.pending = PendingWrites(tasks)
        self._tasks = tasks
        self._log = log
        self._room = asyncio.Semaphore(max_pending)
        self._on_added = on_added
        self._batch: list[tuple[str, ArchivedStanza]] = []
        self._write: asyncio.Task | None = None

    async def append(self, owner: str, item: ArchivedStanza) -> asyncio.Task:
        await self._room.acquire()
        if self._write is None:  # a task starts at the loop's next turn: the batch fills till then
            self._write = self._tasks.spawn(self._write_batch())
        self._batch.append((owner, item))
        self.pending.add(owner, self._write)
        return self._write

    async def settled(self, owner: str) -> None:
        await self.pending.settled(owner)

    async def all_settled(self, timeout: float) -> int:
        return await self.pending.all_settled(timeout)

    async def _write_batch(self) -> None:
        batch, self._batch, self._write = self._batch, [], None
        try:
            for delay in (*RETRY_DELAYS, None):
                try:
                    added = await self.store.append_many(batch)
                    break
                except Exception:
                    if delay is None:
                        self._log.exception("event=archive-write-failed items=%d first=%s", len(batch), batch[0][1].id)
                        return
                    self._log.warning("event=archive-write-retry items=%d in=%s", len(batch), delay, exc_info=True)
                    await asyncio.sleep(delay)
            if self._on_added is not None:
                for (owner, _), new in zip(batch, added):
                    if new:
                        await self._on_added(owner)
        finally:
            for _ in batch:
                self._room.release()
