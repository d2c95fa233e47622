import logging

import pytest
from lxml import etree

from xmppd.protocol.errors import BadRequest, LocalProtocolError, ServiceUnavailable
from xmppd.protocol.namespaces import NS_CLIENT, NS_STANZAS, NS_STREAMS, XML_LANG
from xmppd.protocol.stanza import (
    IQ,
    MESSAGE,
    PRESENCE,
    error_reply,
    is_stanza,
    make_element,
    reply,
    stored_stanza,
    sub_element,
    to_storage,
)
from xmppd.protocol.stream import serialize


def parse(text: str) -> etree._Element:
    return etree.fromstring(text.encode())


def test_tags():
    assert MESSAGE == "{jabber:client}message"
    assert PRESENCE == "{jabber:client}presence"
    assert IQ == "{jabber:client}iq"
    assert is_stanza(make_element(IQ)) and not is_stanza(make_element("{urn:x}iq"))


def test_make_element_uses_default_namespace():
    element = make_element(MESSAGE, {"to": "romeo@example.net", "id": None}, "hi")
    assert element.nsmap == {None: NS_CLIENT}
    assert element.get("to") == "romeo@example.net" and "id" not in element.attrib
    assert element.text == "hi"
    assert serialize(element) == b'<message to="romeo@example.net">hi</message>'


def test_make_element_streams_namespace_uses_stream_prefix():
    features = make_element("{%s}features" % NS_STREAMS)
    assert serialize(features) == b"<stream:features/>"
    sub_element(features, "{urn:ietf:params:xml:ns:xmpp-bind}bind")
    assert serialize(features) == b'<stream:features><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"/></stream:features>'


def test_sub_element_namespaces():
    message = make_element(MESSAGE)
    sub_element(message, "{jabber:client}body", text="x")
    request = sub_element(message, "{urn:xmpp:receipts}request")
    sub_element(request, "{urn:xmpp:receipts}inner", {"a": "1"})
    assert serialize(message) == (
        b'<message><body>x</body><request xmlns="urn:xmpp:receipts"><inner a="1"/></request></message>'
    )


def test_reply_to_iq():
    iq = parse(
        '<iq xmlns="jabber:client" type="get" id="p1" from="juliet@example.com/balcony" to="example.com">'
        '<ping xmlns="urn:xmpp:ping"/></iq>'
    )
    result = reply(iq)
    assert result.tag == IQ
    assert result.get("type") == "result"
    assert result.get("id") == "p1"
    assert result.get("to") == "juliet@example.com/balcony"
    assert result.get("from") == "example.com"
    assert len(result) == 0
    payload = make_element("{jabber:iq:version}query")
    sub_element(payload, "{jabber:iq:version}name", text="xmppd")
    result = reply(iq, payload)
    assert serialize(result) == (
        b'<iq to="juliet@example.com/balcony" from="example.com" id="p1" type="result">'
        b'<query xmlns="jabber:iq:version"><name>xmppd</name></query></iq>'
    )


def test_reply_without_addresses():
    result = reply(parse('<iq xmlns="jabber:client" type="set" id="b"/>'))
    assert dict(result.attrib) == {"id": "b", "type": "result"}


def test_error_reply_to_iq_has_only_the_error():
    iq = parse(
        '<iq xmlns="jabber:client" type="get" id="v1" from="a@example.com/r" to="b@example.com">'
        '<query xmlns="jabber:iq:version"/></iq>'
    )
    bounced = error_reply(iq, ServiceUnavailable())
    assert serialize(bounced) == (
        b'<iq to="a@example.com/r" from="b@example.com" id="v1" type="error">'
        b'<error type="cancel"><service-unavailable xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></iq>'
    )


def test_error_reply_to_message_keeps_payload():
    message = parse(
        '<message xmlns="jabber:client" type="chat" id="m1" from="a@example.com/r" to="nobody@example.com"'
        ' xml:lang="en"><body>hello</body>\n  <thread>t1</thread>\n</message>'
    )
    bounced = error_reply(message, BadRequest("nope"))
    assert bounced.tag == MESSAGE
    assert bounced.get("type") == "error"
    assert bounced.get(XML_LANG) == "en"
    assert [child.tag for child in bounced] == [
        "{jabber:client}body",
        "{jabber:client}thread",
        "{jabber:client}error",
    ]
    assert bounced[-1][0].tag == "{%s}bad-request" % NS_STANZAS
    # The original is untouched.
    assert len(message) == 2 and message.get("type") == "chat"


def test_error_reply_to_presence():
    presence = parse('<presence xmlns="jabber:client" type="subscribe" to="x@example.com" from="y@example.com"/>')
    bounced = error_reply(presence, ServiceUnavailable())
    assert bounced.tag == PRESENCE and bounced.get("type") == "error"
    assert bounced.get("to") == "y@example.com" and bounced.get("from") == "x@example.com"


def test_never_answer_an_error():
    error = parse('<message xmlns="jabber:client" type="error" id="e"/>')
    with pytest.raises(LocalProtocolError):
        error_reply(error, ServiceUnavailable())
    with pytest.raises(LocalProtocolError):
        reply(error)


@pytest.mark.parametrize(
    "data",
    [
        b"<message xmlns='jabber:client' foo:bar='x'/>",  # stored before issue 20
        b"<message xmlns='jabber:client' xmlns:a='urn:x' xmlns:b='urn:x' a:z='1' b:z='2'/>",
        b"<message xmlns='jabber:client'><body>cut",
        b"",
    ],
)
def test_stored_stanza_that_does_not_parse_is_none_and_logged(data, caplog):
    log = logging.getLogger("test")
    with caplog.at_level(logging.WARNING, "test"):
        assert stored_stanza(data, log, owner="a@b", id="17") is None
    assert "event=stored-stanza-unreadable owner=a@b id=17 error=" in caplog.text


@pytest.mark.parametrize(
    "data",
    [
        b"<message xmlns='jabber:client' xml:id='1'/>",
        b"<message xmlns='jabber:client' xml:id='a'><x xml:id='a'/></message>",
    ],
)
def test_stored_stanza_with_an_xml_id_error_is_read(data):
    """The stream lets xml:id errors through (they are not fatal); storage must read them back."""
    assert stored_stanza(data, logging.getLogger("test")) is not None


def test_stored_stanza_round_trip():
    element = make_element(MESSAGE, {"to": "a@b", "{urn:x}y": "1"})
    sub_element(element, "{jabber:client}body", text="hi")
    again = stored_stanza(to_storage(element), logging.getLogger("test"))
    assert etree.tostring(again) == etree.tostring(element)
