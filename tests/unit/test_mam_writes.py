"""The archive's writes (extensions/mam.py) on an in-process server whose archive store is
stalled on purpose: live delivery goes on, a query of the archive waits for the pending
writes and then finds them, shutdown waits for them, a failed write is retried."""
import asyncio

import pytest
from lxml import etree

from xmppd import config
from xmppd.protocol.jid import JID
from xmppd.protocol.stanza import IQ, MESSAGE, make_element, sub_element
from xmppd.server import Server
from xmppd.session import Session

NS_MAM = "urn:xmpp:mam:2"


class Wire:
    """A session's connection that keeps what is written to it."""
    peer = "test"

    def __init__(self):
        self.out: list[etree._Element] = []

    def write(self, data: bytes) -> None:
        self.out.append(etree.fromstring(b"<stream xmlns='jabber:client'>" + data + b"</stream>")[0])

    def close(self, condition=None, text=None) -> None:
        pass


class StalledStore:
    """The archive store, with appends held until `release()` (and failing `failures` times)."""

    def __init__(self, store, failures: int = 0):
        self.store = store
        self.failures = failures
        self.gate = asyncio.Event()
        self.attempts = 0

    def release(self) -> None:
        self.gate.set()

    async def append(self, owner, item):
        self.attempts += 1
        await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise OSError("the archive is down")
        return await self.store.append(owner, item)

    def __getattr__(self, name):
        return getattr(self.store, name)


@pytest.fixture
async def server(tmp_path):
    cfg = config.parse({"server": {"data_dir": str(tmp_path), "extensions": ["mam"],
                                   "graceful_shutdown_timeout": 1.0}}, "test")
    server = Server(cfg)
    await server.open()
    yield server
    await server.stop()


def online(host, jid: str) -> Session:
    session = Session(host, JID.parse(jid), Wire())
    session.available = True
    host.add_session(session)
    return session


def chat(to: str, body: str) -> etree._Element:
    message = make_element(MESSAGE, {"to": to, "type": "chat", "id": body})
    sub_element(message, "{jabber:client}body", text=body)
    return message


def mam_query(query_id: str) -> etree._Element:
    iq = make_element(IQ, {"type": "set", "id": query_id})
    sub_element(iq, f"{{{NS_MAM}}}query", {"queryid": query_id})
    return iq


def results(session: Session, query_id: str) -> list[str]:
    return [m.findtext(".//{jabber:client}body") for m in session.connection.out
            if m.find(f"{{{NS_MAM}}}result") is not None and m.find(f"{{{NS_MAM}}}result").get("queryid") == query_id]


async def test_a_stalled_archive_delays_neither_delivery_nor_loses_messages(server):
    host = server.hosts["localhost"]
    archive = host.extensions["mam"]
    archive.store = stalled = StalledStore(archive.store)
    alice, bob = online(host, "alice@localhost/a"), online(host, "bob@localhost/b")

    await asyncio.wait_for(server.router.from_client(alice, chat("bob@localhost", "one")), 5)
    await asyncio.wait_for(server.router.from_client(alice, chat("bob@localhost", "two")), 5)
    delivered = [m for m in bob.connection.out if m.get("type") == "chat"]
    assert [m.findtext("{jabber:client}body") for m in delivered] == ["one", "two"]
    assert delivered[0].find("{urn:xmpp:sid:0}stanza-id").get("by") == "bob@localhost"
    assert stalled.attempts == 4                        # sent and received copies, all waiting

    query = asyncio.ensure_future(server.router.from_client(bob, mam_query("q1")))
    await asyncio.sleep(0.05)
    assert not query.done()                             # reads its own writes: waits for them
    stalled.release()
    await asyncio.wait_for(query, 5)
    assert results(bob, "q1") == ["one", "two"]


async def test_shutdown_waits_for_pending_writes_and_failed_writes_are_retried(server, monkeypatch):
    monkeypatch.setattr("xmppd.extensions.mam.RETRY_DELAYS", (0.01, 0.01))
    host = server.hosts["localhost"]
    archive = host.extensions["mam"]
    store = archive.store
    archive.store = stalled = StalledStore(store, failures=2)
    alice, _ = online(host, "alice@localhost/a"), online(host, "bob@localhost/b")
    await server.router.from_client(alice, chat("bob@localhost", "kept"))
    stopping = asyncio.ensure_future(archive.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done()
    stalled.release()
    await asyncio.wait_for(stopping, 5)
    for owner in ("alice@localhost", "bob@localhost"):
        assert await store.count(owner) == 1
