"""An xmppd Server run inside the test's event loop, with sessions on fake wires: for
tests that must hold a store still (StalledStore) to see what waits for a write."""

from __future__ import annotations

import asyncio
import contextlib

from lxml import etree

from xmppd import config
from xmppd.protocol.jid import JID
from xmppd.protocol.stanza import MESSAGE, make_element, sub_element
from xmppd.server import Server
from xmppd.session import Session


@contextlib.asynccontextmanager
async def running_server(data_dir, extensions: list[str]):
    """A Server for `localhost` with only `extensions`, open (no listeners) until the block
    ends; on memory storage: what these tests hold still is the extension's logic."""
    server = Server(
        config.parse(
            {
                "server": {"data_dir": str(data_dir), "extensions": extensions, "graceful_shutdown_timeout": 1.0},
                "storage": {"default": "memory"},
            },
            "test",
        )
    )
    await server.open()
    try:
        yield server
    finally:
        await server.stop()


class Wire:
    """A session's connection that keeps what is written to it."""

    peer = "test"
    congested = False  # takes everything at once
    unsent = 0

    def __init__(self):
        self.out: list[etree._Element] = []

    def write(self, data: bytes) -> None:
        self.out.append(etree.fromstring(b"<stream xmlns='jabber:client'>" + data + b"</stream>")[0])

    def close(self, condition=None, text=None) -> None:
        pass

    async def drained(self) -> None:
        pass


class StalledStore:
    """An archive store, with appends held until `release()` (and failing `failures` times)."""

    def __init__(self, store, failures: int = 0):
        self.store = store
        self.failures = failures
        self.gate = asyncio.Event()
        self.attempts = 0

    def release(self) -> None:
        self.gate.set()

    async def append(self, owner, item):
        return (await self.append_many([(owner, item)]))[0]

    async def append_many(self, items):
        self.attempts += len(items)  # items tried, however batched
        await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise OSError("the archive is down")
        return await self.store.append_many(items)

    def __getattr__(self, name):
        return getattr(self.store, name)


def online(host, jid: str) -> Session:
    session = Session(host, JID.parse(jid), Wire())
    session.available = True
    host.add_session(session)
    return session


def chat(to: str, body: str) -> etree._Element:
    message = make_element(MESSAGE, {"to": to, "type": "chat", "id": body})
    sub_element(message, "{jabber:client}body", text=body)
    return message
