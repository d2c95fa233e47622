import pytest
from lxml import etree

from xmppd.protocol import errors
from xmppd.protocol.errors import (
    STANZA_ERROR_DEFAULT_TYPES,
    BadRequest,
    Gone,
    ItemNotFound,
    LocalProtocolError,
    ServiceUnavailable,
    StanzaError,
    StreamError,
    UnexpectedRequest,
)
from xmppd.protocol.namespaces import NS_CLIENT, NS_STANZAS, NS_STREAM_ERRORS, XML_LANG
from xmppd.protocol.stream import serialize

ALL_SUBCLASSES = {
    "BadRequest": "bad-request",
    "Conflict": "conflict",
    "FeatureNotImplemented": "feature-not-implemented",
    "Forbidden": "forbidden",
    "Gone": "gone",
    "InternalServerError": "internal-server-error",
    "ItemNotFound": "item-not-found",
    "JidMalformed": "jid-malformed",
    "NotAcceptable": "not-acceptable",
    "NotAllowed": "not-allowed",
    "NotAuthorized": "not-authorized",
    "PolicyViolation": "policy-violation",
    "RecipientUnavailable": "recipient-unavailable",
    "Redirect": "redirect",
    "RegistrationRequired": "registration-required",
    "RemoteServerNotFound": "remote-server-not-found",
    "RemoteServerTimeout": "remote-server-timeout",
    "ResourceConstraint": "resource-constraint",
    "ServiceUnavailable": "service-unavailable",
    "SubscriptionRequired": "subscription-required",
    "UndefinedCondition": "undefined-condition",
    "UnexpectedRequest": "unexpected-request",
}


@pytest.mark.parametrize("class_name, condition", sorted(ALL_SUBCLASSES.items()))
def test_every_condition_has_a_subclass(class_name, condition):
    cls = getattr(errors, class_name)
    err = cls()
    assert isinstance(err, StanzaError)
    assert err.condition == condition
    assert err.type == STANZA_ERROR_DEFAULT_TYPES[condition]
    assert err.text is None
    element = err.to_element()
    assert element.tag == "{%s}error" % NS_CLIENT
    assert element[0].tag == "{%s}%s" % (NS_STANZAS, condition)


def test_default_types_follow_rfc6120():
    assert BadRequest().type == "modify"
    assert ItemNotFound().type == "cancel"
    assert ServiceUnavailable().type == "cancel"
    assert errors.Forbidden().type == "auth"
    assert errors.NotAuthorized().type == "auth"
    assert errors.RecipientUnavailable().type == "wait"
    assert errors.ResourceConstraint().type == "wait"
    assert errors.JidMalformed().type == "modify"
    assert UnexpectedRequest().type == "wait"
    assert set(STANZA_ERROR_DEFAULT_TYPES) == set(ALL_SUBCLASSES.values())


def test_base_constructor_and_overrides():
    err = StanzaError("item-not-found")
    assert (err.condition, err.type, err.text) == ("item-not-found", "cancel", None)
    err = StanzaError("bad-request", "cancel", "why")
    assert (err.condition, err.type, err.text) == ("bad-request", "cancel", "why")
    err = BadRequest("missing id", type="cancel")
    assert (err.type, err.text) == ("cancel", "missing id")
    assert StanzaError().condition == "undefined-condition"


def test_unknown_condition_or_type_is_our_bug():
    with pytest.raises(LocalProtocolError):
        StanzaError("no-such-condition")
    with pytest.raises(LocalProtocolError):
        StanzaError("bad-request", "sometimes")


def test_error_element_output():
    element = BadRequest("Missing <id> & more").to_element()
    assert serialize(element) == (
        b'<error type="modify">'
        b'<bad-request xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/>'
        b'<text xmlns="urn:ietf:params:xml:ns:xmpp-stanzas">Missing &lt;id&gt; &amp; more</text>'
        b"</error>"
    )
    # Standalone it still carries its namespace.
    assert etree.tostring(element).startswith(b'<error xmlns="jabber:client" type="modify">')


def test_error_element_without_text():
    assert serialize(ItemNotFound().to_element()) == (
        b'<error type="cancel"><item-not-found xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error>'
    )


def test_app_condition_follows_defined_condition_and_text():
    app = etree.Element("{urn:xmpp:http:upload:0}file-too-large", nsmap={None: "urn:xmpp:http:upload:0"})
    etree.SubElement(app, "{urn:xmpp:http:upload:0}max-file-size").text = "1024"
    err = errors.NotAcceptable("too big", app_condition=app, by="upload.example.com", lang="en")
    element = err.to_element()
    assert element.get("by") == "upload.example.com"
    assert [child.tag for child in element] == [
        "{%s}not-acceptable" % NS_STANZAS,
        "{%s}text" % NS_STANZAS,
        "{urn:xmpp:http:upload:0}file-too-large",
    ]
    assert element[1].get(XML_LANG) == "en"
    assert element[2][0].text == "1024"
    # The application element is copied, so one error can be rendered twice.
    assert len(err.to_element()) == 3


def test_gone_and_redirect_carry_uri():
    element = Gone(uri="xmpp:romeo@example.net").to_element()
    assert element[0].text == "xmpp:romeo@example.net"


def test_from_element_round_trip():
    app = etree.Element("{urn:example}custom")
    original = UnexpectedRequest("not now", type="modify", app_condition=app)
    decoded = StanzaError.from_element(original.to_element())
    assert isinstance(decoded, UnexpectedRequest)
    assert (decoded.condition, decoded.type, decoded.text) == ("unexpected-request", "modify", "not now")
    assert decoded.app_condition.tag == "{urn:example}custom"


def test_from_element_tolerates_garbage():
    element = etree.fromstring(b'<error xmlns="jabber:client" type="bogus"><whatever xmlns="urn:x"/></error>')
    decoded = StanzaError.from_element(element)
    assert decoded.condition == "undefined-condition"
    assert decoded.type == "cancel"


def test_str_never_crashes_and_stays_terse():
    assert str(BadRequest()) == "bad-request (modify)"
    assert "why" in str(BadRequest("why"))
    assert "BadRequest" in repr(BadRequest())


def test_stream_error_bytes():
    assert StreamError("not-well-formed").to_bytes() == (
        b"<stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
    )
    assert StreamError("policy-violation", "Stanza > 256 KiB & more").to_bytes() == (
        b"<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
        b"<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Stanza &gt; 256 KiB &amp; more</text>"
        b"</stream:error>"
    )


def test_stream_error_parses_inside_a_stream():
    data = (
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        + StreamError("see-other-host", "moving", host="[2001:db8::1]:5222").to_bytes()
        + b"</stream:stream>"
    )
    root = etree.fromstring(data)
    error = root[0]
    assert error.tag == "{http://etherx.jabber.org/streams}error"
    assert error[0].tag == "{%s}see-other-host" % NS_STREAM_ERRORS
    assert error[0].text == "[2001:db8::1]:5222"
    assert error[1].text == "moving"


def test_stream_error_condition_is_checked():
    with pytest.raises(LocalProtocolError):
        StreamError("not-a-condition")
    err = StreamError("host-unknown")
    assert err.condition == "host-unknown" and err.text is None
    assert isinstance(err, Exception)


def test_local_protocol_error_is_an_exception():
    assert issubclass(LocalProtocolError, Exception)
    assert not issubclass(LocalProtocolError, StanzaError)
