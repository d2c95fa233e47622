import time
from unittest.mock import ANY

import pytest
from lxml import etree

from xmppd.protocol.namespaces import NS_CLIENT, NS_STREAMS
from xmppd.protocol.stanza import make_element, sub_element
from xmppd.protocol.stream import (
    STREAM_CLOSE,
    StanzaReceived,
    StreamClosed,
    StreamErrorDetected,
    StreamOpened,
    XmlStream,
    serialize,
    stream_header,
)

HEADER = (
    b"<?xml version='1.0'?>"
    b"<stream:stream to='example.com' from='juliet@example.com' version='1.0' id='abc'"
    b" xml:lang='en' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
)

STANZAS = (
    b"<message to='romeo@example.net' type='chat' id='m1'><body>Wherefore art thou, Romeo? "
    + "\u00e9\u20ac\U0001f600 \u0645\u0631\u062d\u0628\u0627".encode()
    + b" &amp; &lt;tags&gt; &#x263A; &#9731;</body></message>"
    b"\n \t\r\n"
    b"<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>"
    b"<presence><show>away</show><status><![CDATA[<!DOCTYPE not really> ]] ]>]]></status></presence>"
    b"<r xmlns='urn:xmpp:sm:3'/>"
    b"<message><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' to='a@b'>"
    b"<body>inner</body></message></forwarded></message>"
)


def feed(stream: XmlStream, *chunks: bytes) -> list:
    for chunk in chunks:
        stream.receive_data(chunk)
    return stream.events()


def canonical(element):
    return (
        element.tag,
        sorted(element.attrib.items()),
        element.text or "",
        [canonical(child) for child in element],
        element.tail or "" if element.getparent() is not None else "",
    )


def stanzas(events):
    return [event.element for event in events if isinstance(event, StanzaReceived)]


def reference_events():
    stream = XmlStream()
    events = feed(stream, HEADER + STANZAS + STREAM_CLOSE)
    assert not any(isinstance(event, StreamErrorDetected) for event in events), events
    return events


def summarise(events):
    out = []
    for event in events:
        if isinstance(event, StanzaReceived):
            out.append(("stanza", canonical(event.element)))
        else:
            out.append(event)
    return out


# -- opening, stanzas, closing ------------------------------------------------------


def test_open_stanzas_close():
    events = reference_events()
    assert events[0] == StreamOpened(
        {"to": "example.com", "from": "juliet@example.com", "version": "1.0", "id": "abc", "lang": "en"}
    )
    assert isinstance(events[-1], StreamClosed)
    received = stanzas(events)
    assert [element.tag for element in received] == [
        "{jabber:client}message",
        "{jabber:client}iq",
        "{jabber:client}presence",
        "{urn:xmpp:sm:3}r",
        "{jabber:client}message",
    ]
    body = received[0].find("{jabber:client}body").text
    assert "\u00e9\u20ac\U0001f600" in body and "& <tags> \u263a \u2603" in body
    assert received[2].find("{jabber:client}status").text == "<!DOCTYPE not really> ]] ]>"
    assert received[4][0][0].get("to") == "a@b"


def test_stanzas_are_detached():
    for element in stanzas(reference_events()):
        assert element.getparent() is None
        assert element.tail is None


def test_attributes_only_known_keys():
    stream = XmlStream()
    events = feed(
        stream,
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='x' other='y'>",
    )
    assert events == [StreamOpened({"to": "x"})]
    assert stream.attributes == {"to": "x"}
    assert stream.is_open


@pytest.mark.parametrize("split", range(1, len(HEADER + STANZAS + STREAM_CLOSE)))
def test_split_at_every_byte_boundary(split):
    data = HEADER + STANZAS + STREAM_CLOSE
    stream = XmlStream()
    assert summarise(feed(stream, data[:split], data[split:])) == summarise(reference_events())


def test_byte_by_byte():
    data = HEADER + STANZAS + STREAM_CLOSE
    stream = XmlStream()
    events = []
    for index in range(len(data)):
        stream.receive_data(data[index : index + 1])
        events.extend(stream.events())
    assert summarise(events) == summarise(reference_events())


def test_header_event_arrives_as_soon_as_the_header_is_complete():
    stream = XmlStream()
    assert feed(stream, HEADER[:-1]) == []
    assert isinstance(feed(stream, HEADER[-1:])[0], StreamOpened)
    assert feed(stream, b"<message><body>x</body>") == []
    assert len(stanzas(feed(stream, b"</message>"))) == 1


def test_whitespace_keepalives():
    stream = XmlStream()
    feed(stream, HEADER)
    for _ in range(100):
        assert feed(stream, b" ") == []
        assert feed(stream, b"\n\t\r ") == []
    assert len(stanzas(feed(stream, b"<message/>", b"  ", b"<message/>"))) == 2
    assert stream.is_open


def test_close_and_nothing_after():
    stream = XmlStream()
    events = feed(stream, HEADER, b"<message/>", b"</stream:stream>")
    assert isinstance(events[-1], StreamClosed)
    assert stream.is_finished
    assert feed(stream, b"<message/>", b"garbage<<<") == []


def test_data_after_close_in_the_same_chunk_is_ignored():
    stream = XmlStream()
    events = feed(stream, HEADER + b"<message/></stream:stream><message/>junk")
    assert [type(event) for event in events] == [StreamOpened, StanzaReceived, StreamClosed]


def test_events_are_cleared():
    stream = XmlStream()
    stream.receive_data(HEADER)
    assert len(stream.events()) == 1
    assert stream.events() == []


def test_reset_starts_a_new_stream():
    stream = XmlStream()
    feed(stream, HEADER, b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>")
    stream.reset()
    events = feed(stream, HEADER, b"<iq type='set' id='b'/>")
    assert isinstance(events[0], StreamOpened)
    assert stanzas(events)[0].tag == "{jabber:client}iq"


def test_reset_after_failure_recovers():
    stream = XmlStream()
    feed(stream, b"<bad")
    feed(stream, b" x='1' x='2'>")
    stream.reset()
    assert isinstance(feed(stream, HEADER)[0], StreamOpened)


def test_first_level_elements_in_other_namespaces_pass():
    stream = XmlStream()
    events = feed(
        stream,
        HEADER,
        b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
        b"<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
        b"<enable xmlns='urn:xmpp:sm:3' resume='true'/>",
    )
    assert [element.tag for element in stanzas(events)] == [
        "{urn:ietf:params:xml:ns:xmpp-tls}starttls",
        "{http://etherx.jabber.org/streams}error",
        "{urn:xmpp:sm:3}enable",
    ]


def test_memory_bounded_over_many_stanzas():
    stream = XmlStream()
    feed(stream, HEADER)
    stanza = b"<message to='romeo@example.net' id='x'><body>hello</body></message>\n"
    batch = stanza * 100
    total = 0
    for _ in range(100):
        total += len(stanzas(feed(stream, batch)))
        assert len(stream._root) == 0
        assert stream._root.text is None
    assert total == 10_000
    # And with a stanza split across chunks, only the one in progress remains.
    feed(stream, stanza + b"<message><body>partial")
    assert len(stream._root) == 1
    assert len(stanzas(feed(stream, b"</body></message>"))) == 1
    assert len(stream._root) == 0


# -- errors -------------------------------------------------------------------------


def error_of(*chunks: bytes, **kwargs) -> StreamErrorDetected | None:
    stream = XmlStream(**kwargs)
    events = feed(stream, *chunks)
    errors = [event for event in events if isinstance(event, StreamErrorDetected)]
    assert len(errors) <= 1
    if errors:
        assert events[-1] is errors[0], "nothing may follow a stream error"
        assert stream.is_finished
        assert feed(stream, b"<message/>", HEADER) == []
    return errors[0] if errors else None


@pytest.mark.parametrize(
    "data",
    [
        b"<message><body>unclosed</message>",
        b"<message a='1' a='2'/>",
        b"<message a=1/>",
        b"<message>\x00</message>",
        b"<message>\x01</message>",
        b"<message>&#0;</message>",
        b"<message>&foo;</message>",
        b"<message><x:y/></message>",
        b"<x:y/>",
        b"</message>",
        b"<message></presence>",
        b"<message>]]></message>",
    ],
)
def test_not_well_formed(data):
    err = error_of(HEADER, data)
    assert err is not None and err.condition == "not-well-formed", (data, err)


def test_not_well_formed_header():
    assert error_of(b"<stream:stream xmlns='jabber:client' xmlns:stream='") is None  # just incomplete
    assert error_of(b"<stream:stream a='1' a='2' xmlns:stream='http://etherx.jabber.org/streams'>").condition == (
        "not-well-formed"
    )
    assert error_of(b"garbage").condition == "not-well-formed"
    # Its prefix is unbound: not namespace-well-formed before it is in the wrong namespace.
    assert error_of(b"<stream:stream xmlns='jabber:client'>").condition == "not-well-formed"


# -- namespace-well-formedness (Namespaces in XML 1.0; RFC 6120 4.9.3.13) ------------


@pytest.mark.parametrize(
    "data, text",
    [
        (b"<message foo:bar='x'/>", "unbound namespace prefix"),
        (b"<message><body foo:bar='x'>hi</body></message>", "unbound namespace prefix"),
        (b"<message><x:y/></message>", "unbound namespace prefix"),
        (b"<message xmlns:p='urn:p'><x xmlns:p=''><p:y/></x></message>", "empty or reserved namespace declaration"),
        (
            b"<message xmlns:a='urn:x' xmlns:b='urn:x' a:z='1' b:z='2'/>",
            "one attribute given twice through two prefixes",
        ),
        (b"<message xmlns:p=''/>", "empty or reserved namespace declaration"),
        (b"<message xmlns:xml='urn:x'/>", "empty or reserved namespace declaration"),
        (b"<message xmlns:x='http://www.w3.org/XML/1998/namespace'/>", "empty or reserved namespace declaration"),
        (b"<message xmlns:xmlns='urn:x'/>", "empty or reserved namespace declaration"),
        (b"<message xmlns:x='http://www.w3.org/2000/xmlns/'/>", "empty or reserved namespace declaration"),
        (
            b"<message><x xmlns='http://www.w3.org/XML/1998/namespace'/></message>",
            "empty or reserved namespace declaration",
        ),
        (b"<message a:b:c='1'/>", "malformed qualified name"),
        (b"<message :a='1'/>", "malformed qualified name"),
        (b"<message><a:/></message>", "malformed qualified name"),
        (b"<message><x xmlns:f='not a uri'/></message>", "namespace name is not a URI"),
    ],
)
def test_not_namespace_well_formed(data, text):
    assert error_of(HEADER, data) == StreamErrorDetected("not-well-formed", text)


@pytest.mark.parametrize(
    "data",
    [
        b"<message xml:lang='en' xml:foo='x'/>",
        b"<message xmlns:xml='http://www.w3.org/XML/1998/namespace' xml:lang='en'/>",
        b"<message xmlns:x='urn:x' x:a='1' a='2'/>",
        b"<message><body xmlns=''/></message>",
        b"<message xmlns:p='urn:p' p:xmlns='x'/>",
        b"<message><encrypted xmlns='eu.siacs.conversations.axolotl'/></message>",  # relative: only a warning
    ],
)
def test_namespace_well_formed_edge_cases_pass(data):
    assert error_of(HEADER, data) is None


def test_a_stanza_that_is_not_namespace_well_formed_is_never_delivered():
    """Not even in one piece of data with others: what completed in that piece is lost with it."""
    stream = XmlStream()
    events = feed(stream, HEADER, b"<message id='1'/>", b"<message id='2'/><message foo:bar='x'/><message id='4'/>")
    assert [event.element.get("id") for event in events if isinstance(event, StanzaReceived)] == ["1"]
    assert events[-1] == StreamErrorDetected("not-well-formed", "unbound namespace prefix")


def test_the_header_in_the_same_piece_as_a_violation_still_opens_the_stream():
    events = feed(XmlStream(), HEADER + b"<message foo:bar='x'/></stream:stream>")
    assert events == [StreamOpened(ANY), StreamErrorDetected("not-well-formed", "unbound namespace prefix")]
    events = feed(XmlStream(), HEADER.replace(b" id=", b" xmlns:p='' id="))
    assert [type(event) for event in events] == [StreamOpened, StreamErrorDetected]


def test_namespace_violation_in_the_middle_of_a_split_stanza():
    stream = XmlStream()
    events = feed(stream, HEADER, b"<message id='1'/>", b"<message><body a", b":b='x'>hi</body>")
    assert [type(event) for event in events] == [StreamOpened, StanzaReceived, StreamErrorDetected]
    assert stream.is_finished and feed(stream, b"</message><message/>") == []


def test_namespace_check_after_many_warnings():
    """libxml2 stops logging warnings after a hundred; errors are still logged and seen."""
    stream = XmlStream()
    events = feed(stream, HEADER, *[b"<message><x xmlns='relative'/></message>"] * 150, b"<message foo:bar='x'/>")
    assert len(stanzas(events)) == 150
    assert events[-1] == StreamErrorDetected("not-well-formed", "unbound namespace prefix")


def test_namespace_check_on_every_stream_after_a_restart():
    stream = XmlStream()
    feed(stream, HEADER, *[b"<message><x xmlns='relative'/></message>"] * 3)
    stream.reset()
    assert feed(stream, HEADER, b"<message a:b='1'/>")[-1].condition == "not-well-formed"


def test_stray_text_between_stanzas_is_dropped():
    stream = XmlStream()
    events = feed(stream, HEADER, b"<message/>text<![CDATA[y]]>", b"<message/>more")
    assert len(stanzas(events)) == 2 and stream.is_open
    assert stream._root.text is None


def test_unnegotiated_stream_restart():
    bare_header = HEADER[len(b"<?xml version='1.0'?>") :]
    assert error_of(HEADER, b"<message/>", bare_header).condition == "bad-format"
    # With an XML declaration it is not even well-formed.
    assert error_of(HEADER, b"<message/>", HEADER).condition == "not-well-formed"


def test_excessive_nesting_is_a_policy_violation():
    err = error_of(HEADER, b"<message>" + b"<a>" * 300)
    assert err.condition == "policy-violation"


def test_utf8_byte_order_mark():
    stream = XmlStream()
    events = feed(stream, b"\xef\xbb\xbf" + HEADER, b"<message/>")
    assert [type(event) for event in events] == [StreamOpened, StanzaReceived]


def test_stanzas_before_an_error_are_delivered():
    stream = XmlStream()
    events = feed(stream, HEADER, b"<message id='1'/><message id='2'/><bad a=>")
    assert [type(event) for event in events] == [StreamOpened, StanzaReceived, StanzaReceived, StreamErrorDetected]


def test_invalid_utf8():
    assert error_of(HEADER, b"<message><body>\xff\xfe</body></message>").condition == "unsupported-encoding"
    assert error_of(HEADER, b"<message><body>\xc3(</body></message>").condition == "unsupported-encoding"


def test_declared_encoding_is_ignored_utf8_is_used():
    header = HEADER.replace(b"<?xml version='1.0'?>", b"<?xml version='1.0' encoding='ISO-8859-1'?>")
    stream = XmlStream()
    events = feed(stream, header, "<message><body>\u00e9</body></message>".encode())
    assert stanzas(events)[0][0].text == "\u00e9"


@pytest.mark.parametrize(
    "header",
    [
        b"<stream xmlns='jabber:client'>",
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams/wrong'>",
        b"<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>",
        b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>",
        b"<stream:features xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
        b"<message xmlns='jabber:client'/>",
    ],
)
def test_invalid_namespace_header(header):
    assert error_of(header).condition == "invalid-namespace"


@pytest.mark.parametrize(
    "stanza",
    [
        b"<message xmlns='jabber:server'/>",
        b"<iq xmlns='jabber:component:accept' type='get' id='1'/>",
        b"<presence xmlns=''/>",
        b"<foo xmlns=''/>",
    ],
)
def test_invalid_namespace_stanza(stanza):
    assert error_of(HEADER, stanza).condition == "invalid-namespace"


@pytest.mark.parametrize("version", [b"2.0", b"0.9", b"1", b"one", b"1.x", b""])
def test_unsupported_version(version):
    header = HEADER.replace(b"version='1.0' id", b"version='" + version + b"' id")
    assert error_of(header).condition == "unsupported-version"


def test_missing_version_is_left_to_negotiation():
    header = HEADER.replace(b" version='1.0' id", b" id")
    stream = XmlStream()
    assert feed(stream, header) == [
        StreamOpened({"to": "example.com", "from": "juliet@example.com", "id": "abc", "lang": "en"})
    ]
    # A newer minor version is fine (RFC 6120 §4.7.5).
    assert error_of(HEADER.replace(b"version='1.0' id", b"version='1.1' id")) is None


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>
<message><body>&lol9;</body></message>"""


def test_billion_laughs_is_refused_without_expansion():
    started = time.perf_counter()
    stream = XmlStream()
    events = feed(stream, BILLION_LAUGHS)
    assert events == [StreamErrorDetected("restricted-xml")]
    assert time.perf_counter() - started < 0.5


def test_billion_laughs_byte_by_byte():
    stream = XmlStream()
    events = []
    for index in range(len(BILLION_LAUGHS)):
        stream.receive_data(BILLION_LAUGHS[index : index + 1])
        events.extend(stream.events())
    assert events == [StreamErrorDetected("restricted-xml")]


@pytest.mark.parametrize(
    "chunks",
    [
        (b"<!DOCTYPE stream>", HEADER),
        (b"<?xml version='1.0'?><!DOCTYPE stream SYSTEM 'file:///etc/passwd'>",),
        (b"<?xml version='1.0'?>\n<!ENTITY x 'y'>",),
        (b"<?xml version='1.0'?><", b"!DOCTYPE x>"),
        (b"<!-- hello -->", HEADER),
        (HEADER, b"<!-- keepalive -->"),
        (HEADER, b"<message><!-- inside --></message>"),
        (HEADER, b"<message><body>x</body><", b"!", b"-", b"-"),
        (HEADER, b"<!DOCTYPE late>"),
        (HEADER, b"<message><!ENTITY x 'y'></message>"),
        (HEADER, b"<message><![CDATA[ok]]><!ATTLIST x></message>"),
        (HEADER, b"<message><![CD", b"ATX["),
        (b"<?php echo 1 ?>", HEADER),
        (HEADER, b"<?xml-stylesheet href='x'?>"),
        (HEADER, b"<message><?pi data?></message>"),
    ],
)
def test_restricted_xml(chunks):
    err = error_of(*chunks)
    assert err is not None and err.condition == "restricted-xml", (chunks, err)


def test_external_entity_reference_is_never_resolved(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    data = (
        b"<?xml version='1.0'?><!DOCTYPE stream [<!ENTITY xxe SYSTEM '"
        + secret.as_uri().encode()
        + b"'>]>"
        + HEADER[len(b"<?xml version='1.0'?>") :]
        + b"<message><body>&xxe;</body></message>"
    )
    stream = XmlStream()
    events = feed(stream, data)
    assert events == [StreamErrorDetected("restricted-xml")]


def test_cdata_may_contain_markup_like_text_split_anywhere():
    body = b"<message><body><![CDATA[<!DOCTYPE x><!-- not a comment --><?not a pi?>]]></body></message>"
    expected = "<!DOCTYPE x><!-- not a comment --><?not a pi?>"
    for split in range(1, len(body)):
        stream = XmlStream()
        events = feed(stream, HEADER, body[:split], body[split:])
        assert [e.element[0].text for e in events if isinstance(e, StanzaReceived)] == [expected], split


def test_xml_declaration_is_allowed_only_first():
    assert error_of(HEADER, b"<?xml version='1.0'?>") is not None


# -- size limit -----------------------------------------------------------------------


def big_message(size: int) -> bytes:
    """A message of exactly ``size`` bytes."""
    head, tail = b"<message><body>", b"</body></message>"
    return head + b"x" * (size - len(head) - len(tail)) + tail


def test_oversized_stanza_is_refused_before_it_completes():
    stream = XmlStream(max_stanza_bytes=1000)
    feed(stream, HEADER)
    data = big_message(1100)
    events = []
    for index in range(0, len(data) - 50, 7):
        stream.receive_data(data[index : index + 7])
        events.extend(stream.events())
        if events:
            break
    assert events == [StreamErrorDetected("policy-violation", "stanza too large")]
    assert index < len(data) - 50


def test_oversized_stanza_in_one_chunk():
    assert error_of(HEADER, big_message(1001), max_stanza_bytes=1000).condition == "policy-violation"
    assert error_of(HEADER + big_message(5000), max_stanza_bytes=1000).condition == "policy-violation"


def test_endless_start_tag_is_refused():
    stream = XmlStream(max_stanza_bytes=1000)
    feed(stream, HEADER, b"<message ")
    events = []
    for _ in range(200):
        stream.receive_data(b"          ")
        events.extend(stream.events())
    assert events == [StreamErrorDetected("policy-violation", "stanza too large")]


def test_stanza_at_the_limit_passes():
    stream = XmlStream(max_stanza_bytes=1000)
    events = feed(stream, HEADER, big_message(1000))
    assert len(stanzas(events)) == 1
    # The header in the same chunk does not count against the first stanza.
    stream = XmlStream(max_stanza_bytes=1000)
    events = feed(stream, HEADER + big_message(990))
    assert len(stanzas(events)) == 1


@pytest.mark.parametrize("chunk_size", [1, 7, 100, 333, 999, 1000, 1001, 4096, 100_000])
def test_limit_is_per_stanza_not_per_stream(chunk_size):
    stream = XmlStream(max_stanza_bytes=1000)
    feed(stream, HEADER)
    data = b"".join(big_message(900) + b" " for _ in range(50))
    events = []
    for index in range(0, len(data), chunk_size):
        stream.receive_data(data[index : index + chunk_size])
        events.extend(stream.events())
    assert not any(isinstance(event, StreamErrorDetected) for event in events)
    assert len(stanzas(events)) == 50


def test_many_small_stanzas_in_one_large_chunk():
    stream = XmlStream(max_stanza_bytes=200)
    events = feed(stream, HEADER + b"<message><body>hi</body></message>" * 5000)
    assert len(stanzas(events)) == 5000
    assert stream.is_open


# -- output -----------------------------------------------------------------------------


def test_stream_header():
    header = stream_header(from_="example.com", id="s1", to="juliet@example.com")
    assert header == (
        b"<?xml version='1.0'?><stream:stream xmlns=\"jabber:client\""
        b' xmlns:stream="http://etherx.jabber.org/streams" from="example.com" id="s1"'
        b' to="juliet@example.com" version="1.0" xml:lang="en">'
    )
    minimal = stream_header(from_="example.com", id=None)
    assert b" id=" not in minimal and b" to=" not in minimal
    quoted = stream_header(from_="a\"<&>'", id="x")
    assert etree.fromstring(quoted + b"</stream:stream>").get("from") == "a\"<&>'"


def test_our_header_parses():
    stream = XmlStream()
    events = feed(stream, stream_header(from_="example.com", id="s1", to="juliet@example.com"))
    assert events == [
        StreamOpened({"to": "juliet@example.com", "from": "example.com", "version": "1.0", "id": "s1", "lang": "en"})
    ]


def test_serialize_drops_only_the_top_declaration():
    message = make_element("{jabber:client}message", {"to": "romeo@example.net"})
    sub_element(message, "{jabber:client}body", text="hi & bye")
    assert serialize(message) == b'<message to="romeo@example.net"><body>hi &amp; bye</body></message>'


def test_serialize_keeps_nested_client_namespace():
    stream = XmlStream()
    events = feed(
        stream,
        HEADER,
        b"<message to='a@b'><sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>"
        b"<message xmlns='jabber:client' to='c@d'><body>x</body></message></forwarded></sent></message>",
    )
    data = serialize(stanzas(events)[0])
    assert data == (
        b'<message to="a@b"><sent xmlns="urn:xmpp:carbons:2"><forwarded xmlns="urn:xmpp:forward:0">'
        b'<message xmlns="jabber:client" to="c@d"><body>x</body></message></forwarded></sent></message>'
    )
    # Reparsed inside a stream it is the same element.
    stream = XmlStream()
    again = stanzas(feed(stream, HEADER, data))[0]
    assert canonical(again) == canonical(stanzas(events)[0])


def test_serialize_other_namespaces_untouched():
    stream = XmlStream()
    events = feed(stream, HEADER, b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>=</auth>")
    assert serialize(stanzas(events)[0]) == b'<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">=</auth>'


def test_serialize_attribute_that_looks_like_a_declaration():
    message = make_element("{jabber:client}message", {"id": ' xmlns="jabber:client"'})
    data = serialize(message)
    assert data == b'<message id=" xmlns=&quot;jabber:client&quot;"/>'


def test_serialize_does_not_include_the_tail():
    parent = etree.Element("{jabber:client}x", nsmap={None: NS_CLIENT})
    child = etree.SubElement(parent, "{jabber:client}message")
    child.tail = "tail"
    assert serialize(child) == b"<message/>"


def test_serialize_non_ascii_as_utf8():
    message = make_element("{jabber:client}message", text="\u00e9\U0001f600")
    assert serialize(message) == "<message>\u00e9\U0001f600</message>".encode()


def test_serialize_stream_features():
    features = make_element("{%s}features" % NS_STREAMS)
    sub_element(features, "{urn:ietf:params:xml:ns:xmpp-tls}starttls")
    assert serialize(features) == (
        b'<stream:features><starttls xmlns="urn:ietf:params:xml:ns:xmpp-tls"/></stream:features>'
    )
