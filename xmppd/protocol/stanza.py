"""Helpers on lxml stanza elements: building elements, replies and error replies.

Stanzas stay lxml elements from the parser to the serializer; these helpers
are the few operations the core and extensions need on them.  Tags are in
Clark notation: ``{jabber:client}message``.
"""

from __future__ import annotations

import copy
import datetime
import logging

from lxml import etree

from .errors import LocalProtocolError, StanzaError
from .namespaces import NS_CLIENT, NS_DELAY, NS_STREAMS, XML_LANG

__all__ = [
    "MESSAGE",
    "PRESENCE",
    "IQ",
    "STANZA_TAGS",
    "make_element",
    "sub_element",
    "reply",
    "error_reply",
    "is_stanza",
    "to_storage",
    "from_storage",
    "stored_stanza",
    "delay_element",
    "parse_priority",
]

MESSAGE = "{%s}message" % NS_CLIENT
PRESENCE = "{%s}presence" % NS_CLIENT
IQ = "{%s}iq" % NS_CLIENT
STANZA_TAGS = frozenset({MESSAGE, PRESENCE, IQ})
PRIORITY = "{%s}priority" % NS_CLIENT

# Stored stanzas are our own serialization: no DTD, no entity to resolve. No IDs
# either, as in the stream's parser: libxml2 would refuse an xml:id that is not an
# NCName or is given twice, which the stream lets through (xml:id errors are not
# fatal, and no parser that Prosody or clients use checks them).
_STORAGE_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, collect_ids=False
)

# One nsmap per namespace, shared: lxml copies it into the tree anyway.
_nsmaps: dict[str, dict[str, str]] = {NS_STREAMS: {"stream": NS_STREAMS}}


def _nsmap_for(tag: str) -> dict[str, str] | None:
    if tag[:1] != "{":
        return None
    namespace = tag[1 : tag.index("}")]
    nsmap = _nsmaps.get(namespace)
    if nsmap is None:
        # lxml-stubs types an nsmap as Mapping[str, str]; lxml takes None for the default namespace.
        nsmap = _nsmaps[namespace] = {None: namespace}  # type: ignore[dict-item]
    return nsmap


def make_element(tag: str, attrib: dict[str, str] | None = None, text: str | None = None) -> etree._Element:
    """A new element whose namespace is the default one (``stream:`` for the streams namespace).

    Attributes whose value is None are left out, so ``{"to": maybe_none}`` works.
    """
    return _fill(etree.Element(tag, nsmap=_nsmap_for(tag)), attrib, text)


def sub_element(
    parent: etree._Element, tag: str, attrib: dict[str, str] | None = None, text: str | None = None
) -> etree._Element:
    """Like ``make_element`` but appended to ``parent``; a new namespace becomes the child's default."""
    nsmap = None
    if tag[:1] == "{":
        namespace = tag[1 : tag.index("}")]
        parent_tag = parent.tag
        if not (isinstance(parent_tag, str) and parent_tag.startswith("{" + namespace + "}")):
            nsmap = _nsmap_for(tag)
    return _fill(etree.SubElement(parent, tag, nsmap=nsmap), attrib, text)


def _fill(element: etree._Element, attrib: dict[str, str] | None, text: str | None) -> etree._Element:
    if attrib:
        for key, value in attrib.items():
            if value is not None:
                element.set(key, value)
    if text is not None:
        element.text = text
    return element


def is_stanza(element: etree._Element) -> bool:
    """True for message, presence and iq in jabber:client."""
    return element.tag in STANZA_TAGS


def _swapped(stanza: etree._Element, type_: str | None) -> etree._Element:
    tag = stanza.tag
    element = etree.Element(tag, nsmap=_nsmap_for(tag))
    sender = stanza.get("from")
    if sender is not None:
        element.set("to", sender)
    recipient = stanza.get("to")
    if recipient is not None:
        element.set("from", recipient)
    stanza_id = stanza.get("id")
    if stanza_id is not None:
        element.set("id", stanza_id)
    if type_ is not None:
        element.set("type", type_)
    return element


def reply(stanza: etree._Element, payload: etree._Element | None = None) -> etree._Element:
    """The result for ``stanza``: same id, to/from swapped, type='result' for an iq.

    ``payload`` is appended as the only child (it is moved, not copied).
    """
    if stanza.get("type") == "error":
        raise LocalProtocolError("never reply to an error stanza")
    element = _swapped(stanza, "result" if stanza.tag == IQ else stanza.get("type"))
    if payload is not None:
        element.append(payload)
    return element


def error_reply(stanza: etree._Element, err: StanzaError) -> etree._Element:
    """The error reply for ``stanza`` (RFC 6120 §8.3.1): type='error', to/from swapped, same id.

    For message and presence the original payload is kept before the error;
    an iq error carries only the error.
    """
    if stanza.get("type") == "error":
        raise LocalProtocolError("never answer an error stanza with an error")
    element = _swapped(stanza, "error")
    if stanza.tag != IQ:
        lang = stanza.get(XML_LANG)
        if lang is not None:
            element.set(XML_LANG, lang)
        for child in stanza:
            if isinstance(child.tag, str):
                element.append(copy.deepcopy(child))
        for child in element:
            child.tail = None
    element.append(err.to_element())
    return element


def to_storage(element: etree._Element) -> bytes:
    """A stanza as bytes for a store (offline queue, archive): self-contained, with
    its namespace declarations (unlike ``stream.serialize``)."""
    return etree.tostring(element, encoding="utf-8", with_tail=False)


def from_storage(data: bytes) -> etree._Element:
    """The stanza stored with ``to_storage``; ``etree.XMLSyntaxError`` if it is not
    namespace-well-formed XML."""
    return etree.fromstring(data, _STORAGE_PARSER)


def stored_stanza(data: bytes, log: logging.Logger, **context: object) -> etree._Element | None:
    """``from_storage``, or None and a warning naming ``context`` for bytes that do not parse.

    Versions before issue 20 stored stanzas that were not namespace-well-formed as
    they came; one of them must not end the session or the query that reads it back.
    """
    try:
        return from_storage(data)
    except etree.XMLSyntaxError as exc:
        fields = "".join(f" {key}=%s" for key in context)  # one logfmt field each (xmppd.logs)
        log.warning("event=stored-stanza-unreadable" + fields + " error=%s", *context.values(), exc)
        return None


def delay_element(from_: str, when: float) -> etree._Element:
    """XEP-0203 ``<delay/>`` for a stanza stored since ``when`` (Unix time) by ``from_``,
    stamped in XEP-0082 UTC with milliseconds."""
    moment = datetime.datetime.fromtimestamp(when, datetime.UTC)
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return make_element(f"{{{NS_DELAY}}}delay", {"from": from_, "stamp": stamp})


def parse_priority(presence: etree._Element) -> int:
    """RFC 6121 4.7.2.3: an integer from -128 to 127, zero when absent (or unreadable)."""
    try:
        value = int(presence.findtext(PRIORITY) or "0")
    except ValueError:
        return 0
    return max(-128, min(127, value))
