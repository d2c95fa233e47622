"""The BOSH session of xmppd/bosh.py without HTTP: bodies given to `receive` in any
order reach the connection in rid order, answers go out in rid order, repeated rids get
their answer again, and the window, hold and inactivity rules hold."""

import asyncio
from types import SimpleNamespace

import pytest
from lxml import etree

from xmppd.bosh import BoshTransport
from xmppd.config import BoshOptions, Config
from xmppd.protocol.bosh import parse_body

NS = "http://jabber.org/protocol/httpbind"


class Endpoint:
    def __init__(self, **options):
        self.options = BoshOptions(**options) if options else BoshOptions()
        self.config = Config()
        self.http = SimpleNamespace(metrics=SimpleNamespace(count=lambda *args: None))
        self.forgotten = []

    def forget(self, session):
        self.forgotten.append(session)


def body(rid: int, payload: str = "", attributes: str = "") -> object:
    return parse_body(f"<body xmlns='{NS}' rid='{rid}' sid='s' {attributes}>{payload}</body>".encode())


def session(hold: int = 1, wait: int = 30, **options) -> BoshTransport:
    creation = parse_body(f"<body xmlns='{NS}' rid='100' to='localhost' ver='1.11'/>".encode())
    transport = BoshTransport(Endpoint(**options), "s", creation, "127.0.0.1", True, wait=wait, hold=hold)
    return transport


def payloads(answer: tuple[int, bytes]) -> list[str]:
    return [etree.QName(child).localname for child in etree.fromstring(answer[1])]


async def started(hold: int = 1, **options) -> BoshTransport:
    transport = session(hold, **options)
    creation = asyncio.create_task(transport.receive(body(100)))
    assert (await transport.read()).rid == 100
    transport.write(b"<stream:features xmlns:stream='http://etherx.jabber.org/streams'/>")
    status, content = await asyncio.wait_for(creation, 1)
    answer = etree.fromstring(content)
    assert status == 200 and answer.get("sid") == "s" and answer.get("requests") == str(hold + 1)
    return transport


async def test_bodies_are_handed_on_in_rid_order():
    transport = await started()
    second = asyncio.create_task(transport.receive(body(102, "<iq xmlns='jabber:client' id='b' type='get'/>")))
    await asyncio.sleep(0)
    assert not transport._bodies  # 102 waits for 101
    first = asyncio.create_task(transport.receive(body(101, "<iq xmlns='jabber:client' id='a' type='get'/>")))
    await asyncio.sleep(0)
    assert [(await transport.read()).payloads[0].get("id") for _ in range(2)] == ["a", "b"]
    assert (await asyncio.wait_for(first, 1))[0] == 200  # answered when 102 came (hold 1)
    assert not second.done()
    transport.write(b"<iq xmlns='jabber:client' id='b' type='result'/>")
    assert payloads(await asyncio.wait_for(second, 1)) == ["iq"]


async def test_a_repeated_rid_gets_its_answer_and_one_past_the_window_ends_the_session():
    transport = await started()
    held = asyncio.create_task(transport.receive(body(101)))
    await asyncio.sleep(0)
    transport.write(b"<message xmlns='jabber:client'/>")
    answer = await asyncio.wait_for(held, 1)
    assert payloads(answer) == ["message"]
    assert await transport.receive(body(101)) == answer
    status, content = await transport.receive(body(104))  # window: 102 and 103
    assert status == 200 and etree.fromstring(content).get("condition") == "item-not-found"
    assert await transport.read() == b""  # the connection ends


async def test_an_old_rid_no_longer_kept_is_item_not_found():
    transport = await started()
    for rid in (101, 102, 103, 104):
        task = asyncio.create_task(transport.receive(body(rid)))
        await asyncio.sleep(0)
        transport.write(b"<message xmlns='jabber:client'/>")
        await asyncio.wait_for(task, 1)
    status, content = await transport.receive(body(101))  # only 'requests' answers are kept
    assert etree.fromstring(content).get("condition") == "item-not-found"


async def test_a_session_without_requests_is_dropped_after_inactivity():
    transport = await started(inactivity=2)
    transport.inactivity = 0.05  # below what the config allows
    transport._start_inactivity(transport.inactivity)
    assert await asyncio.wait_for(transport.read(), 1) == b""
    assert transport.endpoint.forgotten == [transport]


async def test_output_past_the_buffer_congests_until_a_request_takes_it():
    transport = await started()
    transport.max_output_buffer = 100
    transport.write(b"<message xmlns='jabber:client'><body>" + b"x" * 200 + b"</body></message>")
    assert transport.congested and transport.unsent > 100
    drained = asyncio.create_task(transport.drained())
    await asyncio.sleep(0)
    assert not drained.done()
    answer = await asyncio.wait_for(transport.receive(body(101)), 1)
    assert payloads(answer) == ["message"]
    await asyncio.wait_for(drained, 1)
    assert not transport.congested


@pytest.mark.parametrize(
    "stream_error, condition",
    [
        (
            b"<stream:error xmlns:stream='http://etherx.jabber.org/streams'>"
            b"<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
            "remote-stream-error",
        ),
        (
            b"<stream:error xmlns:stream='http://etherx.jabber.org/streams'>"
            b"<system-shutdown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
            "system-shutdown",
        ),
    ],
)
async def test_a_stream_error_ends_the_session_with_its_condition(stream_error, condition):
    transport = await started()
    held = asyncio.create_task(transport.receive(body(101)))
    await asyncio.sleep(0)
    transport.write(stream_error + b"</stream:stream>")
    await transport.close()
    answer = etree.fromstring((await asyncio.wait_for(held, 1))[1])
    assert (answer.get("type"), answer.get("condition")) == ("terminate", condition)
    if condition == "remote-stream-error":
        assert answer[0].tag == "{urn:ietf:params:xml:ns:xmpp-streams}policy-violation"
