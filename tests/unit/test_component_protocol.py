"""XEP-0114 sans-IO: the handshake digest and the namespace of a component's stanzas."""

from lxml import etree

from xmppd.protocol.component import handshake_digest, is_valid_handshake, to_client_namespace
from xmppd.protocol.stream import StanzaReceived, XmlStream


def test_handshake_of_the_xep_example():
    # XEP-0114 section 3: stream id 3BF96D32; the example's secret is "test".
    assert handshake_digest("3BF96D32", "test") == "aaee83c26aeeafcbabeabfcbcd50df997e0a2a1e"
    assert is_valid_handshake("aaee83c26aeeafcbabeabfcbcd50df997e0a2a1e", "3BF96D32", "test")
    assert not is_valid_handshake("aaee83c26aeeafcbabeabfcbcd50df997e0a2a1f", "3BF96D32", "test")
    assert not is_valid_handshake("", "3BF96D32", "test")
    assert not is_valid_handshake("é", "3BF96D32", "test")  # not ASCII: refused, no exception


def test_stanza_of_a_component_stream_is_requalified_by_jabber_client():
    stream = XmlStream(content_namespace="jabber:component:accept")
    stream.receive_data(
        b"<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams'"
        b" to='gw.example.org'><message from='a@gw.example.org' to='b@example.org' title='x=\"jabber:component:accept\"'>"
        b"<body>hi</body><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client'/></forwarded>"
        b"</message>"
    )
    element = [event for event in stream.events() if isinstance(event, StanzaReceived)][0].element
    stanza = to_client_namespace(element)
    assert stanza.tag == "{jabber:client}message"
    assert stanza.findtext("{jabber:client}body") == "hi"
    assert stanza.get("title") == 'x="jabber:component:accept"'
    assert stanza.find("{urn:xmpp:forward:0}forwarded/{jabber:client}message") is not None
    assert b"ns0" not in etree.tostring(stanza)
