"""XEP-0124 BOSH and XEP-0206 XMPP over BOSH: the <body/> wrapper, sans-IO.

A BOSH client sends its stream as HTTP requests, each holding one ``<body/>`` of
``http://jabber.org/protocol/httpbind`` with whole elements in it; the session-creation
request and each restart (``xmpp:restart="true"``, XEP-0206 section 5) stand for the
stream header, a ``type="terminate"`` body for its end. The negotiation and the session
do not see the difference:

* ``parse_body`` reads one request body with an ``XmlStream`` whose stream header is
  implied, so the restricted-XML rules of TCP streams hold and the stanza size limit
  holds for the whole body. What is not one ``<body/>`` with a valid 'rid' is a
  ``BoshError``: bad-request (XEP-0124 section 19), or policy-violation past the limit.
* ``BoshFraming`` turns the bodies, given in rid order, into the events of
  ``XmlStream`` (the creation request or a restart is ``StreamOpened``).
* ``wrap`` writes a response ``<body/>`` around payloads as they were written for a
  TCP stream and made self-contained by ``framing.frames``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from xml.sax.saxutils import quoteattr

from lxml import etree

from .namespaces import NS_CLIENT, NS_HTTPBIND, NS_STREAMS, NS_XBOSH, XML_LANG
from .stream import (
    DEFAULT_MAX_STANZA_BYTES,
    StanzaReceived,
    StreamClosed,
    StreamErrorDetected,
    StreamEvent,
    StreamOpened,
    XmlStream,
)

__all__ = ["Body", "BoshError", "BoshFraming", "parse_body", "wrap", "MAX_RID"]

BODY = "{%s}body" % NS_HTTPBIND
XMPP_VERSION = "{%s}version" % NS_XBOSH
XMPP_RESTART = "{%s}restart" % NS_XBOSH
MAX_RID = 2**53 - 1  # section 14.1: rids never go past it

_IMPLIED_HEADER = b"<stream:stream xmlns='%s' xmlns:stream='%s' version='1.0'>" % (
    NS_CLIENT.encode(),
    NS_STREAMS.encode(),
)
_HTTPBIND_PREFIX = "{%s}" % NS_HTTPBIND
_CLIENT_PREFIX = "{%s}" % NS_CLIENT
_SID = re.compile(rb"""<body\b[^>]*?\ssid\s*=\s*(?:'([^'<>]*)'|"([^"<>]*)")""")


class BoshError(Exception):
    """A request the binding refuses: its terminal binding condition, and the sid it
    named, if that could be read."""

    def __init__(self, condition: str, text: str, sid: str | None = None):
        super().__init__(text)
        self.condition, self.text, self.sid = condition, text, sid


@dataclass(frozen=True)
class Body:
    """One request's <body/>: its attributes (namespaced ones in Clark notation) and
    its payloads."""

    attributes: dict[str, str]
    payloads: list[etree._Element] = field(default_factory=list)

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.attributes.get(name, default)

    @property
    def rid(self) -> int:
        return int(self.attributes["rid"])

    @property
    def sid(self) -> str | None:
        return self.attributes.get("sid")

    @property
    def is_terminate(self) -> bool:
        return self.attributes.get("type") == "terminate"

    @property
    def is_restart(self) -> bool:
        return self.attributes.get(XMPP_RESTART) in ("true", "1")


def parse_body(data: bytes, max_bytes: int = DEFAULT_MAX_STANZA_BYTES) -> Body:
    """The <body/> of one request; raises BoshError."""
    content = data.strip()
    if content.startswith(b"<?xml"):  # a declaration, allowed at the start of a document
        end = content.find(b"?>")
        content = content[end + 2 :].lstrip() if end > 0 else content
    stream = XmlStream(max_bytes)
    stream.receive_data(_IMPLIED_HEADER)
    stream.events()
    stream.receive_data(content)
    events = stream.events()
    for event in events:
        if isinstance(event, StreamErrorDetected):
            if event.condition == "policy-violation":
                raise BoshError(
                    "policy-violation",
                    f"a request body is limited to {max_bytes} bytes ([c2s] max_stanza_bytes)",
                    _sid(content),
                )
            raise BoshError("bad-request", f"the body is not well-formed XML ({event.condition})", _sid(content))
    if (
        len(events) != 1
        or not isinstance(events[0], StanzaReceived)
        or not stream.is_between_stanzas
        or events[0].element.tag != BODY
        or not content.endswith(b">")
    ):
        raise BoshError("bad-request", "a request holds one <body/> of %s (XEP-0124)" % NS_HTTPBIND, _sid(content))
    element = events[0].element
    sid = element.get("sid")
    if (element.text or "").strip() or any((child.tail or "").strip() for child in element):
        raise BoshError("bad-request", "the <body/> wrapper holds no character data (XEP-0124 section 6)", sid)
    rid = element.get("rid", "")
    if not (rid.isascii() and rid.isdigit() and 0 < int(rid) <= MAX_RID):
        raise BoshError("bad-request", "the 'rid' attribute must be a positive integer (XEP-0124 section 14)", sid)
    attributes = {str(name): str(value) for name, value in element.attrib.items()}
    return Body(attributes, [_client_stanza(child) for child in element])


def _sid(content: bytes) -> str | None:
    """The sid of a body that could not be parsed, from its start tag, if it has one."""
    match = _SID.match(content)
    if match is None:
        return None
    return (match.group(1) or match.group(2) or b"").decode("utf-8", "replace")


def _client_stanza(element: etree._Element) -> etree._Element:
    """A payload on its own, without the declarations it inherited from the <body/>."""
    stanza: etree._Element = element.__copy__()  # type: ignore[attr-defined]  # lxml-stubs omit it
    stanza.tail = None
    # COMPAT: XEP-0206 section 2 notes that many clients leave stanzas in the body's
    # namespace; they are jabber:client ones.
    for inner in stanza.iter(_HTTPBIND_PREFIX + "*"):
        inner.tag = _CLIENT_PREFIX + inner.tag[len(_HTTPBIND_PREFIX) :]
    etree.cleanup_namespaces(stanza)
    return stanza


class BoshFraming:
    """The stream of a BOSH session: request bodies in, in rid order; stream events out.

    It offers what the connection uses of ``XmlStream``: ``receive_data`` (here one
    ``Body``), ``events`` and ``reset`` (a stream restart: the next body must carry
    ``xmpp:restart``).
    """

    def __init__(self, max_stanza_bytes: int = DEFAULT_MAX_STANZA_BYTES):
        # The limit holds for whole bodies, in parse_body.
        self._events: list[StreamEvent] = []
        self._header: dict[str, str] = {}  # of the creation request, which restarts keep
        self._is_open = False
        self._is_finished = False

    def reset(self) -> None:
        self._is_open = False

    def events(self) -> list[StreamEvent]:
        """Return and clear the pending events."""
        events = self._events
        self._events = []
        return events

    def receive_data(self, body: Body) -> None:
        if self._is_finished:
            return
        if body.sid is None or body.is_restart:
            self._open(body)
        elif not self._is_open and body.payloads:
            self._is_finished = True
            self._events.append(
                StreamErrorDetected("bad-format", "restart the stream with xmpp:restart='true' (XEP-0206 section 5)")
            )
            return
        self._events.extend(StanzaReceived(payload) for payload in body.payloads)
        if body.is_terminate:
            self._is_finished = True
            self._events.append(StreamClosed())

    def _open(self, body: Body) -> None:
        for name, key in (("to", "to"), ("from", "from"), (XML_LANG, "lang"), (XMPP_VERSION, "version")):
            value = body.get(name)
            if value is not None:
                self._header[key] = value
        self._is_open = True
        self._events.append(StreamOpened(dict(self._header)))


def wrap(payloads: bytes = b"", attributes: dict[str, str] | None = None) -> bytes:
    """A response <body/> with `attributes` (prefixed names: "xmpp:version") around
    `payloads`, whole elements that declare their namespaces."""
    head = b"<body xmlns='%s' xmlns:xmpp='%s' xmlns:stream='%s'" % (
        NS_HTTPBIND.encode(),
        NS_XBOSH.encode(),
        NS_STREAMS.encode(),
    )
    if attributes:
        head += "".join(f" {name}={quoteattr(value)}" for name, value in attributes.items()).encode()
    if not payloads:
        return head + b"/>"
    return head + b">" + payloads + b"</body>"
