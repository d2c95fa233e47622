"""XML namespaces of the XMPP core (RFC 6120) and the few XEPs the core needs.

Every namespace string lives here exactly once; extensions keep their own
payload namespaces next to their code.
"""

NS_CLIENT = "jabber:client"
NS_SERVER = "jabber:server"
NS_COMPONENT = "jabber:component:accept"  # XEP-0114
NS_STREAMS = "http://etherx.jabber.org/streams"
NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"  # RFC 7395: XMPP over WebSocket
NS_HTTPBIND = "http://jabber.org/protocol/httpbind"  # XEP-0124: BOSH
NS_XBOSH = "urn:xmpp:xbosh"  # XEP-0206: XMPP over BOSH
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_SASL_CB = "urn:xmpp:sasl-cb:0"  # XEP-0440: the channel-binding types offered
NS_SASL2 = "urn:xmpp:sasl:2"  # XEP-0388: Extensible SASL Profile
NS_BIND2 = "urn:xmpp:bind:0"  # XEP-0386: Bind 2
NS_FAST = "urn:xmpp:fast:0"  # XEP-0484: Fast Authentication Streamlining Tokens
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_XML = "http://www.w3.org/XML/1998/namespace"
NS_DELAY = "urn:xmpp:delay"
NS_FORWARD = "urn:xmpp:forward:0"  # XEP-0297
NS_CARBONS = "urn:xmpp:carbons:2"  # XEP-0280

# Clark-notation attribute name of xml:lang, used on streams and stanzas.
XML_LANG = "{%s}lang" % NS_XML
