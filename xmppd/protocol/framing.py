"""RFC 7395 framing: the XMPP stream of a WebSocket connection, sans-IO.

Over WebSocket every message holds one whole top-level element with all its namespace
declarations, and the stream is opened and closed by ``<open/>`` and ``<close/>`` of
``urn:ietf:params:xml:ns:xmpp-framing`` instead of ``<stream:stream>`` (sections 3.3 to
3.7). The negotiation and the session do not see the difference:

* ``WebSocketFraming`` takes messages in and gives the events of ``XmlStream`` out
  (``<open/>`` is ``StreamOpened``, ``<close/>`` ``StreamClosed``). Each message is
  parsed by an ``XmlStream`` whose stream header is implied, so the stanza size limit and
  the restricted-XML rules of TCP streams hold unchanged. A message that is not exactly
  one complete element is ``not-well-formed``; a whitespace-only one is ignored, as
  whitespace between the elements of a TCP stream is.
* ``frames`` turns the bytes written for a TCP stream (stream header, top-level elements
  that rely on the stream's namespace declarations, ``</stream:stream>``) into messages.
"""

from __future__ import annotations

import re

from .errors import LocalProtocolError
from .namespaces import NS_CLIENT, NS_FRAMING, NS_STREAMS, XML_LANG
from .stream import (
    DEFAULT_MAX_STANZA_BYTES,
    StanzaReceived,
    StreamClosed,
    StreamErrorDetected,
    StreamEvent,
    StreamOpened,
    XmlStream,
)

__all__ = ["WebSocketFraming", "frames", "OPEN", "CLOSE"]

OPEN = "{%s}open" % NS_FRAMING
CLOSE = "{%s}close" % NS_FRAMING
CLOSE_MESSAGE = b'<close xmlns="%s"/>' % NS_FRAMING.encode()

# The stream header that a WebSocket stream implies around its messages.
_IMPLIED_HEADER = b"<stream:stream xmlns='%s' xmlns:stream='%s' version='1.0'>" % (
    NS_CLIENT.encode(),
    NS_STREAMS.encode(),
)
_OPEN_ATTRIBUTES = {"to": "to", "from": "from", "version": "version", "id": "id", XML_LANG: "lang"}


class WebSocketFraming:
    """One direction of an XMPP stream over WebSocket: messages in, stream events out.

    It offers what the connection uses of ``XmlStream``: ``receive_data`` (here one
    whole message), ``events`` and ``reset`` (a stream restart: the next message must be
    a new ``<open/>``).
    """

    def __init__(self, max_stanza_bytes: int = DEFAULT_MAX_STANZA_BYTES):
        self._stream = XmlStream(max_stanza_bytes)
        self._events: list[StreamEvent] = []
        self._is_finished = False
        self._is_open = False
        self.reset()

    def reset(self) -> None:
        self._stream.reset()
        self._stream.receive_data(_IMPLIED_HEADER)
        self._stream.events()  # the implied header's own StreamOpened
        self._is_open = False

    def events(self) -> list[StreamEvent]:
        """Return and clear the pending events."""
        events = self._events
        self._events = []
        return events

    def receive_data(self, message: bytes) -> None:
        """Take one whole WebSocket message."""
        if self._is_finished:
            return
        content = message.strip()
        if not content:
            return
        self._stream.receive_data(content)
        events = self._stream.events()
        for event in events:
            if isinstance(event, StreamErrorDetected):
                self._fail(event.condition, event.text)
                return
        if (
            len(events) != 1
            or not isinstance(events[0], StanzaReceived)
            or not self._stream.is_between_stanzas
            or not (content.startswith(b"<") and content.endswith(b">"))
        ):
            self._fail("not-well-formed", "a WebSocket message must hold exactly one whole XML element (RFC 7395)")
            return
        element = events[0].element
        if element.tag == OPEN:
            self._is_open = True
            attributes = {key: element.get(name) for name, key in _OPEN_ATTRIBUTES.items()}
            self._events.append(StreamOpened({key: value for key, value in attributes.items() if value is not None}))
        elif not self._is_open:
            self._fail("invalid-namespace", "the stream must begin with <open/> of %s" % NS_FRAMING)
        elif element.tag == CLOSE:
            self._is_finished = True
            self._events.append(StreamClosed())
        else:
            self._events.append(StanzaReceived(element))

    def _fail(self, condition: str, text: str | None) -> None:
        self._is_finished = True
        self._events.append(StreamErrorDetected(condition, text))


# -- output ------------------------------------------------------------------

# A tag of the XML we write ourselves: attribute values never hold '<' or '>' (libxml2
# and xml.sax.saxutils escape both), nor comments, CDATA sections or PIs but the XML
# declaration, which is skipped before.
_TAG = re.compile(rb"<(/?)([^\s/>]+)[^>]*?(/?)>")
_ATTRIBUTE = re.compile(rb"""\s([^\s=]+)\s*=\s*("[^"]*"|'[^']*')""")
_STREAM_PREFIX = b"stream:"
_CLIENT_DECLARATION = b' xmlns="%s"' % NS_CLIENT.encode()
_STREAMS_DECLARATION = b' xmlns:stream="%s"' % NS_STREAMS.encode()


def frames(data: bytes) -> list[bytes]:
    """The WebSocket messages for ``data``, whole top-level elements as written into a
    TCP stream: one per element, each declaring the namespaces it took from the stream;
    the stream header becomes ``<open/>``, ``</stream:stream>`` ``<close/>``."""
    first = _TAG.match(data)
    if first is not None and not first.group(1):
        # The usual write, one element: it ends where the first tag does, or with the
        # end tag of the first tag's name, which no other start tag has.
        name = first.group(2)
        if (first.group(3) and first.end() == len(data)) or (
            data.endswith(b"</%s>" % name) and data.find(b"<" + name, 1) < 0
        ):
            return [_declared(data, name)]
    messages = []
    position = 0
    if data.startswith(b"<?xml"):
        position = data.index(b"?>") + 2
    depth = start = 0
    for tag in _TAG.finditer(data, position):
        is_end, name, is_empty = tag.groups()
        if depth == 0:
            start = tag.start()
        if is_end:
            if depth == 0:  # </stream:stream>
                messages.append(CLOSE_MESSAGE)
                continue
            depth -= 1
        elif not is_empty:
            if depth == 0 and name == b"stream:stream":
                messages.append(_open_message(tag.group(0)))
                continue
            depth += 1
        if depth == 0:
            messages.append(_declared(data[start : tag.end()], name))
    if depth:
        raise LocalProtocolError("frames() takes whole elements")
    return messages


def _open_message(header: bytes) -> bytes:
    """``<open/>`` with the attributes of our stream header (RFC 7395 section 3.4)."""
    attributes = b"".join(
        b" %s=%s" % (name, value) for name, value in _ATTRIBUTE.findall(header) if not name.startswith(b"xmlns")
    )
    return b'<open xmlns="%s"%s/>' % (NS_FRAMING.encode(), attributes)


def _declared(element: bytes, name: bytes) -> bytes:
    """``element`` with the declaration it relied on the stream header for, if any."""
    if name.startswith(_STREAM_PREFIX):
        declaration, attribute = _STREAMS_DECLARATION, b"xmlns:stream"
    elif b":" not in name:
        declaration, attribute = _CLIENT_DECLARATION, b"xmlns"
    else:
        return element
    start_tag_end = element.index(b">")
    if any(found == attribute for found, _ in _ATTRIBUTE.findall(element, 0, start_tag_end)):
        return element
    at = len(name) + 1
    return element[:at] + declaration + element[at:]
