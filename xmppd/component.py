"""XEP-0114 external components: the [components] listener and each component's domain.

Every configured domain is a component host of the directory from start-up, made as
conference.<domain> is (`Directory.add_component`, its parent the user host whose
subdomain it is), so the router delivers to it like to any host: `ComponentRoute`
hooks its routing events and writes every stanza to the connected component, or
bounces it with service-unavailable (type wait) while none is connected, as Prosody's
mod_component does.

A connection opens a 'jabber:component:accept' stream to the component's domain and
authenticates with the handshake (xmppd/protocol/component.py). A header without 'to'
gets improper-addressing, an unknown domain host-unknown, a wrong secret not-authorized, and a second connection for a connected
domain conflict: the first one keeps the domain (Prosody's default, "kick_new").
Stanzas from a component must carry a 'from' of its domain (invalid-from) and a 'to'
(improper-addressing, as on a server-to-server stream); they are routed as they are,
with no pre- events (the component is not a user of ours).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
from typing import TYPE_CHECKING

from lxml import etree

from xmppd import metrics
from xmppd.protocol.component import HANDSHAKE, HANDSHAKE_ACCEPTED, is_valid_handshake, to_client_namespace
from xmppd.protocol.errors import BadRequest, ResourceConstraint, ServiceUnavailable
from xmppd.protocol.jid import JID, InvalidJID
from xmppd.protocol.namespaces import NS_COMPONENT
from xmppd.protocol.negotiation import stream_error
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
from xmppd.router import KINDS, Router, Stanza, target_of
from xmppd.transport import Transport, read_stream

if TYPE_CHECKING:
    from xmppd.host import Host
    from xmppd.services import Services

log = logging.getLogger(__name__)

ROUTED_EVENTS = [
    f"{kind}/{target}" for kind in ("message", "presence", "iq") for target in ("host", "bare", "full", "self")
]


class ComponentRoute:
    """The delivery to one component domain: its connection while one is authenticated."""

    def __init__(self, host: Host, secret: str):
        self.host = host
        self.secret = secret
        self.connection: ComponentConnection | None = None
        for name in ROUTED_EVENTS:
            host.bus.hook(name, self.deliver)

    async def deliver(self, stanza: Stanza) -> bool:
        connection = self.connection
        if connection is None or connection.closed:
            raise ServiceUnavailable(type="wait", text="the component is not connected")
        if connection.transport.congested:
            self.host.services.metrics.count(metrics.LIMIT_REACHED, "components.max_output_buffer")
            raise ResourceConstraint(text="the component does not take its stanzas (components.max_output_buffer)")
        connection.transport.write(serialize(stanza.element))
        return True


class Components:
    """The configured components and their listener."""

    def __init__(self, services: Services):
        self.services = services
        self.options = services.config.components
        self.routes: dict[str, ComponentRoute] = {}
        self.connections: set[ComponentConnection] = set()
        directory = services.directory
        for configured, secret in self.options.secrets.items():
            domain = JID.parse(configured).domain  # as the router will look it up
            parent = next(
                (host for host in directory.hosts() if not host.is_component and domain.endswith("." + host.domain)),
                None,
            )
            host = directory.add_component(domain, parent or directory.host(directory.user_domains[0]))
            self.routes[domain] = ComponentRoute(host, secret)

    async def listen(self) -> list[asyncio.AbstractServer]:
        """The listeners, one per interface; none without a component or with port 0."""
        if not self.routes or not self.options.port:
            return []
        return [
            await asyncio.start_server(self._accept, interface, self.options.port, reuse_address=True)
            for interface in self.options.interfaces
        ]

    def close(self) -> None:
        for connection in list(self.connections):
            connection.close("system-shutdown")

    async def _accept(self, reader, writer) -> None:
        transport = Transport(reader, writer, max_output_buffer=self.options.max_output_buffer)
        connection = ComponentConnection(self, transport)
        self.connections.add(connection)
        try:
            await connection.run()
        except Exception:
            log.exception("event=component-connection-crashed peer=%s", transport.peer)
        finally:
            self.connections.discard(connection)


class ComponentConnection:
    def __init__(self, components: Components, transport: Transport):
        self.components = components
        self.services = components.services
        self.transport = transport
        self.stream = XmlStream(components.options.max_stanza_bytes, content_namespace=NS_COMPONENT)
        self.stream_id = secrets.token_hex(16)
        self.domain: str | None = None  # once the stream header named a configured one
        self.route: ComponentRoute | None = None  # once authenticated
        self.header_sent = False
        self.closed = False

    async def run(self) -> None:
        deadline = asyncio.get_running_loop().call_later(
            self.components.options.handshake_timeout, self._handshake_timeout
        )
        try:
            await read_stream(self.transport, self.stream, self.handle, lambda: self.closed)
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            log.debug("event=component-connection-lost peer=%s error=%s", self.transport.peer, exc)
        finally:
            deadline.cancel()
            self.closed = True
            if self.route is not None:
                self.route.connection = None
                log.info("event=component-disconnected domain=%s peer=%s", self.domain, self.transport.peer)
            await self.transport.close()

    def _handshake_timeout(self) -> None:
        if self.route is None:
            self.close("connection-timeout", "the handshake took too long")

    async def handle(self, event) -> None:
        if isinstance(event, StreamOpened):
            self._open(event.attributes.get("to"))
        elif isinstance(event, StanzaReceived):
            if self.route is None:
                self._authenticate(event.element)
            else:
                await self._route(event.element)
        elif isinstance(event, StreamErrorDetected):
            self.close(event.condition, event.text)
        elif isinstance(event, StreamClosed):
            self.close()

    def _open(self, domain: str | None) -> None:
        if domain is None:
            self.close("improper-addressing", "the stream header needs a 'to': the component's domain")
            return
        try:
            domain = JID.parse(domain).domain
        except InvalidJID:
            domain = None
        if domain not in self.components.routes:
            self.close("host-unknown", "no component of that name is configured")
            return
        self.domain = domain
        self._send_header()

    def _authenticate(self, element: etree._Element) -> None:
        route = self.components.routes[self.domain]
        if (
            element.tag != HANDSHAKE
            or len(element)
            or not is_valid_handshake(element.text or "", self.stream_id, route.secret)
        ):
            self.services.metrics.count(metrics.AUTH_FAILURES, "component-handshake")
            log.info("event=component-auth-failed domain=%s peer=%s", self.domain, self.transport.peer)
            self.close("not-authorized")
            return
        if route.connection is not None:
            log.warning("event=component-conflict domain=%s peer=%s", self.domain, self.transport.peer)
            self.close("conflict", "the component is already connected")
            return
        self.services.metrics.count(metrics.AUTH_SUCCESSES, "component-handshake")
        self.route = route
        route.connection = self
        self.transport.write(HANDSHAKE_ACCEPTED)
        log.info("event=component-connected domain=%s peer=%s", self.domain, self.transport.peer)

    async def _route(self, element: etree._Element) -> None:
        element = to_client_namespace(element)
        kind = KINDS.get(element.tag)
        if kind is None:
            self.close("unsupported-stanza-type")
            return
        try:
            from_ = JID.parse(element.get("from") or "")
            to = JID.parse(element.get("to") or "")
        except InvalidJID:
            self.close("improper-addressing", "a stanza needs a valid 'from' and 'to'")
            return
        if from_.domain != self.domain:
            self.close("invalid-from", f"a stanza's 'from' must be of the domain {self.domain}")
            return
        stanza = Stanza(element, kind, from_, to)
        stanza.target = target_of(kind, to, from_)
        problem = Router.invalid(stanza)
        if problem:
            await self.services.delivery.bounce(stanza, BadRequest(text=problem))
            return
        await self.services.delivery.route(stanza)

    def _send_header(self) -> None:
        """XEP-0114 section 3: from the component's domain, with the id its handshake hashes."""
        self.transport.write(
            stream_header(
                from_=self.domain or self.services.directory.user_domains[0],
                id=self.stream_id,
                version=None,
                lang=None,
                content_namespace=NS_COMPONENT,
            )
        )
        self.header_sent = True

    def close(self, condition: str | None = None, text: str | None = None) -> None:
        """End the stream, with a stream error when `condition` is given (after a stream
        header of ours, RFC 6120 4.9.1.2)."""
        if self.closed:
            return
        self.closed = True
        if condition is not None:
            if not self.header_sent:
                self._send_header()
            self.transport.write(stream_error(condition, text))
        self.transport.write(STREAM_CLOSE)
        asyncio.get_running_loop().create_task(self.transport.close())
