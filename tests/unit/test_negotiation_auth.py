"""Sans-IO: SASL in the negotiation. PLAIN's key derivation is an action the caller runs
off its event loop, the same work for unknown users (no timing oracle), and an attempt the
caller's budget refuses gets <temporary-auth-failure/> without a password check."""

import base64

from lxml import etree

from xmppd.protocol import negotiation as n
from xmppd.protocol.negotiation import C2SNegotiation, Settings, State
from xmppd.protocol.sasl import derive_scram_credentials, verify_plain_password
from xmppd.protocol.stream import StanzaReceived, StreamOpened

CREDS = derive_scram_credentials("pencil", "sha256")


def opened() -> C2SNegotiation:
    settings = Settings(domains=frozenset({"localhost"}), tls_available=True, tls_required=True)
    negotiation = C2SNegotiation(settings, tls_active=True)
    negotiation.receive(StreamOpened({"to": "localhost", "version": "1.0"}))
    return negotiation


def plain(negotiation, user: str, password: str) -> list:
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    element = etree.fromstring(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    return negotiation.receive(StanzaReceived(element))


def sent(actions) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, n.SendBytes))


def check(negotiation, creds, password) -> list:
    """Look up `creds`, then run the CheckPassword action as the caller would."""
    [action] = negotiation.credentials_found(creds)
    assert isinstance(action, n.CheckPassword) and negotiation.state is State.CHECKING_PASSWORD
    return negotiation.password_checked(verify_plain_password(action.password, action.credentials, action.hash_name))


def test_plain_password_is_checked_by_the_caller():
    negotiation = opened()
    assert plain(negotiation, "juliet", "pencil") == [n.LookupCredentials("juliet", "sha256")]
    actions = check(negotiation, CREDS, "pencil")
    assert b"<success" in sent(actions) and any(isinstance(a, n.Authenticated) for a in actions)


def test_plain_wrong_password_fails():
    negotiation = opened()
    plain(negotiation, "juliet", "crayon")
    actions = check(negotiation, CREDS, "crayon")
    assert b"<not-authorized/>" in sent(actions) and negotiation.state is State.AWAIT_AUTH


def test_plain_unknown_user_costs_a_derivation_like_a_known_one():
    negotiation = opened()
    plain(negotiation, "nobody", "pencil")
    [action] = negotiation.credentials_found(None)
    assert isinstance(action, n.CheckPassword)
    assert action.credentials.iterations == CREDS.iterations and len(action.credentials.salt) == len(CREDS.salt)
    # Even a caller that says the password matched does not log an unknown user in.
    actions = negotiation.password_checked(True)
    assert b"<not-authorized/>" in sent(actions)
    assert not any(isinstance(a, n.Authenticated) for a in actions)


def test_refused_attempt_gets_temporary_auth_failure_and_counts_as_a_retry():
    negotiation = opened()
    for _ in range(3):
        plain(negotiation, "juliet", "pencil")
        actions = negotiation.attempt_refused("too many failed logins; try again later")
        assert b"<temporary-auth-failure/><text xml:lang='en'>too many failed logins; try again later</text>" in sent(
            actions
        )
        assert isinstance(actions[0], n.AuthFailed) and actions[0].condition == "temporary-auth-failure"
    # RFC 6120 6.4.5: after the retries the stream is closed with policy-violation.
    assert b"<policy-violation" in sent(actions) and isinstance(actions[-1], n.CloseStream)


def test_elements_while_the_password_is_checked_are_out_of_turn():
    negotiation = opened()
    plain(negotiation, "juliet", "pencil")
    negotiation.credentials_found(CREDS)
    actions = plain(negotiation, "juliet", "pencil")
    assert b"<policy-violation" in sent(actions) and isinstance(actions[-1], n.CloseStream)
