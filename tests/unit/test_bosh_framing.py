"""XEP-0124/0206 bodies, sans-IO: request bodies parsed (bad ones refused with their
binding condition), turned into the events of XmlStream, and answers wrapped."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from xmppd.protocol.bosh import MAX_RID, BoshError, BoshFraming, parse_body, wrap
from xmppd.protocol.stream import StanzaReceived, StreamClosed, StreamErrorDetected, StreamOpened

NS = "http://jabber.org/protocol/httpbind"
XBOSH = "urn:xmpp:xbosh"
CREATE = (
    f"<body xmlns='{NS}' xmlns:xmpp='{XBOSH}' rid='100' to='localhost' xml:lang='en' wait='60' hold='1' "
    "xmpp:version='1.0'/>"
).encode()


def body(payload: str = "", attributes: str = "", rid: int = 101) -> bytes:
    return f"<body xmlns='{NS}' xmlns:xmpp='{XBOSH}' rid='{rid}' sid='s1' {attributes}>{payload}</body>".encode()


def test_creation_restart_payloads_and_terminate_become_the_events_of_a_stream():
    framing = BoshFraming()
    framing.receive_data(parse_body(CREATE))
    assert framing.events() == [StreamOpened({"to": "localhost", "lang": "en", "version": "1.0"})]
    framing.receive_data(parse_body(body("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>x</auth>")))
    (auth,) = framing.events()
    assert isinstance(auth, StanzaReceived) and auth.element.tag == "{urn:ietf:params:xml:ns:xmpp-sasl}auth"
    framing.reset()
    framing.receive_data(parse_body(body(attributes="xmpp:restart='true'", rid=102)))
    # The restart keeps the creation request's header (clients send no xmpp:version again).
    assert framing.events() == [StreamOpened({"to": "localhost", "lang": "en", "version": "1.0"})]
    framing.receive_data(
        parse_body(body("<presence xmlns='jabber:client' type='unavailable'/>", "type='terminate'", 103))
    )
    presence, closed = framing.events()
    assert etree.tostring(presence.element) == b'<presence xmlns="jabber:client" type="unavailable"/>'
    assert closed == StreamClosed()
    framing.receive_data(parse_body(body("<presence xmlns='jabber:client'/>", rid=104)))
    assert framing.events() == []


def test_payloads_after_a_reset_without_restart_are_bad_format():
    framing = BoshFraming()
    framing.receive_data(parse_body(CREATE))
    framing.events()
    framing.reset()
    framing.receive_data(parse_body(body("<iq xmlns='jabber:client' type='get' id='1'/>")))
    (error,) = framing.events()
    assert isinstance(error, StreamErrorDetected) and error.condition == "bad-format"


def test_stanzas_in_the_body_namespace_are_jabber_client_ones():
    """COMPAT (XEP-0206 section 2): stanzas that inherit the body's namespace."""
    (message,) = parse_body(body("<message to='a@localhost'><body>hi</body></message>")).payloads
    assert message.tag == "{jabber:client}message" and message.findtext("{jabber:client}body") == "hi"


def test_payloads_do_not_carry_the_declarations_of_the_body():
    (message,) = parse_body(body("<message xmlns='jabber:client' to='a@localhost'/>")).payloads
    assert etree.tostring(message) == b'<message xmlns="jabber:client" to="a@localhost"/>'


@pytest.mark.parametrize(
    "data, condition",
    [
        (b"<body xmlns='urn:other' rid='1'/>", "bad-request"),
        (f"<body xmlns='{NS}'/>".encode(), "bad-request"),  # no rid
        (f"<body xmlns='{NS}' rid='0'/>".encode(), "bad-request"),
        (f"<body xmlns='{NS}' rid='{MAX_RID + 1}'/>".encode(), "bad-request"),
        (f"<body xmlns='{NS}' rid='-3'/>".encode(), "bad-request"),
        (f"<body xmlns='{NS}' rid='1'>text</body>".encode(), "bad-request"),
        (f"<body xmlns='{NS}' rid='1'><a xmlns='x'/>text</body>".encode(), "bad-request"),
        (f"<body xmlns='{NS}' rid='1'/><body xmlns='{NS}' rid='2'/>".encode(), "bad-request"),
        (f"<body xmlns='{NS}' rid='1'><message>".encode(), "bad-request"),
        (f"<!DOCTYPE body><body xmlns='{NS}' rid='1'/>".encode(), "bad-request"),
        (f"<body xmlns='{NS}' rid='1'><!-- c --></body>".encode(), "bad-request"),
        (f"<body xmlns='{NS}' rid='1'><?pi x?></body>".encode(), "bad-request"),
        (f"<body xmlns='{NS}' rid='1'><a xmlns='x'>&ent;</a></body>".encode(), "bad-request"),
        (f"<body xmlns='{NS}' rid='1'><a xmlns='x'>{'y' * 20000}</a></body>".encode(), "policy-violation"),
        (b"", "bad-request"),
    ],
)
def test_bad_bodies_are_refused_with_their_condition(data, condition):
    with pytest.raises(BoshError) as refused:
        parse_body(data, max_bytes=10000)
    assert refused.value.condition == condition


def test_the_sid_of_a_refused_body_is_known_when_its_start_tag_is():
    with pytest.raises(BoshError) as refused:
        parse_body(body("<message xmlns='jabber:client'>"))
    assert refused.value.sid == "s1"


def test_an_xml_declaration_is_allowed():
    assert parse_body(b"<?xml version='1.0' encoding='utf-8'?>\n" + CREATE).rid == 100


def test_wrap():
    assert etree.fromstring(wrap()).tag == f"{{{NS}}}body"
    answer = etree.fromstring(
        wrap(
            b"<stream:features xmlns:stream='http://etherx.jabber.org/streams'/>",
            {"sid": "abc", "xmpp:version": "1.0", "type": "terminate"},
        )
    )
    assert answer.get("sid") == "abc" and answer.get(f"{{{XBOSH}}}version") == "1.0"
    assert answer[0].tag == "{http://etherx.jabber.org/streams}features"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_a_body_or_a_binding_error(data):
    try:
        parsed = parse_body(f"<body xmlns='{NS}' rid='1'>".encode() + data + b"</body>", max_bytes=10000)
    except BoshError as error:
        assert error.condition in ("bad-request", "policy-violation")
    else:
        assert parsed.rid == 1
