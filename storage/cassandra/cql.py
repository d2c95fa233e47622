"""The Cassandra session, bridged into asyncio.

The DataStax driver does its network I/O on its own event loop thread (libev when the
driver was compiled with it, else asyncore/asyncio), so it never runs on ours, which
may be uvloop. A request is sent with ``session.execute_async``; the driver thread
completes the ``ResponseFuture`` and hands the result over to our loop with
``loop.call_soon_threadsafe``. Only what blocks by nature (connecting, preparing a
statement, which the driver offers only synchronously) runs in a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from cassandra import ConsistencyLevel
from cassandra.query import BatchStatement, BatchType, PreparedStatement, SimpleStatement

# Rows fetched per round trip when a read walks a whole partition or table.
PAGE_SIZE = 1000


class CqlSession:
    """Prepared statements and asynchronous execution on one driver session."""

    def __init__(self, session, *, timeout: float, consistency: str):
        self.session = session
        self.timeout = timeout
        self.consistency = consistency_level(consistency)
        self.keyspace: str | None = None
        self._prepared: dict[str, PreparedStatement] = {}
        self._preparing: dict[str, asyncio.Future] = {}

    async def use_keyspace(self, keyspace: str) -> None:
        """Make unqualified table names refer to `keyspace`.

        With protocol v5 the keyspace travels with each statement; ``USE`` on the
        connections (which Cassandra 5 warns about for prepared statements) is only
        the fallback for older protocol versions.
        """
        from cassandra import ProtocolVersion

        if ProtocolVersion.uses_keyspace_flag(self.session.cluster.protocol_version):
            self.keyspace = keyspace
        else:
            await asyncio.to_thread(self.session.set_keyspace, keyspace)
        self._prepared.clear()

    async def prepare(self, cql: str, *, idempotent: bool = True) -> PreparedStatement:
        """The prepared statement of `cql`, prepared once per session.

        `idempotent` tells the driver that a timed-out statement may be retried: true
        for every plain read and upsert, false for lightweight transactions.
        """
        prepared = self._prepared.get(cql)
        if prepared is not None:
            return prepared
        pending = self._preparing.get(cql)
        if pending is None:
            pending = self._preparing[cql] = asyncio.ensure_future(self._prepare_once(cql, idempotent))
        return await asyncio.shield(pending)

    async def _prepare_once(self, cql: str, idempotent: bool) -> PreparedStatement:
        try:
            prepared = await asyncio.to_thread(self.session.prepare, cql, None, self.keyspace)
            prepared.is_idempotent = idempotent
            self._prepared[cql] = prepared
            return prepared
        finally:
            del self._preparing[cql]

    async def execute(
        self,
        cql: str | Any,
        params: Sequence = (),
        *,
        idempotent: bool = True,
        fetch_size: int | None = None,
        paging_state: bytes | None = None,
    ):
        """Run one statement; returns the driver's ResultSet of the first page only.

        Read ``.current_rows`` (never iterate the ResultSet itself: fetching the next
        page would block) and pass ``.paging_state`` back to get the next page.
        """
        if isinstance(cql, str):
            statement = await self.prepare(cql, idempotent=idempotent)
        else:
            statement = cql
        bound = statement.bind(params) if isinstance(statement, PreparedStatement) else statement
        if fetch_size is not None:
            bound.fetch_size = fetch_size
        return await self._run(bound, paging_state)

    async def execute_ddl(self, cql: str):
        """A schema statement (not preparable); the driver waits for schema agreement."""
        statement = SimpleStatement(cql, consistency_level=self.consistency, keyspace=self.keyspace)
        return await self._run(statement, None, timeout=max(self.timeout, 60.0))

    async def batch(self, statements: list[tuple[str, Sequence]], *, logged: bool = False, idempotent: bool = True):
        """A batch. Unlogged batches are for one partition only (atomic and isolated
        there); a logged batch guarantees all-or-nothing across partitions."""
        batch = BatchStatement(batch_type=BatchType.LOGGED if logged else BatchType.UNLOGGED)
        for cql, params in statements:
            batch.add(await self.prepare(cql, idempotent=idempotent), params)
        batch.is_idempotent = idempotent
        return await self._run(batch, None)

    async def rows(self, cql: str, params: Sequence = (), *, page_size: int = PAGE_SIZE) -> list[tuple]:
        """Every row of a read, fetched page by page."""
        return [row async for row in self.iterate(cql, params, page_size=page_size)]

    async def iterate(self, cql: str, params: Sequence = (), *, page_size: int = PAGE_SIZE) -> AsyncIterator[tuple]:
        """The rows of a read, fetched page by page as the caller consumes them."""
        paging_state = None
        while True:
            result = await self.execute(cql, params, fetch_size=page_size, paging_state=paging_state)
            for row in result.current_rows:
                yield row
            paging_state = result.paging_state
            if paging_state is None:
                return

    async def gather(self, *calls):
        """Await several requests that are in flight together; the first error wins
        after all of them finished (no write is left running behind the caller)."""
        results = await asyncio.gather(*calls, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results

    def _run(self, statement, paging_state, timeout: float | None = None) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        response = self.session.execute_async(
            statement, timeout=self.timeout if timeout is None else timeout, paging_state=paging_state
        )

        def succeeded(_rows):
            # Called on the driver's thread once the final result is set:
            # result() returns at once and carries the paging state.
            loop.call_soon_threadsafe(_settle, future, response.result(), None)

        def failed(error):
            loop.call_soon_threadsafe(_settle, future, None, error)

        response.add_callbacks(succeeded, failed)
        return future


def _settle(future: asyncio.Future, result, error) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def consistency_level(name: str) -> int:
    try:
        return ConsistencyLevel.name_to_value[name.upper()]
    except KeyError:
        raise ValueError(
            f"unknown Cassandra consistency level {name!r}; one of {', '.join(sorted(ConsistencyLevel.name_to_value))}"
        ) from None


def serial_consistency_for(consistency: int) -> int:
    """LOCAL_SERIAL for the LOCAL_* levels (a transaction stays in the local data
    center), SERIAL otherwise."""
    name = ConsistencyLevel.value_to_name[consistency]
    return ConsistencyLevel.LOCAL_SERIAL if name.startswith("LOCAL_") else ConsistencyLevel.SERIAL
