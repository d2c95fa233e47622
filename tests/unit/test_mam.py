"""xmppd/mam.py: reading XEP-0313 queries (form and RSM) and writing results."""

import pytest
from lxml import etree

from xmppd.mam import MamRequest, fin_element, parse_request, result_message
from xmppd.protocol.errors import BadRequest, FeatureNotImplemented, PolicyViolation
from xmppd.protocol.stanza import to_storage
from xmppd.storage.interfaces import ArchivedStanza, ArchivePage, ArchiveQuery

MAM = "urn:xmpp:mam:2"
RSM = "http://jabber.org/protocol/rsm"


def query(inner: str = "", attrs: str = "") -> etree._Element:
    return etree.fromstring(f"<query xmlns='{MAM}' {attrs}>{inner}</query>")


def form(fields: str) -> str:
    return (
        f"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{MAM}</value></field>"
        f"{fields}</x>"
    )


def test_filters_and_paging():
    request = parse_request(
        query(
            form(
                "<field var='with'><value>Juliet@Capulet.lit</value></field>"
                "<field var='start'><value>2010-06-07T00:00:00Z</value></field>"
                "<field var='after-id'><value>a1</value></field>"
                "<field var='ids'><value>x</value><value>y</value></field>"
            )
            + f"<set xmlns='{RSM}'><max>500</max><before/></set>",
            "queryid='q'",
        ),
        default_max=50,
        max_max=100,
    )
    assert request.query_id == "q"
    assert request.query == ArchiveQuery(
        with_="juliet@capulet.lit", start=1275868800.0, after_id="a1", ids=("x", "y"), before="", max=100
    )
    assert parse_request(query(), default_max=50, max_max=100).query == ArchiveQuery(max=50)


@pytest.mark.parametrize(
    "inner,error",
    [
        (form("<field var='start'><value>yesterday</value></field>"), BadRequest),
        (form("<field var='colour'><value>red</value></field>"), FeatureNotImplemented),  # XEP-0313 4.1.5
        (form("<field var='with'><value>@@</value></field>"), BadRequest),
        (f"<set xmlns='{RSM}'><max>ten</max></set>", BadRequest),
        (f"<set xmlns='{RSM}'><max>-1</max></set>", BadRequest),
        (f"<set xmlns='{RSM}'><after>a</after><before>b</before></set>", BadRequest),
        (f"<set xmlns='{RSM}'><index>3</index></set>", FeatureNotImplemented),
        (form("<field var='ids'>" + "<value>i</value>" * 101 + "</field>"), PolicyViolation),
    ],
)
def test_bad_queries(inner, error):
    with pytest.raises(error):
        parse_request(query(inner), default_max=50, max_max=100)


def test_result_and_fin():
    stored = etree.fromstring("<message xmlns='jabber:client' type='groupchat' from='r@c/n'><body>hi</body></message>")
    item = ArchivedStanza("id1", 0.0, "n", to_storage(stored))
    request = MamRequest(ArchiveQuery(max=10), "q1")
    message = result_message(item, request, to="u@h/r", from_="r@c")
    result = message.find(f"{{{MAM}}}result")
    assert (result.get("queryid"), result.get("id")) == ("q1", "id1")
    forwarded = result.find("{urn:xmpp:forward:0}forwarded")
    assert forwarded.find("{urn:xmpp:delay}delay").get("stamp") == "1970-01-01T00:00:00.000Z"
    assert forwarded.findtext("{jabber:client}message/{jabber:client}body") == "hi"
    second = ArchivedStanza("id2", 1.0, "n", item.payload)
    fin = fin_element(ArchivePage([item, second], complete=True, count=7), request)
    assert fin.get("complete") == "true"
    assert [fin.findtext(f"{{{RSM}}}set/{{{RSM}}}{tag}") for tag in ("first", "last", "count")] == ["id1", "id2", "7"]
    flipped = fin_element(ArchivePage([item, second], complete=False), MamRequest(ArchiveQuery(), None, flip=True))
    assert flipped.get("complete") is None and flipped.findtext(f"{{{RSM}}}set/{{{RSM}}}first") == "id2"
    empty = fin_element(ArchivePage([], complete=True, count=0), request)
    assert empty.find(f"{{{RSM}}}set/{{{RSM}}}first") is None
