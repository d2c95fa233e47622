"""Sans-IO: iqs before authentication (XEP-0077) are handed to the caller only once TLS
is on or not required; anything else before SASL still closes the stream."""

from lxml import etree

from xmppd.protocol import negotiation as n
from xmppd.protocol.negotiation import C2SNegotiation, Settings, State
from xmppd.protocol.stream import StanzaReceived, StreamOpened

REGISTER_GET = "<iq xmlns='jabber:client' type='get' id='r1'><query xmlns='jabber:iq:register'/></iq>"


def opened(*, tls_required: bool, tls_active: bool = False) -> C2SNegotiation:
    settings = Settings(domains=frozenset({"localhost"}), tls_available=True, tls_required=tls_required)
    negotiation = C2SNegotiation(settings, tls_active=tls_active)
    negotiation.receive(StreamOpened({"to": "localhost", "version": "1.0"}))
    return negotiation


def receive(negotiation, xml: str) -> list:
    return negotiation.receive(StanzaReceived(etree.fromstring(xml)))


def test_iq_before_auth_is_handed_over_and_the_state_stays():
    negotiation = opened(tls_required=False)
    assert negotiation.state is State.AWAIT_AUTH
    actions = receive(negotiation, REGISTER_GET)
    assert len(actions) == 1 and isinstance(actions[0], n.UnauthenticatedIq)
    assert actions[0].iq.get("id") == "r1"
    assert negotiation.state is State.AWAIT_AUTH


def test_iq_after_tls_is_handed_over():
    negotiation = opened(tls_required=True, tls_active=True)
    assert isinstance(receive(negotiation, REGISTER_GET)[0], n.UnauthenticatedIq)


def test_iq_before_required_starttls_closes_the_stream():
    negotiation = opened(tls_required=True)
    actions = receive(negotiation, REGISTER_GET)
    assert isinstance(actions[-1], n.CloseStream)
    assert b"policy-violation" in b"".join(a.data for a in actions if isinstance(a, n.SendBytes))


def test_message_or_malformed_iq_before_auth_is_not_authorized():
    for xml in (
        "<message xmlns='jabber:client' to='x@localhost'><body>hi</body></message>",
        "<iq xmlns='jabber:client' type='result' id='r1'/>",
        "<iq xmlns='jabber:client' type='get'><query xmlns='jabber:iq:register'/></iq>",
    ):
        negotiation = opened(tls_required=False)
        actions = receive(negotiation, xml)
        assert isinstance(actions[-1], n.CloseStream), xml
        assert b"not-authorized" in b"".join(a.data for a in actions if isinstance(a, n.SendBytes))
