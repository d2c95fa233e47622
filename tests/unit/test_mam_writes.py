"""The archive's writes (extensions/mam.py) on an in-process server whose archive store is
stalled on purpose: live delivery goes on, a query of the archive waits for the pending
writes and then finds them, shutdown waits for them, a failed write is retried."""

import asyncio

import pytest
from lxml import etree

from tests.support.in_process import StalledStore, chat, online, running_server
from xmppd.protocol.stanza import IQ, make_element, sub_element
from xmppd.session import Session

NS_MAM = "urn:xmpp:mam:2"


@pytest.fixture
async def server(tmp_path):
    async with running_server(tmp_path, ["mam"]) as server:
        yield server


def mam_query(query_id: str) -> etree._Element:
    iq = make_element(IQ, {"type": "set", "id": query_id})
    sub_element(iq, f"{{{NS_MAM}}}query", {"queryid": query_id})
    return iq


def results(session: Session, query_id: str) -> list[str]:
    return [
        m.findtext(".//{jabber:client}body")
        for m in session.connection.out
        if m.find(f"{{{NS_MAM}}}result") is not None and m.find(f"{{{NS_MAM}}}result").get("queryid") == query_id
    ]


async def test_a_stalled_archive_delays_neither_delivery_nor_loses_messages(server):
    host = server.hosts["localhost"]
    archive = host.extensions["mam"]
    archive.writer.store = stalled = StalledStore(archive.store)
    alice, bob = online(host, "alice@localhost/a"), online(host, "bob@localhost/b")

    await asyncio.wait_for(server.router.from_client(alice, chat("bob@localhost", "one")), 5)
    await asyncio.wait_for(server.router.from_client(alice, chat("bob@localhost", "two")), 5)
    delivered = [m for m in bob.connection.out if m.get("type") == "chat"]
    assert [m.findtext("{jabber:client}body") for m in delivered] == ["one", "two"]
    assert delivered[0].find("{urn:xmpp:sid:0}stanza-id").get("by") == "bob@localhost"
    assert stalled.attempts == 4  # sent and received copies, all waiting

    query = asyncio.ensure_future(server.router.from_client(bob, mam_query("q1")))
    await asyncio.sleep(0.05)
    assert not query.done()  # reads its own writes: waits for them
    stalled.release()
    await asyncio.wait_for(query, 5)
    assert results(bob, "q1") == ["one", "two"]


async def test_shutdown_waits_for_pending_writes_and_failed_writes_are_retried(server, monkeypatch):
    monkeypatch.setattr("xmppd.pending.RETRY_DELAYS", (0.01, 0.01))
    host = server.hosts["localhost"]
    archive = host.extensions["mam"]
    store = archive.store
    archive.writer.store = stalled = StalledStore(store, failures=2)
    alice, _ = online(host, "alice@localhost/a"), online(host, "bob@localhost/b")
    await server.router.from_client(alice, chat("bob@localhost", "kept"))
    stopping = asyncio.ensure_future(archive.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done()
    stalled.release()
    await asyncio.wait_for(stopping, 5)
    for owner in ("alice@localhost", "bob@localhost"):
        assert await store.count(owner) == 1
