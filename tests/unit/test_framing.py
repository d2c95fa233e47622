"""RFC 7395 framing, sans-IO: WebSocket messages in, the events of XmlStream out; the
bytes the server writes into a TCP stream out as one message per element."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from xmppd.protocol.errors import LocalProtocolError
from xmppd.protocol.framing import CLOSE_MESSAGE, WebSocketFraming, frames
from xmppd.protocol.negotiation import stream_error
from xmppd.protocol.stream import (
    STREAM_CLOSE,
    StanzaReceived,
    StreamClosed,
    StreamErrorDetected,
    StreamOpened,
    serialize,
    stream_header,
)

NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
OPEN = f"<open xmlns='{NS_FRAMING}' to='localhost' version='1.0' xml:lang='en'/>".encode()
ONE_ELEMENT = "a WebSocket message must hold exactly one whole XML element (RFC 7395)"


def opened(max_stanza_bytes: int = 10000) -> WebSocketFraming:
    framing = WebSocketFraming(max_stanza_bytes)
    framing.receive_data(OPEN)
    assert framing.events() == [StreamOpened({"to": "localhost", "version": "1.0", "lang": "en"})]
    return framing


def test_messages_become_the_events_of_a_stream():
    framing = opened()
    framing.receive_data(b"<message xmlns='jabber:client' to='bob@localhost'><body>hi</body></message>")
    framing.receive_data(b"<r xmlns='urn:xmpp:sm:3'/>")
    framing.receive_data(f"<close xmlns='{NS_FRAMING}'/>".encode())
    message, request, closed = framing.events()
    assert isinstance(message, StanzaReceived) and message.element.tag == "{jabber:client}message"
    assert message.element.findtext("{jabber:client}body") == "hi"
    assert isinstance(request, StanzaReceived) and request.element.tag == "{urn:xmpp:sm:3}r"
    assert closed == StreamClosed()


def test_whitespace_only_message_is_ignored():
    framing = opened()
    framing.receive_data(b" \r\n")
    assert framing.events() == []


@pytest.mark.parametrize(
    "message",
    [
        b"<a xmlns='urn:x'/><b xmlns='urn:x'/>",  # two elements
        b"<message xmlns='jabber:client'>",  # half an element
        b"<a xmlns='urn:x'/><b xmlns='urn:x'>",  # one and a half
        b"<a xmlns='urn:x'/>text",  # character data after it
        b"text",
    ],
)
def test_a_message_that_is_not_one_whole_element_is_not_well_formed(message):
    framing = opened()
    framing.receive_data(message)
    assert framing.events() == [StreamErrorDetected("not-well-formed", ONE_ELEMENT)]
    framing.receive_data(b"<a xmlns='urn:x'/>")  # nothing after the error
    assert framing.events() == []


def test_the_stream_limits_and_rules_hold():
    framing = opened(max_stanza_bytes=10000)
    framing.receive_data(b"<message xmlns='jabber:client'><body>" + b"x" * 10000 + b"</body></message>")
    assert framing.events() == [StreamErrorDetected("policy-violation", "stanza too large")]
    framing = opened()
    framing.receive_data(b"<message xmlns='jabber:client'><!-- comment --></message>")
    assert framing.events() == [StreamErrorDetected("restricted-xml")]
    framing = opened()
    framing.receive_data(b"<message xmlns='jabber:server'/>")
    assert framing.events()[0].condition == "invalid-namespace"


def test_the_stream_must_begin_with_open():
    framing = WebSocketFraming()
    framing.receive_data(b"<message xmlns='jabber:client'/>")
    assert framing.events() == [
        StreamErrorDetected("invalid-namespace", f"the stream must begin with <open/> of {NS_FRAMING}")
    ]


def test_reset_awaits_a_new_open():
    framing = opened()
    framing.reset()
    framing.receive_data(b"<iq xmlns='jabber:client' type='get' id='1'/>")
    assert framing.events()[0].condition == "invalid-namespace"
    framing = opened()
    framing.reset()
    framing.receive_data(OPEN)
    assert isinstance(framing.events()[0], StreamOpened)


def test_frames_are_whole_elements_with_their_namespaces():
    stanza = etree.fromstring(
        "<message xmlns='jabber:client' to='a@b' id='x&gt;y xmlns=z'><body>a&gt;b</body><x xmlns='urn:y'/></message>"
    )
    data = (
        stream_header(from_="localhost", id="abc")
        + b"<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/></stream:features>"
        + serialize(stanza)
        + b"<iq type='result' id='bind'/>"
        + b"<r xmlns='urn:xmpp:sm:3'/>"
        + stream_error("host-unknown")
        + STREAM_CLOSE
    )
    messages = frames(data)
    assert messages == [
        f'<open xmlns="{NS_FRAMING}" from="localhost" id="abc" version="1.0" xml:lang="en"/>'.encode(),
        b'<stream:features xmlns:stream="http://etherx.jabber.org/streams">'
        b"<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/></stream:features>",
        b'<message xmlns="jabber:client" to="a@b" id="x&gt;y xmlns=z"><body>a&gt;b</body><x xmlns="urn:y"/></message>',
        b"<iq xmlns=\"jabber:client\" type='result' id='bind'/>",
        b"<r xmlns='urn:xmpp:sm:3'/>",
        b'<stream:error xmlns:stream="http://etherx.jabber.org/streams">'
        b"<host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
        CLOSE_MESSAGE,
    ]
    for message in messages:  # each one parses alone, in the namespaces it had
        etree.fromstring(message)
    assert etree.fromstring(messages[2]).tag == "{jabber:client}message"


def test_frames_of_elements_named_alike():
    assert frames(b"<message><message/></message><message/>") == [
        b'<message xmlns="jabber:client"><message/></message>',
        b'<message xmlns="jabber:client"/>',
    ]
    assert frames(b"<a xmlns='urn:x'/><a xmlns='urn:x'/>") == [b"<a xmlns='urn:x'/>", b"<a xmlns='urn:x'/>"]


def test_frames_refuses_half_an_element():
    with pytest.raises(LocalProtocolError):
        frames(b"<message><body>")


# -- properties --------------------------------------------------------------

XML_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"), max_size=30)
NAMES = st.sampled_from(["message", "presence", "iq", "body", "x", "message-x"])


@st.composite
def stanzas(draw):
    """A jabber:client stanza with nested children (some named like their parent, some in
    other namespaces) and any text in its attribute values and content."""

    def grow(parent, depth):
        for _ in range(draw(st.integers(0, 3 if depth < 3 else 0))):
            namespace = draw(st.sampled_from(["jabber:client", "urn:x", "urn:y"]))
            child = etree.SubElement(parent, f"{{{namespace}}}{draw(NAMES)}", id=draw(XML_TEXT))
            child.text = draw(XML_TEXT)
            grow(child, depth + 1)

    stanza = etree.Element(
        f"{{jabber:client}}{draw(st.sampled_from(['message', 'presence', 'iq']))}",
        nsmap={None: "jabber:client"},
        id=draw(XML_TEXT),
        to=draw(XML_TEXT),
    )
    stanza.text = draw(XML_TEXT)
    grow(stanza, 0)
    return stanza


@settings(max_examples=200, deadline=None)
@given(st.lists(stanzas(), min_size=1, max_size=4))
def test_frames_give_back_every_element_whole_and_alone(elements):
    messages = frames(b"".join(serialize(element) for element in elements))
    assert len(messages) == len(elements)
    for message, element in zip(messages, elements):
        assert etree.tostring(etree.fromstring(message), method="c14n") == etree.tostring(element, method="c14n")


MESSAGE_PARTS = st.sampled_from(
    [
        OPEN,
        b"<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
        b"<message xmlns='jabber:client'>",
        b"</message>",
        b"<body>hi</body>",
        b"<r xmlns='urn:xmpp:sm:3'/>",
        b"<!--",
        b"<?pi?>",
        b"&amp;",
        b"&foo;",
        b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>",
        b"</stream:stream>",
        b" ",
        b"\xff",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(MESSAGE_PARTS | st.binary(max_size=20), max_size=5).map(b"".join), max_size=8))
def test_any_messages_give_stream_events_and_nothing_after_an_error(messages):
    framing = WebSocketFraming(1000)
    events = []
    for message in messages:
        framing.receive_data(message)
        events += framing.events()
    ends = [i for i, event in enumerate(events) if isinstance(event, (StreamErrorDetected, StreamClosed))]
    assert not ends or ends == [len(events) - 1]
    assert all(isinstance(event, (StreamOpened, StanzaReceived, StreamClosed, StreamErrorDetected)) for event in events)
    assert not (events and isinstance(events[0], StanzaReceived))  # <open/> comes first
