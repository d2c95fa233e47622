"""The sans-IO XML stream of RFC 6120 §4: bytes in, typed events out.

``XmlStream`` wraps one lxml ``XMLPullParser`` per stream (a fresh one after
every stream restart) and turns what it reports into events:

* ``StreamOpened``        the ``<stream:stream>`` header, with its attributes;
* ``StanzaReceived``      one first-level child of the stream, detached;
* ``StreamClosed``        ``</stream:stream>``;
* ``StreamErrorDetected`` a violation by the peer, named by its RFC 6120 §4.9.3
                          condition.  Nothing follows it: the caller sends the
                          stream error and closes.

Only namespace-well-formed XML (Namespaces in XML 1.0) is accepted, because a
stanza is forwarded and stored as it was parsed: an unbound prefix on an
attribute, one attribute named twice through two prefixes, an empty or
reserved-name declaration would reach recipients whose parsers refuse them.
libxml2 finds these violations but only logs them and parses on, so the
parser's log is read after every feed; a violation is ``not-well-formed``
(RFC 6120 §4.9.3.13 names [XML-NAMES]).  The log does not say which event it
belongs to, so stanzas that completed in the same piece of data before the
violation are not delivered either (the stream header is).

Restricted XML (RFC 6120 §11.1) never reaches libxml2: a small scanner looks
at the raw bytes for ``<!`` (DOCTYPE, ENTITY, comments...) outside CDATA
sections before they are fed, so no DTD is ever parsed and no entity ever
expanded.  Processing instructions are refused when the parser reports them.

Each stanza is limited to ``max_stanza_bytes``: the bytes fed since the last
completed stanza are counted, and the parser is never fed past the limit, so
an endless stanza is refused before it completes.  Completed stanzas are
copied out and removed from the parser's tree, keeping memory flat over a
long-lived stream.

The module also holds the output side: ``stream_header``, ``STREAM_CLOSE`` and
``serialize``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import cast
from xml.sax.saxutils import quoteattr

from lxml import etree

from .errors import LocalProtocolError
from .namespaces import NS_CLIENT, NS_STREAMS, XML_LANG

__all__ = [
    "StreamOpened",
    "StanzaReceived",
    "StreamClosed",
    "StreamErrorDetected",
    "StreamEvent",
    "XmlStream",
    "DEFAULT_MAX_STANZA_BYTES",
    "STREAM_CLOSE",
    "stream_header",
    "serialize",
]

DEFAULT_MAX_STANZA_BYTES = 262144  # Prosody's default, 256 KiB

STREAM_TAG = "{%s}stream" % NS_STREAMS
STREAM_CLOSE = b"</stream:stream>"

# Elements that must be in the content namespace when they appear at the
# first level of the stream (RFC 6120 §4.9.3.10).
_STANZA_LOCAL_NAMES = frozenset({"message", "presence", "iq"})

_CDATA_OPEN = b"[CDATA["

# Namespaces in XML 1.0 violations that libxml2 logs as errors without
# stopping (relative namespace names are only warnings, and stay allowed:
# Conversations' "eu.siacs.conversations.axolotl" is one).
_NAMESPACE_DOMAIN = etree.ErrorDomains.NAMESPACE
_ERROR_LEVEL = etree.ErrorLevels.ERROR
_NAMESPACE_VIOLATIONS = {
    etree.ErrorTypes.NS_ERR_UNDEFINED_NAMESPACE: "unbound namespace prefix",
    etree.ErrorTypes.NS_ERR_ATTRIBUTE_REDEFINED: "one attribute given twice through two prefixes",
    etree.ErrorTypes.NS_ERR_QNAME: "malformed qualified name",
    etree.ErrorTypes.NS_ERR_XML_NAMESPACE: "empty or reserved namespace declaration",
    etree.ErrorTypes.WAR_NS_URI: "namespace name is not a URI",
}


@dataclass(frozen=True)
class StreamOpened:
    """The peer opened the stream.  Keys: 'to', 'from', 'version', 'id', 'lang' (when present)."""

    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StanzaReceived:
    """A complete first-level element of the stream, detached from the parser's tree."""

    element: etree._Element


@dataclass(frozen=True)
class StreamClosed:
    """The peer sent ``</stream:stream>``."""


@dataclass(frozen=True)
class StreamErrorDetected:
    """The peer violated the protocol; ``condition`` is the stream error to send."""

    condition: str
    text: str | None = None


StreamEvent = StreamOpened | StanzaReceived | StreamClosed | StreamErrorDetected


def _new_parser() -> etree.XMLPullParser:
    # resolve_entities="internal" rather than False: no DTD can reach the
    # parser (the byte scanner refuses it first), so there is nothing to
    # resolve either way, but with False libxml2 2.14 silently stops the push
    # parser on an undeclared entity reference such as "&foo;" instead of
    # reporting the error, which would leave the stream hanging.
    return etree.XMLPullParser(
        events=("start", "end", "comment", "pi"),
        resolve_entities="internal",  # type: ignore[arg-type]  # lxml-stubs: a bool only
        load_dtd=False,
        no_network=True,
        huge_tree=False,
        remove_blank_text=False,
        collect_ids=False,
        encoding="utf-8",  # RFC 6120 §11.6: UTF-8 only, whatever the declaration says
    )


def _classify_syntax_error(exc: etree.XMLSyntaxError) -> str:
    code = exc.code  # type: ignore[attr-defined]  # lxml-stubs omit it
    if code == etree.ErrorTypes.ERR_RESOURCE_LIMIT:
        return "policy-violation"  # nesting too deep, text node too large
    if code in (etree.ErrorTypes.ERR_INVALID_ENCODING, etree.ErrorTypes.ERR_UNSUPPORTED_ENCODING):
        return "unsupported-encoding"  # RFC 6120 §4.9.3.22: invalid UTF-8
    return "not-well-formed"


_OPENING, _OPEN, _CLOSED, _FAILED = range(4)


class XmlStream:
    """One direction of an XML stream, parsed incrementally.  No I/O, no clock."""

    def __init__(self, max_stanza_bytes: int = DEFAULT_MAX_STANZA_BYTES, *, content_namespace: str = NS_CLIENT):
        if max_stanza_bytes <= 0:
            raise LocalProtocolError("max_stanza_bytes must be positive")
        self.max_stanza_bytes = max_stanza_bytes
        self.content_namespace = content_namespace
        self._content_prefix = "{%s}" % content_namespace
        self._events: list[StreamEvent] = []
        self.reset()

    # -- public API --------------------------------------------------------

    def reset(self) -> None:
        """Start over with a fresh parser, for a stream restart (after STARTTLS or SASL).

        Events not yet collected with ``events()`` are kept.
        """
        self._parser: etree.XMLPullParser | None = _new_parser()
        self._state = _OPENING
        self._root: etree._Element | None = None
        self._current: etree._Element | None = None  # first-level element being parsed
        self._depth = 0
        self._pending = 0  # bytes fed since the last completed stanza
        self._scan_tail = b""
        self._in_cdata = False
        self._log_seen = 0  # entries of the parser's log already looked at
        self.attributes: dict[str, str] = {}

    @property
    def is_open(self) -> bool:
        """The header was received and the stream is neither closed nor failed."""
        return self._state == _OPEN

    @property
    def is_between_stanzas(self) -> bool:
        """No first-level element is in progress: all the data fed so far ended complete ones."""
        return self._depth <= 1

    @property
    def is_finished(self) -> bool:
        """The stream was closed by the peer or failed; further data is ignored."""
        return self._state in (_CLOSED, _FAILED)

    def events(self) -> list[StreamEvent]:
        """Return and clear the pending events."""
        events = self._events
        self._events = []
        return events

    def receive_data(self, data: bytes) -> None:
        """Feed bytes as they arrive; they may be split anywhere."""
        if not data or self._state >= _CLOSED:
            return
        violation = self._scan(data)
        if violation >= 0:
            if violation > 0:
                self._feed(data[:violation])
            if self._state < _CLOSED:
                self._fail("restricted-xml")
            return
        self._feed(data)

    # -- restricted XML ----------------------------------------------------

    def _scan(self, data: bytes) -> int:
        """Offset in ``data`` of a ``<!`` construct other than CDATA, or -1.

        Outside CDATA sections, ``<!`` can only start a DOCTYPE, a markup
        declaration or a comment, all refused by RFC 6120 §11.1.  Inside an
        attribute value ``<`` is already a well-formedness error.
        """
        tail = self._scan_tail
        buf = tail + data if tail else data
        in_cdata = self._in_cdata
        pos = 0
        while True:
            if in_cdata:
                index = buf.find(b"]]>", pos)
                if index < 0:
                    self._scan_tail = buf[-2:]
                    break
                in_cdata = False
                pos = index + 3
                continue
            index = buf.find(b"<!", pos)
            if index < 0:
                self._scan_tail = b"<" if buf.endswith(b"<") else b""
                break
            rest = buf[index + 2 : index + 9]
            if rest == _CDATA_OPEN:
                in_cdata = True
                pos = index + 9
                continue
            if len(rest) < 7 and _CDATA_OPEN.startswith(rest):
                self._scan_tail = buf[index:]  # undecided until more bytes arrive
                break
            return max(0, index - len(tail))
        self._in_cdata = in_cdata
        return -1

    # -- feeding -----------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        limit = self.max_stanza_bytes
        while data:
            budget = limit - self._pending
            if len(data) <= budget:
                piece, data = data, b""
            elif budget > 0:
                piece, data = data[:budget], data[budget:]
            else:
                self._fail("policy-violation", "stanza too large")
                return
            self._pending += len(piece)
            if not self._feed_piece(piece):
                return

    def _feed_piece(self, piece: bytes) -> bool:
        """Feed one piece and turn the parser's events into ours; False once finished."""
        assert self._parser is not None  # dropped only once the stream is finished
        try:
            self._parser.feed(piece)
        except etree.XMLSyntaxError as exc:
            violation = self._namespace_violation()
            if violation is not None:
                self._fail_namespace(piece, violation)
                return False
            # Stanzas completed before the error are still delivered.
            self._process_events(piece)
            if self._state < _CLOSED:
                self._fail(_classify_syntax_error(exc))
            self._drop_parser()
            return False
        violation = self._namespace_violation()
        if violation is not None:
            self._fail_namespace(piece, violation)
            return False
        completed = self._process_events(piece)
        if self._state >= _CLOSED:
            self._drop_parser()
            return False
        if completed or self._depth == 1:
            self._collect_garbage()
        return True

    def _namespace_violation(self) -> str | None:
        """What the last feed did against Namespaces in XML, from the parser's log, or None."""
        assert self._parser is not None
        log = self._parser.feed_error_log
        count = len(log)
        if count == self._log_seen:  # the usual case: nothing logged
            return None
        for index in range(self._log_seen, count):
            entry = log[index]
            if entry.domain == _NAMESPACE_DOMAIN and entry.level >= _ERROR_LEVEL:
                return _NAMESPACE_VIOLATIONS.get(entry.type, "not namespace-well-formed")
        self._log_seen = count
        return None

    def _fail_namespace(self, piece: bytes, text: str) -> None:
        """Fail with not-well-formed; of the piece's events only the stream header is kept,
        as the log does not tell which stanza of the piece was at fault."""
        start = len(self._events)
        self._process_events(piece)
        self._events[start:] = [event for event in self._events[start:] if isinstance(event, StreamOpened)]
        self._fail("not-well-formed", text)

    def _process_events(self, piece: bytes) -> bool:
        completed = False  # a stanza ended, or the stream opened, in this piece
        depth = self._depth
        assert self._parser is not None
        # Only the events asked for in _new_parser come: each carries an element.
        events = cast(Iterator[tuple[str, etree._Element]], self._parser.read_events())
        for action, element in events:
            if action == "start":
                depth += 1
                if depth == 2:
                    tag = element.tag
                    if not tag.startswith(self._content_prefix) and not self._check_first_level(tag):
                        return completed
                    self._current = element
                elif depth == 1:
                    self._depth = depth
                    if not self._open(element):
                        return completed
                    completed = True  # the header does not count against the first stanza
            elif action == "end":
                depth -= 1
                if depth == 1:
                    # A copy rather than root.remove(element): lxml would then
                    # rename the inherited default namespace to "ns0".  lxml's
                    # __copy__ is deep, and cheaper than copy.deepcopy().
                    stanza = element.__copy__()  # type: ignore[attr-defined]  # lxml-stubs omit it
                    stanza.tail = None
                    self._events.append(StanzaReceived(stanza))
                    self._current = None
                    completed = True
                elif depth == 0:
                    self._depth = 0
                    self._state = _CLOSED
                    self._events.append(StreamClosed())
                    return completed
            else:  # a comment or a processing instruction
                self._fail("restricted-xml")
                return completed
        self._depth = depth
        if completed:
            self._recount_pending(piece)
        return completed

    def _check_first_level(self, tag: str) -> bool:
        if tag[0] != "{":
            self._fail("invalid-namespace", "element outside any namespace")
            return False
        if tag == STREAM_TAG:
            # A stream restart that was not negotiated: its stanzas would
            # never be delivered, so say so instead of waiting forever.
            self._fail("bad-format", "unexpected stream header")
            return False
        if tag[tag.index("}") + 1 :] in _STANZA_LOCAL_NAMES:
            self._fail("invalid-namespace", "stanza outside the stream's content namespace")
            return False
        return True

    def _open(self, root: etree._Element) -> bool:
        if root.tag != STREAM_TAG:
            self._fail("invalid-namespace", "the root element is not <stream:stream>")
            return False
        if root.nsmap.get(None) != self.content_namespace:
            self._fail("invalid-namespace", "the default namespace must be %s" % self.content_namespace)
            return False
        attributes = {}
        for key in ("to", "from", "version", "id"):
            value = root.get(key)
            if value is not None:
                attributes[key] = value
        lang = root.get(XML_LANG)
        if lang is not None:
            attributes["lang"] = lang
        version = attributes.get("version")
        if version is not None and not _is_supported_version(version):
            self._fail("unsupported-version")
            return False
        self._root = root
        self._state = _OPEN
        self.attributes = attributes
        self._events.append(StreamOpened(attributes))
        return True

    def _recount_pending(self, piece: bytes) -> None:
        """After a stanza completed in ``piece``, count only the bytes of what follows it.

        libxml2 does not report byte offsets, so the start of the stanza in
        progress is found in the raw bytes; a nested element of the same name
        can only make the count smaller by less than one piece.
        """
        current = self._current
        if current is not None:
            tag = current.tag
            local = tag[tag.index("}") + 1 :] if tag[0] == "{" else tag
            prefix = current.prefix
            name = ("<%s:%s" % (prefix, local) if prefix else "<" + local).encode("utf-8")
            index = piece.rfind(name)
            self._pending = len(piece) - index if index >= 0 else len(piece)
        else:
            self._pending = len(piece) - piece.rfind(b">") - 1

    def _collect_garbage(self) -> None:
        """Remove completed stanzas and stray text from the parser's tree.

        Everything but the element in progress goes, text nodes included: if a
        text node became the root's last child again, libxml2 would append to
        it with a stale length.
        """
        root = self._root
        if root is None:
            return
        count = len(root)
        if self._depth >= 2:
            count -= 1
        if count > 0:
            del root[:count]
        if root.text is not None:
            root.text = None

    def _drop_parser(self) -> None:
        self._parser = None
        self._root = None
        self._current = None

    def _fail(self, condition: str, text: str | None = None) -> None:
        self._state = _FAILED
        self._events.append(StreamErrorDetected(condition, text))
        self._drop_parser()


def _is_supported_version(version: str) -> bool:
    major, dot, minor = version.partition(".")
    if not (dot and major.isdigit() and minor.isdigit() and major.isascii() and minor.isascii()):
        return False
    return int(major) == 1


# -- output ------------------------------------------------------------------


def stream_header(
    *,
    from_: str,
    id: str | None,
    to: str | None = None,
    version: str | None = "1.0",
    lang: str | None = "en",
    content_namespace: str = NS_CLIENT,
) -> bytes:
    """The XML declaration and opening ``<stream:stream>`` tag we send (RFC 6120 §4.7)."""
    parts = [
        "<?xml version='1.0'?><stream:stream",
        ' xmlns="%s" xmlns:stream="%s"' % (content_namespace, NS_STREAMS),
        " from=" + quoteattr(from_),
    ]
    if id is not None:
        parts.append(" id=" + quoteattr(id))
    if to is not None:
        parts.append(" to=" + quoteattr(to))
    if version is not None:
        parts.append(" version=" + quoteattr(version))
    if lang is not None:
        parts.append(" xml:lang=" + quoteattr(lang))
    parts.append(">")
    return "".join(parts).encode("utf-8")


_CLIENT_PREFIX = "{%s}" % NS_CLIENT
_STREAMS_PREFIX = "{%s}" % NS_STREAMS
_CLIENT_DECLARATION = b' xmlns="%s"' % NS_CLIENT.encode()
_STREAMS_DECLARATION = b' xmlns:stream="%s"' % NS_STREAMS.encode()


def serialize(element: etree._Element) -> bytes:
    """UTF-8 bytes of a first-level element, as written inside our open stream.

    The stream header already declares ``jabber:client`` as the default
    namespace and ``stream`` as the streams prefix, so those declarations are
    dropped from the top element's start tag (and only there: a nested
    ``<message xmlns="jabber:client">`` inside a forward keeps its own).
    """
    data = etree.tostring(element, encoding="utf-8", xml_declaration=False, with_tail=False)
    tag = element.tag
    if not isinstance(tag, str):
        return data
    if tag.startswith(_CLIENT_PREFIX):
        declaration = _CLIENT_DECLARATION
    elif tag.startswith(_STREAMS_PREFIX) and element.prefix == "stream":
        declaration = _STREAMS_DECLARATION
    else:
        return data
    # libxml2 escapes '>' and '"' in attribute values, so the first '>' ends
    # the start tag and the declaration cannot be part of a value.
    end = data.find(b">")
    index = data.find(declaration, 0, end)
    if index >= 0:
        data = data[:index] + data[index + len(declaration) :]
    return data
