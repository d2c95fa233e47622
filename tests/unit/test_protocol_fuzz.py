"""Property tests for the code that parses untrusted input: the stream and JIDs."""

import ast
import io
import pathlib
import subprocess
import sys
import xml.sax
from xml.sax.handler import ContentHandler, feature_namespaces

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from xmppd.protocol.jid import JID, InvalidJID
from xmppd.protocol.namespaces import NS_CLIENT, XML_LANG
from xmppd.protocol.stanza import from_storage, to_storage
from xmppd.protocol.stream import (
    STREAM_CLOSE,
    StanzaReceived,
    StreamClosed,
    StreamErrorDetected,
    StreamOpened,
    XmlStream,
    serialize,
    stream_header,
)

PROTOCOL_DIR = pathlib.Path(__file__).resolve().parents[2] / "xmppd" / "protocol"

HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
    b" xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>"
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def split(data: bytes, sizes: list[int]) -> list[bytes]:
    chunks, position, index = [], 0, 0
    while position < len(data):
        size = sizes[index % len(sizes)] if sizes else len(data)
        chunks.append(data[position : position + size])
        position += size
        index += 1
    return chunks


def feed_chunks(stream: XmlStream, chunks) -> list:
    events = []
    for chunk in chunks:
        stream.receive_data(chunk)
        events.extend(stream.events())
    return events


def check_event_sequence(events: list) -> None:
    """Events are typed, StreamOpened comes first, nothing follows an error or a close."""
    for index, event in enumerate(events):
        assert isinstance(event, (StreamOpened, StanzaReceived, StreamClosed, StreamErrorDetected))
        if isinstance(event, (StreamClosed, StreamErrorDetected)):
            assert index == len(events) - 1
        if isinstance(event, StanzaReceived):
            assert isinstance(events[0], StreamOpened)
            assert event.element.getparent() is None
        if isinstance(event, StreamOpened):
            assert index == 0


# -- (a) arbitrary bytes never crash the stream ------------------------------------------

XML_FRAGMENTS = [
    b"<message>",
    b"</message>",
    b"<message/>",
    b"<iq type='get' id='1'>",
    b"</iq>",
    b"<body>",
    b"</body>",
    b"<![CDATA[",
    b"]]>",
    b"<!--",
    b"-->",
    b"<?pi ?>",
    b"<!DOCTYPE x>",
    b"<!ENTITY a 'b'>",
    b"&amp;",
    b"&lol;",
    b"&#0;",
    b"&#x10FFFF;",
    b"<x:y>",
    b"xmlns='urn:x'",
    b"xmlns:x='urn:y'",
    b" ",
    b"\n",
    b"'",
    b'"',
    b"<",
    b">",
    b"/",
    b"=",
    b"\xc3",
    b"\xa9",
    b"\xf0\x9f\x98",
    b"\x80",
    b"\x00",
    b"</stream:stream>",
    b"<stream:stream>",
    b"<presence xmlns='jabber:server'/>",
    b"a" * 50,
]

fuzz_bytes = st.one_of(
    st.binary(max_size=600),
    st.lists(st.sampled_from(XML_FRAGMENTS), max_size=60).map(b"".join),
)


@FUZZ
@given(
    payload=fuzz_bytes,
    sizes=st.lists(st.integers(min_value=1, max_value=97), max_size=8),
    limit=st.sampled_from([200, 400, 262144]),
)
def test_arbitrary_bytes_after_header_only_produce_events(payload, sizes, limit):
    stream = XmlStream(max_stanza_bytes=limit)
    events = feed_chunks(stream, split(HEADER + payload, sizes))
    check_event_sequence(events)
    assert isinstance(events[0], StreamOpened)
    if stream._root is not None:
        assert len(stream._root) <= 1


@FUZZ
@given(payload=st.binary(max_size=400), sizes=st.lists(st.integers(min_value=1, max_value=50), max_size=6))
def test_arbitrary_bytes_without_header(payload, sizes):
    stream = XmlStream()
    check_event_sequence(feed_chunks(stream, split(payload, sizes)))


VALID_STREAM = (
    HEADER
    + b"<message to='a@b'><body>x &amp; y</body><![CDATA[z]]></message> "
    + b"<iq type='get' id='1'><query xmlns='jabber:iq:roster'/></iq>"
    + "<presence><status>\u00e9\U0001f600</status></presence>".encode()
    + STREAM_CLOSE
)


@FUZZ
@given(
    edits=st.lists(
        st.tuples(st.integers(min_value=0, max_value=len(VALID_STREAM)), st.integers(0, 2), st.binary(max_size=3)),
        min_size=1,
        max_size=4,
    ),
    sizes=st.lists(st.integers(min_value=1, max_value=40), max_size=6),
)
def test_mutated_valid_stream_never_crashes(edits, sizes):
    data = bytearray(VALID_STREAM)
    for position, kind, blob in edits:
        position = min(position, len(data))
        if kind == 0:
            data[position:position] = blob
        elif kind == 1:
            del data[position : position + max(1, len(blob))]
        else:
            data[position : position + len(blob)] = blob
    stream = XmlStream()
    check_event_sequence(feed_chunks(stream, split(bytes(data), sizes)))


# -- (b) well-formed stanzas survive serialize -> parse, in any chunking ----------------------

NAMESPACES = [NS_CLIENT, "urn:xmpp:test:a", "urn:example:b", "http://example.com/ns#c"]


XML_SPECIALS = "<>&'\"]\t\n\r ;=#x"
UNICODE_SAMPLES = "\u00e9\u00df\u0130\u03c0\u0645\u05d0\u4e2d\u20ac\u2028\ufeff\ue000\ufffd\U0001f600\U0010fffd"

xml_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(XML_SPECIALS + UNICODE_SAMPLES),
        st.characters(min_codepoint=0x20, max_codepoint=0xD7FF, exclude_categories=("Cs", "Cc")),
    ),
    max_size=20,
)

# Valid XML names, some unusual (dots, hyphens, non-ASCII), none starting with "xml".
names = st.sampled_from(["a", "b", "body", "x-y", "_u.v", "n1", "Q", "\u00fcber", "\u4e2d\u6587", "k.9-_"])

attribute_names = st.one_of(
    names,
    st.tuples(st.sampled_from(NAMESPACES[1:]), names).map(lambda pair: "{%s}%s" % pair),
    st.just(XML_LANG),
)

attributes = st.dictionaries(attribute_names, xml_text, max_size=3)


def element_strategy():
    leaf = st.builds(
        lambda ns, name, attrib, text, tail: (ns, name, attrib, text, tail, []),
        st.sampled_from(NAMESPACES),
        names,
        attributes,
        st.none() | xml_text,
        st.none() | xml_text,
    )
    return st.recursive(
        leaf,
        lambda children: st.builds(
            lambda ns, name, attrib, text, tail, kids: (ns, name, attrib, text, tail, kids),
            st.sampled_from(NAMESPACES),
            names,
            attributes,
            st.none() | xml_text,
            st.none() | xml_text,
            st.lists(children, max_size=3),
        ),
        max_leaves=6,
    )


ELEMENT_TREES = element_strategy()

top_level = st.one_of(
    st.tuples(st.just(NS_CLIENT), st.sampled_from(["message", "presence", "iq"])),
    st.tuples(st.sampled_from(NAMESPACES[1:]), names),
)


def build(spec, parent=None):
    ns, name, attrib, text, tail, kids = spec
    tag = "{%s}%s" % (ns, name)
    if parent is None:
        element = etree.Element(tag, nsmap={None: ns})
    else:
        element = etree.SubElement(parent, tag)
        element.tail = tail
    for key, value in attrib.items():
        element.set(key, value)
    element.text = text
    for kid in kids:
        build(kid, element)
    return element


@st.composite
def stanzas(draw):
    ns, name = draw(top_level)
    _, _, attrib, text, _, kids = draw(ELEMENT_TREES)
    return build((ns, name, attrib, text, None, kids))


def canonical(element):
    return (
        element.tag,
        sorted(element.attrib.items()),
        element.text or "",
        [canonical(child) for child in element],
        (element.tail or "") if element.getparent() is not None else "",
    )


@settings(FUZZ, max_examples=200)
@given(
    elements=st.lists(stanzas(), min_size=1, max_size=3),
    sizes=st.lists(st.integers(min_value=1, max_value=200), max_size=6),
    keepalive=st.sampled_from([b"", b" ", b"\n\t "]),
)
def test_serialized_stanzas_round_trip(elements, sizes, keepalive):
    data = stream_header(from_="example.com", id="s1") + b"".join(keepalive + serialize(e) for e in elements)
    data += STREAM_CLOSE
    stream = XmlStream()
    events = feed_chunks(stream, split(data, sizes))
    check_event_sequence(events)
    received = [event.element for event in events if isinstance(event, StanzaReceived)]
    assert isinstance(events[-1], StreamClosed), events[-1]
    assert [canonical(e) for e in received] == [canonical(e) for e in elements]


# -- (c) namespaces and attributes: only namespace-well-formed stanzas come out -----------------
#
# Raw stanzas with generated prefixes, declarations and attribute names, the bad ones of
# Namespaces in XML 1.0 included: unbound prefixes, one attribute under two prefixes, empty
# and reserved declarations, names with two colons. The parser either fails the stream, or
# every stanza it yields, as sent on a stream and as stored, is accepted by fresh strict
# parsers (lxml, and expat through xml.sax with namespaces on) that read back the same
# names and attributes; and whatever expat refuses, the parser refuses too.

XML_NS = "http://www.w3.org/XML/1998/namespace"
XMLNS_NS = "http://www.w3.org/2000/xmlns/"

# Mostly good names and declarations, so that many stanzas pass; a few bad ones.
prefixes = st.sampled_from(["a", "b"] * 12 + ["p", "xml", "xmlns", "stream", "x.1", ""])
namespace_names = st.sampled_from(
    ["urn:a", "urn:b"] * 10 + [NS_CLIENT, "jabber:iq:roster", XML_NS, XMLNS_NS, "", "relative.name", "not a uri"]
)
local_names = st.sampled_from(["a", "b", "z", "id", "to", "lang"] * 8 + ["xmlns", "a:b", ""])
# Dictionaries: a raw name given twice is plain XML's business (test_not_well_formed).
declarations = st.dictionaries(st.one_of(prefixes, prefixes, prefixes, st.none()), namespace_names, max_size=2).map(
    lambda d: list(d.items())
)
raw_attributes = st.dictionaries(
    st.tuples(st.none() | prefixes, local_names), st.sampled_from(["1", "x &amp; y", "&lt;"]), max_size=3
).map(lambda d: [key + (value,) for key, value in d.items()])


def qname(prefix: str | None, local: str) -> str:
    return local if prefix is None else f"{prefix}:{local}"


def raw_element(name_strategy, children, declared=declarations):
    return st.tuples(name_strategy, declared, raw_attributes, children)


child_names = st.tuples(st.none() | prefixes, st.sampled_from(["body", "x"] * 12 + ["a:b", ""]))
raw_children = st.recursive(
    raw_element(child_names, st.just([])),
    lambda kids: raw_element(child_names, st.lists(kids, max_size=2)),
    max_leaves=4,
)
raw_stanzas = raw_element(
    st.tuples(st.sampled_from([None] * 20 + ["a", "c", "p"]), st.sampled_from(["message", "presence", "iq"])),
    st.lists(raw_children, max_size=2),
    st.builds(  # a and b bound, sometimes to one namespace, c to jabber:client; maybe more
        lambda a, b, more: [("a", a), ("b", b), ("c", NS_CLIENT)] + [d for d in more if d[0] not in ("a", "b", "c")],
        st.sampled_from(["urn:a", "urn:b"]),
        st.sampled_from(["urn:a", "urn:b"]),
        declarations,
    ),
)


def render(spec) -> str:
    (prefix, local), decls, attrs, kids = spec
    name = qname(prefix, local)
    parts = ["<", name]
    for declared, uri in decls:
        parts.append(f" {qname('xmlns', declared) if declared is not None else 'xmlns'}='{uri}'")
    for attr_prefix, attr_local, value in attrs:
        parts.append(f" {qname(attr_prefix, attr_local)}='{value}'")
    parts.append(">")
    parts.extend(render(kid) for kid in kids)
    parts.append(f"</{name}>")
    return "".join(parts)


class _Canonical(ContentHandler):
    """What expat reads: the canonical form of each first-level element of a stream."""

    def __init__(self):
        super().__init__()
        self.stack, self.stanzas = [], []

    def startElementNS(self, name, qname, attrs):
        attributes = sorted(("{%s}%s" % key if key[0] else key[1], value) for key, value in attrs.items())
        self.stack.append(("{%s}%s" % name if name[0] else name[1], attributes, []))

    def endElementNS(self, name, qname):
        element = self.stack.pop()
        if len(self.stack) == 1:
            self.stanzas.append(element)
        elif self.stack:
            self.stack[-1][2].append(element)


# lxml as strict as it goes but for IDs: libxml2 then also refuses an xml:id that is
# not an NCName, an xml:id error that is not fatal and not about namespaces (expat does
# not look at xml:id); the stream's parser and from_storage collect no IDs either.
STRICT = etree.XMLParser(resolve_entities=False, collect_ids=False)


def expat_read(data: bytes) -> list:
    handler = _Canonical()
    parser = xml.sax.make_parser()
    parser.setFeature(feature_namespaces, True)
    parser.setContentHandler(handler)
    parser.parse(io.BytesIO(data))
    return handler.stanzas


def expanded_names(element) -> tuple:
    """Names, attributes and structure; text is covered by test_serialized_stanzas_round_trip."""
    return (element.tag, sorted(element.attrib.items()), [expanded_names(child) for child in element])


@settings(FUZZ, max_examples=500)
@given(specs=st.lists(raw_stanzas, min_size=1, max_size=3), sizes=st.lists(st.integers(1, 60), max_size=4))
def test_only_namespace_well_formed_stanzas_are_yielded(specs, sizes):
    data = HEADER + "".join(render(spec) for spec in specs).encode() + STREAM_CLOSE
    stream = XmlStream()
    events = feed_chunks(stream, split(data, sizes))
    check_event_sequence(events)
    failed = isinstance(events[-1], StreamErrorDetected)
    try:
        expat_read(data)
    except xml.sax.SAXParseException:
        assert failed, "expat refuses what the parser accepted: %r" % data
    for event in events:
        if not isinstance(event, StanzaReceived):
            continue
        element = event.element
        wire = stream_header(from_="example.com", id="s1") + serialize(element) + STREAM_CLOSE
        again = etree.fromstring(wire, STRICT)[0]
        assert expanded_names(again) == expanded_names(element)
        assert expat_read(wire) == [expanded_names(element)]
        assert expanded_names(from_storage(to_storage(element))) == expanded_names(element)


# -- JIDs ----------------------------------------------------------------------------------------


@FUZZ
@given(st.text(max_size=60))
def test_jid_parse_never_crashes_and_is_idempotent(text):
    try:
        jid = JID.parse(text)
    except InvalidJID:
        return
    again = JID.parse(str(jid))
    assert again == jid
    assert str(again) == str(jid)


@FUZZ
@given(
    local=st.one_of(
        st.none(),
        st.text(alphabet=st.characters(codec="utf-8", exclude_characters="/@"), min_size=1, max_size=12),
    ),
    resource=st.one_of(st.none(), st.text(min_size=1, max_size=12)),
)
def test_jid_parts_round_trip(local, resource):
    text = "example.com"
    if local is not None:
        text = f"{local}@{text}"
    if resource is not None:
        text = f"{text}/{resource}"
    try:
        jid = JID.parse(text)
    except InvalidJID:
        return
    assert jid.domain == "example.com"
    assert JID.parse(str(jid)) == jid


# -- the layer stays sans-IO --------------------------------------------------------------------


def test_protocol_sources_do_not_import_asyncio():
    for path in sorted(PROTOCOL_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                root = module.split(".")[0]
                assert root not in ("asyncio", "socket", "ssl", "selectors", "time"), (path.name, module)


def test_importing_the_protocol_package_loads_no_asyncio():
    code = (
        "import importlib, pkgutil, sys\n"
        "import xmppd.protocol as package\n"
        "for info in pkgutil.iter_modules(package.__path__):\n"
        "    importlib.import_module('xmppd.protocol.' + info.name)\n"
        "assert 'asyncio' not in sys.modules, sorted(m for m in sys.modules if 'asyncio' in m)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PROTOCOL_DIR.parents[1])
