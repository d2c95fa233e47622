"""Sans-IO: what the negotiation writes stays well-formed XML whatever text or iq id goes
into it (a stream error's text, a bind reply's id and text are escaped)."""

import base64

from lxml import etree

from xmppd.protocol import negotiation as n
from xmppd.protocol.namespaces import NS_BIND, NS_CLIENT, NS_SASL, NS_STANZAS, NS_STREAM_ERRORS
from xmppd.protocol.negotiation import C2SNegotiation, Settings, State
from xmppd.protocol.sasl import derive_scram_credentials
from xmppd.protocol.stream import StanzaReceived, StreamErrorDetected, StreamOpened

AWKWARD = "a <b> & 'c' \"d\""


def opened() -> tuple[C2SNegotiation, bytes]:
    settings = Settings(domains=frozenset({"localhost"}), tls_available=True, tls_required=True)
    negotiation = C2SNegotiation(settings, tls_active=True)
    return negotiation, sent(negotiation.receive(StreamOpened({"to": "localhost", "version": "1.0"})))


def authenticated() -> tuple[C2SNegotiation, bytes]:
    """Logged in with PLAIN as juliet, the stream restarted: the header and features sent."""
    negotiation, _ = opened()
    token = base64.b64encode(b"\0juliet\0pencil").decode()
    negotiation.receive(StanzaReceived(etree.fromstring(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")))
    negotiation.credentials_found(derive_scram_credentials("pencil", "sha256"))
    assert isinstance(negotiation.password_checked(True)[-1], n.Authenticated)
    return negotiation, sent(negotiation.receive(StreamOpened({"to": "localhost", "version": "1.0"})))


def sent(actions) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, n.SendBytes))


def stream(data: bytes) -> etree._Element:
    """The stream the client read, closed if the server did not close it."""
    if not data.endswith(b"</stream:stream>"):
        data += b"</stream:stream>"
    return etree.fromstring(data)


def bind_asked(iq_id: str) -> tuple[C2SNegotiation, bytes, etree._Element]:
    negotiation, header = authenticated()
    iq = etree.Element(f"{{{NS_CLIENT}}}iq", type="set", id=iq_id)
    etree.SubElement(iq, f"{{{NS_BIND}}}bind")
    [action] = negotiation.receive(StanzaReceived(iq))
    assert isinstance(action, n.BindResource) and negotiation.state is State.BINDING
    return negotiation, header, iq


def test_stream_error_text_is_escaped():
    negotiation, header = opened()
    actions = negotiation.receive(StreamErrorDetected("policy-violation", AWKWARD))
    assert isinstance(actions[-1], n.CloseStream)
    error = stream(header + sent(actions)).find("{http://etherx.jabber.org/streams}error")
    assert error[0].tag == f"{{{NS_STREAM_ERRORS}}}policy-violation"
    assert error.findtext(f"{{{NS_STREAM_ERRORS}}}text") == AWKWARD


def test_bind_result_keeps_an_awkward_id():
    negotiation, header, iq = bind_asked(AWKWARD)
    full_jid = negotiation.authenticated.with_resource("balcony")
    result = stream(header + sent(negotiation.bound(full_jid, iq)))[-1]
    assert result.get("type") == "result" and result.get("id") == AWKWARD
    assert result.findtext(f"{{{NS_BIND}}}bind/{{{NS_BIND}}}jid") == str(full_jid)
    assert negotiation.state is State.BOUND


def test_bind_refusal_keeps_an_awkward_id_and_text():
    negotiation, header, iq = bind_asked(AWKWARD)
    reply = stream(header + sent(negotiation.bind_failed(iq, "resource-constraint", "wait", AWKWARD)))[-1]
    assert reply.get("type") == "error" and reply.get("id") == AWKWARD
    assert reply.find(f"{{{NS_CLIENT}}}error/{{{NS_STANZAS}}}resource-constraint") is not None
    assert reply.findtext(f"{{{NS_CLIENT}}}error/{{{NS_STANZAS}}}text") == AWKWARD
    assert negotiation.state is State.AWAIT_BIND
