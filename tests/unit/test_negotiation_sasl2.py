"""Sans-IO: SASL2 (XEP-0388), Bind 2 (XEP-0386) and FAST (XEP-0484) in the negotiation:
the same mechanism and credential actions as RFC 6120 SASL, no stream restart, <success/>
once the caller bound the resource and issued the token."""

import base64
import hashlib
import hmac

from lxml import etree

from xmppd.protocol import negotiation as n
from xmppd.protocol.jid import JID
from xmppd.protocol.negotiation import C2SNegotiation, Settings, State
from xmppd.protocol.sasl import derive_scram_credentials, verify_plain_password
from xmppd.protocol.stream import StanzaReceived, StreamOpened

CREDS = derive_scram_credentials("pencil", "sha256")
SASL2 = "urn:xmpp:sasl:2"


def opened() -> C2SNegotiation:
    settings = Settings(
        domains=frozenset({"localhost"}),
        tls_available=True,
        tls_required=True,
        inline_features=lambda: ["urn:xmpp:sm:3"],
    )
    negotiation = C2SNegotiation(settings, tls_active=True)
    negotiation.receive(StreamOpened({"to": "localhost", "version": "1.0"}))
    return negotiation


def authenticate(negotiation, password: str, extra: str = "") -> list:
    token = base64.b64encode(f"\0juliet\0{password}".encode()).decode()
    element = etree.fromstring(
        f"<authenticate xmlns='{SASL2}' mechanism='PLAIN'>"
        f"<initial-response>{token}</initial-response>{extra}</authenticate>"
    )
    assert negotiation.receive(StanzaReceived(element)) == [n.LookupCredentials("juliet", "sha256")]
    [check] = negotiation.credentials_found(CREDS)
    return negotiation.password_checked(verify_plain_password(check.password, check.credentials, check.hash_name))


def sent(actions) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, n.SendBytes))


def test_features_offer_sasl2_with_bind2_inline():
    negotiation = C2SNegotiation(opened().settings, tls_active=True)
    [_, features] = negotiation.receive(StreamOpened({"to": "localhost", "version": "1.0"}))
    assert (
        f"<authentication xmlns='{SASL2}'><mechanism>SCRAM-SHA-256</mechanism>".encode() in features.data
        and b"<inline><bind xmlns='urn:xmpp:bind:0'><inline><feature var=\"urn:xmpp:sm:3\"/></inline></bind>"
        b"</inline></authentication>"
        in features.data
    )


def test_success_without_restart_names_the_bare_jid():
    negotiation = opened()
    actions = authenticate(negotiation, "pencil")
    assert n.Authenticated(JID("juliet", "localhost"), "PLAIN", restart=False) in actions
    [complete] = [a for a in actions if isinstance(a, n.CompleteSasl2)]
    assert complete.bind is None and complete.token_request is None
    assert sent(negotiation.sasl2_completed(complete.jid, None)).startswith(
        f"<success xmlns='{SASL2}'><authorization-identifier>juliet@localhost</authorization-identifier></success>"
        "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>".encode()
    )
    assert negotiation.state is State.AWAIT_BIND


def test_bind2_waits_for_the_resource_then_succeeds_with_the_full_jid():
    negotiation = opened()
    actions = authenticate(
        negotiation, "pencil", "<user-agent id='u1'/><bind xmlns='urn:xmpp:bind:0'><tag>App</tag></bind>"
    )
    [bind] = [a for a in actions if isinstance(a, n.CompleteSasl2)]
    assert (bind.tag, bind.user_agent) == ("App", "u1") and sent(actions) == b""
    out = sent(negotiation.sasl2_completed(JID("juliet", "localhost", "App/x1"), b"<enabled xmlns='urn:xmpp:sm:3'/>"))
    assert (
        out
        == (
            f"<success xmlns='{SASL2}'><authorization-identifier>juliet@localhost/App/x1"
            "</authorization-identifier><bound xmlns='urn:xmpp:bind:0'><enabled xmlns='urn:xmpp:sm:3'/>"
            "</bound></success><stream:features></stream:features>"
        ).encode()
    )
    assert negotiation.state is State.BOUND


def test_failure_keeps_the_rfc6120_condition_and_binds_nothing():
    negotiation = opened()
    actions = authenticate(negotiation, "crayon", "<bind xmlns='urn:xmpp:bind:0'/>")
    assert (
        sent(actions)
        == (f"<failure xmlns='{SASL2}'><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/></failure>").encode()
    )
    assert not any(isinstance(a, n.CompleteSasl2) for a in actions) and negotiation.state is State.AWAIT_AUTH
    # An RFC 6120 <auth/> after it is RFC 6120 SASL: a stream restart, no bind.
    token = base64.b64encode(b"\0juliet\0pencil").decode()
    negotiation.receive(
        StanzaReceived(
            etree.fromstring(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        )
    )
    [check] = negotiation.credentials_found(CREDS)
    actions = negotiation.password_checked(verify_plain_password(check.password, check.credentials, check.hash_name))
    assert sent(actions) == b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"
    assert n.Authenticated(JID("juliet", "localhost"), "PLAIN") in actions and negotiation.state is State.AWAIT_STREAM


def fast_negotiation() -> C2SNegotiation:
    settings = Settings(
        domains=frozenset({"localhost"}),
        tls_available=True,
        tls_required=True,
        fast=lambda: True,
        channel_binding={"tls-exporter": b"exported"},
    )
    negotiation = C2SNegotiation(settings, tls_active=True)
    negotiation.receive(StreamOpened({"to": "localhost", "version": "1.0"}))
    return negotiation


def ht_authenticate(negotiation, mechanism: str, token: bytes, cb_data: bytes = b"", extra: str = "") -> list:
    proof = hmac.new(token, b"Initiator" + cb_data, hashlib.sha256).digest()
    initial = base64.b64encode(b"juliet\0" + proof).decode()
    element = etree.fromstring(
        f"<authenticate xmlns='{SASL2}' mechanism='{mechanism}'>"
        f"<initial-response>{initial}</initial-response><user-agent id='u1'/>"
        f"<fast xmlns='urn:xmpp:fast:0'/>{extra}</authenticate>"
    )
    return negotiation.receive(StanzaReceived(element))


def test_fast_mechanisms_are_offered_inline_and_bound_to_their_channel():
    negotiation = fast_negotiation()
    assert negotiation.fast_mechanism_names() == ["HT-SHA-256-EXPR", "HT-SHA-256-NONE"]
    assert ht_authenticate(negotiation, "HT-SHA-256-EXPR", b"tok", b"exported") == [
        n.LookupToken("juliet", "HT-SHA-256-EXPR", "u1")
    ]
    actions = negotiation.tokens_found([b"other", b"tok"], [])
    [complete] = [a for a in actions if isinstance(a, n.CompleteSasl2)]
    assert complete.token_used == b"tok" and complete.mechanism == "HT-SHA-256-EXPR"
    out = sent(negotiation.sasl2_completed(complete.jid, None))
    responder = hmac.new(b"tok", b"Responder" + b"exported", hashlib.sha256).digest()
    assert f"<additional-data>{base64.b64encode(responder).decode()}</additional-data>".encode() in out
    # The same token without the channel's data proves nothing.
    negotiation = fast_negotiation()
    ht_authenticate(negotiation, "HT-SHA-256-EXPR", b"tok")
    assert b"<not-authorized" in sent(negotiation.tokens_found([b"tok"], []))
    # An expired token is not trusted any more (XEP-0484 6.2).
    negotiation = fast_negotiation()
    ht_authenticate(negotiation, "HT-SHA-256-NONE", b"old")
    assert b"<credentials-expired" in sent(negotiation.tokens_found([b"new"], [b"old"]))


def test_ht_mechanisms_need_fast_and_sasl2():
    negotiation = fast_negotiation()
    token = base64.b64encode(b"juliet\0proof").decode()
    actions = negotiation.receive(
        StanzaReceived(
            etree.fromstring(
                f"<authenticate xmlns='{SASL2}' mechanism='HT-SHA-256-NONE'><initial-response>{token}</initial-response>"
                "</authenticate>"
            )
        )
    )
    assert b"<invalid-mechanism" in sent(actions)
    actions = negotiation.receive(
        StanzaReceived(
            etree.fromstring(
                f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='HT-SHA-256-NONE'>{token}</auth>"
            )
        )
    )
    assert b"<invalid-mechanism/>" in sent(actions)


def test_abort_during_scram_gets_aborted_in_the_sasl2_namespace():
    negotiation = opened()
    initial = base64.b64encode(b"n,,n=juliet,r=abcdefgh").decode()
    negotiation.receive(
        StanzaReceived(
            etree.fromstring(
                f"<authenticate xmlns='{SASL2}' mechanism='SCRAM-SHA-256'><initial-response>{initial}</initial-response>"
                "</authenticate>"
            )
        )
    )
    assert b"<challenge xmlns='urn:xmpp:sasl:2'>" in sent(negotiation.credentials_found(CREDS))
    actions = negotiation.receive(StanzaReceived(etree.fromstring(f"<abort xmlns='{SASL2}'/>")))
    assert (
        sent(actions)
        == (f"<failure xmlns='{SASL2}'><aborted xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/></failure>").encode()
    )
    assert negotiation.state is State.AWAIT_AUTH


def test_inline_resumption_binds_nothing():
    negotiation = opened()
    actions = authenticate(
        negotiation, "pencil", "<resume xmlns='urn:xmpp:sm:3' previd='x' h='0'/><bind xmlns='urn:xmpp:bind:0'/>"
    )
    [complete] = [a for a in actions if isinstance(a, n.CompleteSasl2)]
    assert [child.tag for child in complete.inline] == ["{urn:xmpp:sm:3}resume"]
    negotiation.resumed()
    out = sent(negotiation.sasl2_completed(JID("juliet", "localhost", "old"), None, b"<resumed/>"))
    assert b"juliet@localhost/old</authorization-identifier><resumed/></success>" in out and b"xmpp-bind" not in out
    assert negotiation.state is State.BOUND
