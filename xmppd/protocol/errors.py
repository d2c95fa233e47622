"""Stanza errors (RFC 6120 §8.3), stream errors (RFC 6120 §4.9) and our own misuse.

Handlers raise a ``StanzaError`` subclass; the router turns it into an error
reply with ``xmppd.protocol.stanza.error_reply``.  The exception message is
for logs only: clients see the condition and the optional ``text``, never
``str(exc)``.
"""

from __future__ import annotations

import copy
from typing import Any
from xml.sax.saxutils import escape

from lxml import etree

from .namespaces import NS_CLIENT, NS_STANZAS, NS_STREAM_ERRORS, XML_LANG

__all__ = [
    "LocalProtocolError",
    "StanzaError",
    "StreamError",
    "STANZA_ERROR_TYPES",
    "STANZA_ERROR_DEFAULT_TYPES",
    "STREAM_ERROR_CONDITIONS",
    "BadRequest",
    "Conflict",
    "FeatureNotImplemented",
    "Forbidden",
    "Gone",
    "InternalServerError",
    "ItemNotFound",
    "JidMalformed",
    "NotAcceptable",
    "NotAllowed",
    "NotAuthorized",
    "PolicyViolation",
    "RecipientUnavailable",
    "Redirect",
    "RegistrationRequired",
    "RemoteServerNotFound",
    "RemoteServerTimeout",
    "ResourceConstraint",
    "ServiceUnavailable",
    "SubscriptionRequired",
    "UndefinedCondition",
    "UnexpectedRequest",
]


class LocalProtocolError(Exception):
    """Our own code used the protocol layer wrongly (a bug, never the peer's fault)."""


STANZA_ERROR_TYPES = frozenset({"auth", "cancel", "continue", "modify", "wait"})

# RFC 6120 §8.3.3: the error type each defined condition is usually sent with.
STANZA_ERROR_DEFAULT_TYPES: dict[str, str] = {
    "bad-request": "modify",
    "conflict": "cancel",
    "feature-not-implemented": "cancel",
    "forbidden": "auth",
    "gone": "cancel",
    "internal-server-error": "cancel",
    "item-not-found": "cancel",
    "jid-malformed": "modify",
    "not-acceptable": "modify",
    "not-allowed": "cancel",
    "not-authorized": "auth",
    "policy-violation": "modify",
    "recipient-unavailable": "wait",
    "redirect": "modify",
    "registration-required": "auth",
    "remote-server-not-found": "cancel",
    "remote-server-timeout": "wait",
    "resource-constraint": "wait",
    "service-unavailable": "cancel",
    "subscription-required": "auth",
    "undefined-condition": "cancel",
    "unexpected-request": "wait",
}

# RFC 6120 §4.9.3.
STREAM_ERROR_CONDITIONS = frozenset(
    {
        "bad-format",
        "bad-namespace-prefix",
        "conflict",
        "connection-timeout",
        "host-gone",
        "host-unknown",
        "improper-addressing",
        "internal-server-error",
        "invalid-from",
        "invalid-namespace",
        "invalid-xml",
        "not-authorized",
        "not-well-formed",
        "policy-violation",
        "remote-connection-failed",
        "reset",
        "resource-constraint",
        "restricted-xml",
        "see-other-host",
        "system-shutdown",
        "undefined-condition",
        "unsupported-encoding",
        "unsupported-feature",
        "unsupported-stanza-type",
        "unsupported-version",
    }
)

_ERROR_TAG = "{%s}error" % NS_CLIENT
_TEXT_TAG = "{%s}text" % NS_STANZAS
# lxml-stubs types an nsmap as Mapping[str, str]; lxml takes None for the default namespace.
_CLIENT_NSMAP: dict[str, str] = {None: NS_CLIENT}  # type: ignore[dict-item]
_STANZAS_NSMAP: dict[str, str] = {None: NS_STANZAS}  # type: ignore[dict-item]


class StanzaError(Exception):
    """A stanza-level error: ``condition`` (RFC 6120 §8.3.3), ``type``, optional ``text``.

    ``app_condition`` is an application-specific element appended after the
    defined condition (RFC 6120 §8.3.2), e.g. XEP-0363's ``<file-too-large/>``.
    ``uri`` is the character data of ``<gone/>`` and ``<redirect/>``; ``by``
    names the entity that generated the error.
    """

    condition: str = "undefined-condition"

    def __init__(
        self,
        condition: str | None = None,
        type: str | None = None,
        text: str | None = None,
        *,
        app_condition: etree._Element | None = None,
        by: str | None = None,
        uri: str | None = None,
        lang: str | None = None,
    ):
        if condition is None:
            condition = self.__class__.condition
        if condition not in STANZA_ERROR_DEFAULT_TYPES:
            raise LocalProtocolError(f"unknown stanza error condition {condition!r}")
        if type is None:
            type = STANZA_ERROR_DEFAULT_TYPES[condition]
        elif type not in STANZA_ERROR_TYPES:
            raise LocalProtocolError(f"unknown stanza error type {type!r}")
        super().__init__(condition, type, text)
        self.condition = condition
        self.type = type
        self.text = text
        self.app_condition = app_condition
        self.by = by
        self.uri = uri
        self.lang = lang

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(condition={self.condition!r}, type={self.type!r}, text={self.text!r})"

    def __str__(self) -> str:
        if self.text:
            return f"{self.condition} ({self.type}): {self.text}"
        return f"{self.condition} ({self.type})"

    def to_element(self) -> etree._Element:
        """``<error type=...><condition xmlns=stanzas/>[<text/>][app condition]</error>``."""
        error = etree.Element(_ERROR_TAG, nsmap=_CLIENT_NSMAP)
        error.set("type", self.type)
        if self.by:
            error.set("by", self.by)
        condition = etree.SubElement(error, "{%s}%s" % (NS_STANZAS, self.condition), nsmap=_STANZAS_NSMAP)
        if self.uri is not None and self.condition in ("gone", "redirect"):
            condition.text = self.uri
        if self.text:
            text = etree.SubElement(error, _TEXT_TAG, nsmap=_STANZAS_NSMAP)
            if self.lang:
                text.set(XML_LANG, self.lang)
            text.text = self.text
        if self.app_condition is not None:
            error.append(_copy(self.app_condition))
        return error

    @classmethod
    def from_element(cls, error: etree._Element) -> StanzaError:
        """Decode an ``<error/>`` element (as found in a type='error' stanza).

        Unknown or missing conditions decode as undefined-condition; the first
        element outside the stanzas namespace becomes ``app_condition``.
        """
        condition = "undefined-condition"
        text = uri = lang = None
        app_condition = None
        prefix = "{%s}" % NS_STANZAS
        found = False
        for child in error:
            tag = child.tag
            if not isinstance(tag, str):
                continue
            if tag.startswith(prefix):
                name = tag[len(prefix) :]
                if name == "text":
                    text = child.text
                    lang = child.get(XML_LANG)
                elif not found and name in STANZA_ERROR_DEFAULT_TYPES:
                    condition = name
                    found = True
                    if child.text and child.text.strip():
                        uri = child.text.strip()
            elif app_condition is None:
                app_condition = child
        error_type = error.get("type")
        if error_type not in STANZA_ERROR_TYPES:
            error_type = None
        subclass = _CONDITION_CLASSES.get(condition, StanzaError)
        result = StanzaError.__new__(subclass)
        StanzaError.__init__(
            result,
            condition,
            error_type,
            text,
            app_condition=app_condition,
            by=error.get("by"),
            uri=uri,
            lang=lang,
        )
        return result


def _copy(element: etree._Element) -> etree._Element:
    return copy.deepcopy(element)


def _make_condition_class(class_name: str, condition: str) -> type[StanzaError]:
    def __init__(self: StanzaError, text: str | None = None, type: str | None = None, **kwargs: Any) -> None:
        StanzaError.__init__(self, condition, type, text, **kwargs)

    __init__.__doc__ = f"Stanza error {condition!r}: ``{class_name}(text=None, type=None, **kw)``."
    return type(
        class_name,
        (StanzaError,),
        {
            "condition": condition,
            "__init__": __init__,
            "__doc__": f"RFC 6120 §8.3.3 <{condition}/>, default type {STANZA_ERROR_DEFAULT_TYPES[condition]!r}.",
            "__module__": __name__,
        },
    )


BadRequest = _make_condition_class("BadRequest", "bad-request")
Conflict = _make_condition_class("Conflict", "conflict")
FeatureNotImplemented = _make_condition_class("FeatureNotImplemented", "feature-not-implemented")
Forbidden = _make_condition_class("Forbidden", "forbidden")
Gone = _make_condition_class("Gone", "gone")
InternalServerError = _make_condition_class("InternalServerError", "internal-server-error")
ItemNotFound = _make_condition_class("ItemNotFound", "item-not-found")
JidMalformed = _make_condition_class("JidMalformed", "jid-malformed")
NotAcceptable = _make_condition_class("NotAcceptable", "not-acceptable")
NotAllowed = _make_condition_class("NotAllowed", "not-allowed")
NotAuthorized = _make_condition_class("NotAuthorized", "not-authorized")
PolicyViolation = _make_condition_class("PolicyViolation", "policy-violation")
RecipientUnavailable = _make_condition_class("RecipientUnavailable", "recipient-unavailable")
Redirect = _make_condition_class("Redirect", "redirect")
RegistrationRequired = _make_condition_class("RegistrationRequired", "registration-required")
RemoteServerNotFound = _make_condition_class("RemoteServerNotFound", "remote-server-not-found")
RemoteServerTimeout = _make_condition_class("RemoteServerTimeout", "remote-server-timeout")
ResourceConstraint = _make_condition_class("ResourceConstraint", "resource-constraint")
ServiceUnavailable = _make_condition_class("ServiceUnavailable", "service-unavailable")
SubscriptionRequired = _make_condition_class("SubscriptionRequired", "subscription-required")
UndefinedCondition = _make_condition_class("UndefinedCondition", "undefined-condition")
UnexpectedRequest = _make_condition_class("UnexpectedRequest", "unexpected-request")

_CONDITION_CLASSES: dict[str, type[StanzaError]] = {
    cls.condition: cls
    for cls in (
        BadRequest,
        Conflict,
        FeatureNotImplemented,
        Forbidden,
        Gone,
        InternalServerError,
        ItemNotFound,
        JidMalformed,
        NotAcceptable,
        NotAllowed,
        NotAuthorized,
        PolicyViolation,
        RecipientUnavailable,
        Redirect,
        RegistrationRequired,
        RemoteServerNotFound,
        RemoteServerTimeout,
        ResourceConstraint,
        ServiceUnavailable,
        SubscriptionRequired,
        UndefinedCondition,
        UnexpectedRequest,
    )
}


class StreamError(Exception):
    """A stream-level error (RFC 6120 §4.9); the stream is closed after sending it.

    ``host`` is the character data of ``<see-other-host/>``.
    """

    def __init__(self, condition: str, text: str | None = None, *, host: str | None = None):
        if condition not in STREAM_ERROR_CONDITIONS:
            raise LocalProtocolError(f"unknown stream error condition {condition!r}")
        super().__init__(condition, text)
        self.condition = condition
        self.text = text
        self.host = host

    def __repr__(self) -> str:
        return f"StreamError(condition={self.condition!r}, text={self.text!r})"

    def __str__(self) -> str:
        return f"{self.condition}: {self.text}" if self.text else self.condition

    def to_bytes(self) -> bytes:
        """The ``<stream:error>`` element, as sent inside an open stream."""
        if self.host is not None and self.condition == "see-other-host":
            condition = f"<see-other-host xmlns='{NS_STREAM_ERRORS}'>{escape(self.host)}</see-other-host>"
        else:
            condition = f"<{self.condition} xmlns='{NS_STREAM_ERRORS}'/>"
        text = f"<text xmlns='{NS_STREAM_ERRORS}'>{escape(self.text)}</text>" if self.text else ""
        return f"<stream:error>{condition}{text}</stream:error>".encode()
