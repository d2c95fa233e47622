"""XEP-0114 Jabber Component Protocol, sans-IO: the handshake and the stream's namespace.

A component opens a 'jabber:component:accept' stream to its own domain, the server
answers with a stream id, and the component proves it knows the shared secret with
<handshake>hex(SHA-1(stream id + secret))</handshake> (section 3).
"""

from __future__ import annotations

import hashlib
import hmac

from lxml import etree

from .namespaces import NS_CLIENT, NS_COMPONENT

HANDSHAKE = "{%s}handshake" % NS_COMPONENT
HANDSHAKE_ACCEPTED = b"<handshake/>"

_COMPONENT_DECLARATION = b' xmlns="%s"' % NS_COMPONENT.encode()
_CLIENT_DECLARATION = b' xmlns="%s"' % NS_CLIENT.encode()
# What is re-read is our own serialization of a stanza the stream parser accepted.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def handshake_digest(stream_id: str, secret: str) -> str:
    """The <handshake/> text: lower-case hex SHA-1 of the stream id and the secret, as UTF-8."""
    return hashlib.sha1((stream_id + secret).encode("utf-8")).hexdigest()


def is_valid_handshake(received: str, stream_id: str, secret: str) -> bool:
    """Whether `received` is the handshake for `secret`, compared in constant time."""
    return hmac.compare_digest(received.encode("utf-8"), handshake_digest(stream_id, secret).encode())


def to_client_namespace(element: etree._Element) -> etree._Element:
    """A stanza read from a component stream, re-qualified by 'jabber:client' as if a
    client had sent it: the stanza and the children that inherit the stream's default
    namespace (<body/>, <error/>...) change, payloads of other namespaces do not.

    lxml cannot rebind a default namespace in place (it would invent an 'ns0' prefix), so
    the declaration is swapped in the serialized start tag and the stanza read again.
    libxml2 escapes quotes in attribute values, so the declaration cannot be in one.
    """
    data = etree.tostring(element, encoding="utf-8", with_tail=False)
    end = data.find(b">")
    index = data.find(_COMPONENT_DECLARATION, 0, end)
    if index >= 0:
        data = data[:index] + _CLIENT_DECLARATION + data[index + len(_COMPONENT_DECLARATION) :]
    return etree.fromstring(data, _PARSER)
