"""A client-to-server connection: the XML stream, its negotiation, then the session.

Runs the sans-IO `XmlStream` and `C2SNegotiation` over a `Transport`, performs their
actions (credential lookup, resource binding, STARTTLS) and, once bound, hands each
stanza to the router, counting it in `Session.stanzas_handled` once handled. A stream
closed by either side ends the session; a connection lost without a stream close only
interrupts it (`Host.session_interrupted`: XEP-0198 may keep it). Top-level elements
that are not stanzas (XEP-0198 <r/>, <enable/>, <resume/> ...) fire
`stream-element/<{namespace}name>` with a `StreamElement`. An iq
get/set before authentication (XEP-0077) fires `unauthenticated-iq/<namespace>:<element>`
on the stream's host: a handler writes the reply on the connection (or raises
StanzaError); an iq nobody handles closes the stream with not-authorized (RFC 6120 4.9.3.12).
A XEP-0386 Bind 2 request enables what it carries inline by firing
`bind2-inline/{namespace}name` with a `StreamElement` whose replies go into <bound/>;
the features advertised for inline use are the elements those events name; then
`bind2-bound` (a StreamElement too) lets extensions add what they tell every new session
(XEP-0313 archive metadata). Other requests inside <authenticate/> (XEP-0198 <resume/>)
fire `sasl2-inline/{namespace}name`, answered inside <success/>; their namespaces'
stream features are advertised in the SASL2 <inline/>. Until <success/> is out, what a
session writes to the connection waits. XEP-0484
tokens are an extension's: `fast-token-lookup` (a TokenLookup) finds a client's tokens,
`fast-token-grant` (a TokenGrant) rotates, issues or invalidates them at a SASL2 success.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, assert_never

from lxml import etree

from xmppd import metrics
from xmppd.logs import redacted
from xmppd.protocol import negotiation as n
from xmppd.protocol.bosh import BoshFraming
from xmppd.protocol.errors import InternalServerError, StanzaError
from xmppd.protocol.framing import WebSocketFraming
from xmppd.protocol.jid import JID, InvalidJID
from xmppd.protocol.negotiation import C2SNegotiation, Settings, stream_error
from xmppd.protocol.sasl import verify_plain_password
from xmppd.protocol.stanza import IQ, error_reply
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
from xmppd.router import KINDS
from xmppd.session import Session, StreamConnection
from xmppd.transport import Transport, WebSocketTransport, read_stream

if TYPE_CHECKING:
    from xmppd.admission import Admission
    from xmppd.host import Host
    from xmppd.services import Services
    from xmppd.tls import ServerTls

log = logging.getLogger(__name__)

MAX_UNSETTLED = 256  # stanzas of one client whose commits may be in flight at once
INLINE = "bind2-inline/"  # event prefix of the features a Bind 2 request enables (XEP-0386)
SASL2_INLINE = "sasl2-inline/"  # event prefix of the other requests <authenticate/> may carry
USER_AGENT = "sasl2-user-agent"  # Session.meta: the XEP-0388 <user-agent/> id of its client


@dataclass
class StreamElement:
    """A non-stanza top-level element, with the connection (and session once bound)."""

    connection: StreamConnection
    element: etree._Element
    session: Session | None


@dataclass
class TokenLookup:
    """XEP-0484: a handler sets `tokens`, the unexpired ones of the account and client
    issued for `mechanism`, and `expired`, those that were."""

    jid: JID
    user_agent: str
    mechanism: str
    tokens: list[bytes] = field(default_factory=list)
    expired: list[bytes] = field(default_factory=list)


@dataclass
class TokenGrant:
    """XEP-0484, at a SASL2 success: `used` (the token an HT mechanism authenticated
    with, if any) becomes current or, with `invalidate`, ends; a token is issued for
    `requested` (a mechanism) or when the used one is due for rotation. A handler sets
    `token` to the <token/> element for <success/>."""

    jid: JID
    user_agent: str
    requested: str | None
    used: bytes | None
    mechanism: str
    invalidate: bool
    token: bytes = b""


def negotiated(answers: list[bytes]) -> frozenset[str]:
    """The namespaces of the features that inline answers other than <failed/> (XEP-0198)
    negotiated: their stream features are not offered again."""
    elements = [etree.fromstring(answer) for answer in answers]
    return frozenset(etree.QName(e).namespace for e in elements if etree.QName(e).localname != "failed")


class InlineAnswers:
    """Stands for the connection while a Bind 2 request enables features inline: what
    their handlers write goes into <bound/> (XEP-0386 3.2), in order."""

    def __init__(self, connection: C2SConnection):
        self.connection = connection
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def __getattr__(self, name: str):
        return getattr(self.connection, name)


class C2SConnection:
    def __init__(
        self,
        services: Services,
        admission: Admission,
        tls: ServerTls | None,
        transport: Transport | WebSocketTransport,
        *,
        direct_tls: bool,
        websocket: bool = False,
        bosh: bool = False,
    ):
        """`direct_tls`: the connection is encrypted from its start (XEP-0368, or a
        WebSocket over HTTPS); `websocket`: RFC 7395, whose TLS is the WebSocket's;
        `bosh`: XEP-0206 (xmppd/bosh.py), whose TLS is the HTTP requests'."""
        self.services = services
        self.admission = admission
        self.tls = tls
        self.transport = transport
        self.peer = transport.peer
        self.listener = "bosh" if bosh else "websocket" if websocket else "direct_tls" if direct_tls else "starttls"
        options = services.config.c2s
        self.stream: XmlStream | WebSocketFraming | BoshFraming = (
            BoshFraming if bosh else WebSocketFraming if websocket else XmlStream
        )(options.max_stanza_bytes)
        self.settings = Settings(
            domains=frozenset(services.directory.user_domains),
            tls_available=tls is not None and not websocket and not bosh,
            tls_required=options.require_encryption or not transport.is_loopback,
            extra_features=self._extra_features,
            inline_features=self._inline_features,
            fast=self._offers_fast,
            sasl2_inline_features=self._sasl2_inline_features,
        )
        self.negotiation = C2SNegotiation(self.settings, tls_active=direct_tls)
        if direct_tls:
            self.settings.channel_binding = tls.channel_bindings(transport.ssl_object)
        self.session: Session | None = None
        self.host: Host | None = None
        self.closed = False
        self._answer_close = False  # the client closed its stream: close ours after the session ended
        self._held: list[bytes] | None = None  # written while SASL2 completes: goes out after <success/>

    # ------------------------------------------------------------- main loop

    async def run(self) -> None:
        # One timer for the whole negotiation, not a timeout per read: logins are a hot path.
        deadline = asyncio.get_running_loop().call_later(
            self.services.config.c2s.unauthenticated_timeout, self._negotiation_timeout
        )
        try:
            await read_stream(self.transport, self.stream, self.handle, lambda: self.closed)
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            log.debug("event=connection-lost peer=%s error=%s", self.peer, exc)
        finally:
            deadline.cancel()
            interrupted = not self.closed  # the peer vanished without closing the stream
            self.closed = True
            session = self.session
            if session is not None and not interrupted:
                log.info("event=session-ended jid=%s peer=%s", session.jid, self.peer)
                await session.host.end_session(session)
                if self._answer_close:
                    self.transport.write(STREAM_CLOSE)
            await self.transport.close()
            if session is not None and interrupted:
                log.info("event=connection-lost jid=%s peer=%s", session.jid, self.peer)
                await session.host.session_interrupted(session)

    def _negotiation_timeout(self) -> None:
        if self.session is None:
            self.close("connection-timeout", "authentication took too long")

    async def handle(self, event) -> None:
        if self.session is None:
            for action in self.negotiation.receive(event):
                await self.perform(action)
            return
        if isinstance(event, StanzaReceived):
            element = event.element
            if element.tag in KINDS:
                session = self.session
                self.services.metrics.stanza_received(element.tag)
                if element.tag == IQ:
                    # An iq's answer tells the client that what it sent before is done
                    # (a ping round trip is the usual barrier): its writes committed.
                    await session.settled()
                writes = await self.services.delivery.from_client(session, element)
                # Counted once its processing is over (an offline message committed to
                # storage): a XEP-0198 ack then covers only stanzas that are safe.
                session.handled(writes)
                if len(session.unsettled) > MAX_UNSETTLED:
                    await session.settled()
            elif not await self.session.host.bus.fire(
                f"stream-element/{element.tag}", StreamElement(self, element, self.session)
            ):
                self.close("unsupported-stanza-type")
        elif isinstance(event, StreamClosed):
            if self.session is None:
                self.close()
            else:
                # Our </stream> answers once the session has ended: a client that waits
                # for it knows its unavailable presence went out and its unacknowledged
                # stanzas were handed on (to another resource or to offline storage).
                self.closed = self._answer_close = True
        elif isinstance(event, StreamErrorDetected):
            self.close(event.condition, event.text)
        elif isinstance(event, StreamOpened):
            self.close("policy-violation", "stream restarted after binding")

    # ------------------------------------------------------------- actions

    async def perform(self, action: n.Action) -> None:
        if isinstance(action, n.SendBytes):
            self.transport.write(action.data)
        elif isinstance(action, n.CloseStream):
            self.closed = True
        elif isinstance(action, n.StartTls):
            await self.transport.start_tls(self.tls.context, self.services.config.c2s.unauthenticated_timeout)
            self.negotiation.tls_started()
            self.settings.channel_binding = self.tls.channel_bindings(self.transport.ssl_object)
            self.stream.reset()
        elif isinstance(action, n.LookupCredentials):
            jid = f"{action.username}@{self.negotiation.domain}"
            if not await self._may_attempt(jid):
                return
            account = await self.services.stores.backend.accounts.get(jid)
            for follow_up in self.negotiation.credentials_found(
                account.secrets.get(action.hash_name) if account else None
            ):
                await self.perform(follow_up)
        elif isinstance(action, n.LookupToken):
            jid = JID(action.username, self.negotiation.domain)
            if not await self._may_attempt(str(jid)):
                return
            lookup = TokenLookup(jid, action.user_agent, action.mechanism)
            await self.services.directory.host(jid.domain).bus.fire("fast-token-lookup", lookup)
            for follow_up in self.negotiation.tokens_found(lookup.tokens, lookup.expired):
                await self.perform(follow_up)
        elif isinstance(action, n.CheckPassword):
            # PBKDF2 takes milliseconds: off the event loop.
            matches = await asyncio.to_thread(
                verify_plain_password, action.password, action.credentials, action.hash_name
            )
            for follow_up in self.negotiation.password_checked(matches):
                await self.perform(follow_up)
        elif isinstance(action, n.AuthFailed):
            self.services.metrics.count(metrics.AUTH_FAILURES, action.mechanism)
            log.info(
                "event=auth-failed peer=%s user=%s mechanism=%s condition=%s",
                self.peer,
                action.username,
                action.mechanism,
                action.condition,
            )
            await asyncio.sleep(self.admission.throttle.failure_delay(self.peer))
        elif isinstance(action, n.Authenticated):
            self.services.metrics.count(metrics.AUTH_SUCCESSES, action.mechanism)
            self.admission.authenticated(self, action.jid)
            self.host = self.services.directory.host(action.jid.domain)
            if action.restart:
                self.stream.reset()
        elif isinstance(action, n.BindResource):
            await self._bind(action)
        elif isinstance(action, n.CompleteSasl2):
            await self._complete_sasl2(action)
        elif isinstance(action, n.UnhandledElement):
            event = StreamElement(self, action.element, None)
            if not await self.host.bus.fire(f"stream-element/{action.element.tag}", event):
                self.close("unsupported-stanza-type")
        elif isinstance(action, n.UnauthenticatedIq):
            await self._unauthenticated_iq(action.iq)
        else:
            assert_never(action)

    async def _may_attempt(self, jid: str) -> bool:
        """Whether this address may try to log in to `jid`: not when it has
        max_sessions_per_ip sessions (the stream is closed), nor past the login budgets
        of xmppd/throttle.py (the negotiation refuses the attempt)."""
        if self.admission.too_many_sessions(self):
            self.close("policy-violation", "too many sessions from your address")
            return False
        limit = self.admission.throttle.attempt(self.peer, jid)
        if limit is None:
            return True
        self.services.metrics.count(metrics.LIMIT_REACHED, limit)
        for follow_up in self.negotiation.attempt_refused("too many failed logins; try again later"):
            await self.perform(follow_up)
        return False

    async def _unauthenticated_iq(self, iq: etree._Element) -> None:
        payload = etree.QName(iq[0])
        host = self.services.directory.host(self.negotiation.domain)
        try:
            handled = await host.bus.fire(
                f"unauthenticated-iq/{payload.namespace}:{payload.localname}", StreamElement(self, iq, None)
            )
        except StanzaError as error:
            self.write(serialize(error_reply(iq, error)))
            return
        except Exception:
            log.exception("event=unauthenticated-iq-crashed peer=%s iq=%s", self.peer, redacted(iq))
            self.write(serialize(error_reply(iq, InternalServerError())))
            return
        if not handled:
            self.close("not-authorized")

    async def _bind(self, action: n.BindResource) -> None:
        host = self.host
        resource = action.resource or host.new_resource()
        full_jid = action.jid.with_resource(resource)
        refusal = host.bind_refusal(full_jid)
        if refusal is not None:  # RFC 6120 7.6.2.1
            for follow_up in self.negotiation.bind_failed(action.iq, "resource-constraint", "wait", refusal):
                await self.perform(follow_up)
            return
        old = host.session_for(full_jid)
        if old is not None:  # RFC 6120 7.7.2.2: the new session wins
            old.close("conflict", "replaced by a new session")
            await host.end_session(old)
        session = Session(host, full_jid, self)
        for follow_up in self.negotiation.bound(full_jid, action.iq):
            await self.perform(follow_up)
        self.attach(session)
        log.info("event=session-started jid=%s peer=%s listener=%s", full_jid, self.peer, self.listener)
        await host.bus.notify("resource-bound", session)

    async def _complete_sasl2(self, action: n.CompleteSasl2) -> None:
        """What <success/> carries: the answers to inline requests (a XEP-0198 <resume/>
        that took a session over), else the Bind 2 session with the answers of the
        features it enabled inline, and a XEP-0484 token. A new session joins the host
        once <success/> is out, as after RFC 6120 bind."""
        host = self.host
        self._held = []
        try:
            requests, answers = InlineAnswers(self), InlineAnswers(self)
            for request in action.inline:
                await host.bus.fire(f"{SASL2_INLINE}{request.tag}", StreamElement(requests, request, None))
            if self.closed:
                return
            session, bound = None, None
            if self.session is None and action.bind is not None:  # XEP-0386: not after a resumption
                session = await self._open_inline_session(action)
                if session is None:
                    return
                for feature in action.bind:
                    if isinstance(feature.tag, str) and feature.tag.startswith("{"):
                        await host.bus.fire(f"{INLINE}{feature.tag}", StreamElement(answers, feature, session))
                await host.bus.notify("bind2-bound", StreamElement(answers, action.bind, session))
                bound = b"".join(answers.written)
            extensions = b"".join(requests.written)
            answered = requests.written + answers.written
            if action.user_agent and (action.token_request or action.token_used):
                grant = TokenGrant(
                    action.jid,
                    action.user_agent,
                    action.token_request,
                    action.token_used,
                    action.mechanism,
                    action.invalidate,
                )
                await host.bus.fire("fast-token-grant", grant)
                extensions += grant.token
            named = session or self.session  # the bound or resumed session, if any
            identifier = named.jid if named is not None else action.jid
            for follow_up in self.negotiation.sasl2_completed(identifier, bound, extensions, negotiated(answered)):
                await self.perform(follow_up)
        finally:
            held, self._held = self._held, None
            for data in held:
                self.transport.write(data)
        if session is not None:
            self.attach(session)
            log.info("event=session-started jid=%s peer=%s listener=%s bind=2", session.jid, self.peer, self.listener)
            await host.bus.notify("resource-bound", session)

    async def _open_inline_session(self, action: n.CompleteSasl2) -> Session | None:
        """XEP-0386: the resource is the client's tag, if any, then '/' and a unique
        suffix. None: the account may have no more resources (the stream is closed)."""
        host = self.host
        suffix = host.new_resource()
        try:
            full_jid = action.jid.with_resource(f"{action.tag}/{suffix}" if action.tag else suffix)
        except InvalidJID:  # a tag no resource can hold is left out
            full_jid = action.jid.with_resource(suffix)
        refusal = host.bind_refusal(full_jid)
        if refusal is not None:
            self.close("policy-violation", refusal)
            return None
        if action.user_agent:  # XEP-0386: an earlier session of the same client ends
            for old in [s for s in host.sessions_of(action.jid.local) if s.meta.get(USER_AGENT) == action.user_agent]:
                old.close("conflict", "replaced by a new session of the same client")
                await host.end_session(old)
        session = Session(host, full_jid, self)
        if action.user_agent:
            session.meta[USER_AGENT] = action.user_agent
        return session

    def attach(self, session: Session) -> None:
        """Make `session` this connection's (after bind, or a stream-management resume)."""
        self.session = session
        session.connection = self
        session.host.add_session(session)

    @property
    def authenticated(self):
        return self.negotiation.authenticated

    def resume(self, session: Session) -> None:
        self.negotiation.resumed()
        self.attach(session)

    def detach(self) -> Session | None:
        """Give the session up to another stream (a XEP-0198 resumption): the end of this
        connection then neither ends nor interrupts it."""
        session, self.session = self.session, None
        return session

    def _extra_features(self, authenticated: bool) -> list[bytes]:
        host = self.services.directory.host(self.negotiation.domain)
        return host.stream_features(authenticated) if host is not None else []

    def _offers_fast(self) -> bool:
        host = self.services.directory.host(self.negotiation.domain)
        return host is not None and bool(host.bus.hooked("fast-token-lookup"))

    def _sasl2_inline_features(self) -> list[bytes]:
        """The stream features of the namespaces whose requests <authenticate/> may carry."""
        host = self.services.directory.host(self.negotiation.domain)
        if host is None:
            return []
        namespaces = {etree.QName(name.removeprefix(SASL2_INLINE)).namespace for name in host.bus.hooked(SASL2_INLINE)}
        if not namespaces:
            return []
        return [
            feature
            for feature in host.stream_features(True)
            if etree.QName(etree.fromstring(feature)).namespace in namespaces
        ]

    def _inline_features(self) -> list[str]:
        host = self.services.directory.host(self.negotiation.domain)
        if host is None:
            return []
        return sorted({etree.QName(name.removeprefix(INLINE)).namespace for name in host.bus.hooked(INLINE)})

    # ------------------------------------------------------------- Connection

    def write(self, data: bytes) -> None:
        if self._held is not None:
            self._held.append(data)
        else:
            self.transport.write(data)

    @property
    def congested(self) -> bool:
        return self.transport.congested

    @property
    def unsent(self) -> int:
        return self.transport.unsent

    async def drained(self) -> None:
        await self.transport.drained()

    def close(self, condition: str | None = None, text: str | None = None) -> None:
        """End the stream, with a stream error when `condition` is given."""
        if self.closed:
            return
        self.closed = True
        if condition is not None:
            if not self.negotiation.header_sent:
                self.transport.write(
                    stream_header(from_=self.negotiation.domain or self.services.directory.user_domains[0], id="error")
                )
            self.transport.write(stream_error(condition, text))
        self.transport.write(STREAM_CLOSE)
        asyncio.get_running_loop().create_task(self.transport.close())

    def drop(self) -> None:
        """Cut the connection without closing the stream, as a network failure would: the
        session is interrupted (stream management may keep it), not ended."""
        self.transport.abort()
