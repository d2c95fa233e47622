"""Client-to-server stream negotiation (RFC 6120 sections 4-7) as a sans-IO state machine.

It consumes events of `XmlStream` and returns actions; the transport performs them. The
steps that need the outside world are actions that the caller answers:
`LookupCredentials` (answered with `credentials_found`, or `attempt_refused` when the
caller's budget of attempts is used up), `CheckPassword` (PLAIN's key derivation, which
the caller runs off its event loop; answered with `password_checked`) and `BindResource`
(answered with `bound` or `bind_failed`). Everything that changes the state lives in
this file.

Both SASL profiles run the same mechanisms, credential lookups and failures: RFC 6120's
(<auth/>, then a stream restart) and XEP-0388's SASL2 (<authenticate/>, no restart, the
new features right after <success/>). Once a SASL2 mechanism succeeded, `CompleteSasl2`
asks the caller for what <success/> carries besides (a XEP-0386 Bind 2 request's
resource and <bound/>, a XEP-0484 token), answered with `sasl2_completed`. XEP-0484's
HT-* mechanisms authenticate with a token instead of a password: `LookupToken`,
answered with `tokens_found` (or `attempt_refused`).
"""

from __future__ import annotations

import base64
import binascii
import enum
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from lxml import etree

from .errors import LocalProtocolError, StreamError
from .jid import JID, InvalidJID
from .namespaces import (
    NS_BIND,
    NS_BIND2,
    NS_CLIENT,
    NS_FAST,
    NS_SASL,
    NS_SASL2,
    NS_SASL_CB,
    NS_SESSION,
    NS_STANZAS,
    NS_TLS,
)
from .sasl import (
    HashedTokenMechanism,
    PlainMechanism,
    SaslFailure,
    ScramCredentials,
    ScramMechanism,
    stand_in_credentials,
)
from .stream import STREAM_CLOSE, StreamClosed, StreamErrorDetected, StreamEvent, StreamOpened, stream_header

SCRAM_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-1": "sha1"}
# XEP-0484 HT mechanisms by the channel-binding type they bind to (None: -NONE)
HT_MECHANISMS = {
    "tls-exporter": "HT-SHA-256-EXPR",
    "tls-server-end-point": "HT-SHA-256-ENDP",
    "tls-unique": "HT-SHA-256-UNIQ",
    None: "HT-SHA-256-NONE",
}
MAX_AUTH_ATTEMPTS = 3


class State(enum.Enum):
    AWAIT_STREAM = "await-stream"  # before the (re)opened stream header
    AWAIT_STARTTLS = "await-starttls"  # features sent, TLS not yet on
    AWAIT_AUTH = "await-auth"  # features with mechanisms sent
    SASL_EXCHANGE = "sasl-exchange"  # a mechanism is running
    AWAIT_CREDENTIALS = "await-credentials"
    CHECKING_PASSWORD = "checking-password"  # PLAIN: the caller derives the key
    AWAIT_BIND = "await-bind"  # authenticated, features with <bind/> sent
    BINDING = "binding"  # bind asked of the server, waiting for it
    BOUND = "bound"  # handed over to the session
    CLOSED = "closed"


# -------------------------------------------------------------------- actions


@dataclass(frozen=True)
class SendBytes:
    data: bytes


@dataclass(frozen=True)
class StartTls:
    """Upgrade the transport now (after <proceed/> was sent), then `tls_started()`."""


@dataclass(frozen=True)
class CloseStream:
    """Close the connection; the bytes to send (error, </stream:stream>) were sent before."""


@dataclass(frozen=True)
class LookupCredentials:
    username: str
    hash_name: str


@dataclass(frozen=True)
class CheckPassword:
    """Verify a PLAIN password (`sasl.verify_plain_password`, a PBKDF2 derivation), then
    `password_checked()`. For an unknown user `credentials` are a stand-in that costs the
    same work and that no password matches."""

    password: str
    credentials: ScramCredentials
    hash_name: str


@dataclass(frozen=True)
class AuthFailed:
    """Tell the transport to slow this address down."""

    username: str | None
    condition: str
    mechanism: str = ""  # the SASL mechanism tried


@dataclass(frozen=True)
class Authenticated:
    jid: JID
    mechanism: str = ""
    restart: bool = True  # SASL1: the stream restarts; SASL2 goes on without a restart


@dataclass(frozen=True)
class BindResource:
    jid: JID  # bare JID of the account
    resource: str | None  # None: the server picks one
    iq: etree._Element


@dataclass(frozen=True)
class LookupToken:
    """XEP-0484: the unexpired tokens of this account and client issued for `mechanism`,
    for `tokens_found()`."""

    username: str
    mechanism: str
    user_agent: str


@dataclass(frozen=True)
class CompleteSasl2:
    """A SASL2 mechanism succeeded: before <success/>, bind a resource for a XEP-0386
    request (enabling what it asks inline) and issue or rotate a XEP-0484 token, then
    `sasl2_completed()`."""

    jid: JID  # bare JID of the account
    user_agent: str | None  # the XEP-0388 <user-agent/> id
    bind: etree._Element | None  # the <bind xmlns='urn:xmpp:bind:0'/>, if any
    tag: str | None  # its <tag/>, to begin the resource with
    token_request: str | None  # XEP-0484 <request-token/>: a token for this mechanism
    token_used: bytes | None = None  # the token an HT mechanism authenticated with
    mechanism: str = ""
    invalidate: bool = False  # XEP-0484 <fast invalidate='true'/>: the used token ends
    inline: tuple[etree._Element, ...] = ()  # other requests of <authenticate/> (XEP-0198 <resume/>)


@dataclass(frozen=True)
class UnhandledElement:
    """A top-level element of an authenticated stream that is not ours (XEP-0198 <resume/>...)."""

    element: etree._Element


@dataclass(frozen=True)
class UnauthenticatedIq:
    """An iq get/set before authentication (XEP-0077 registration): the caller answers it
    or closes the stream with not-authorized. Offered only once TLS is on (or not required)."""

    iq: etree._Element


Action = (
    SendBytes
    | StartTls
    | CloseStream
    | LookupCredentials
    | CheckPassword
    | AuthFailed
    | Authenticated
    | BindResource
    | LookupToken
    | CompleteSasl2
    | UnhandledElement
    | UnauthenticatedIq
)


def _sasl(name: str, text: str | None = None, namespace: str = NS_SASL) -> bytes:
    inner = f">{text}</{name}>" if text is not None else "/>"
    return f"<{name} xmlns='{namespace}'{inner}".encode()


def _failure(condition: str, text: str | None = None, namespace: str = NS_SASL) -> bytes:
    """RFC 6120 6.4.5; in SASL2 (XEP-0388 2.6.2) the condition keeps RFC 6120's namespace."""
    text = f"<text xml:lang='en'>{escape(text)}</text>" if text else ""
    condition = f"<{condition}/>" if namespace == NS_SASL else f"<{condition} xmlns='{NS_SASL}'/>"
    return f"<failure xmlns='{namespace}'>{condition}{text}</failure>".encode()


def stream_error(condition: str, text: str | None = None) -> bytes:
    """The <stream:error> to send before closing (RFC 6120 4.9)."""
    return StreamError(condition, text).to_bytes()


@dataclass
class Settings:
    domains: frozenset[str]
    tls_available: bool
    tls_required: bool  # False: plain text allowed (loopback peers only)
    # (authenticated) -> the stream features the extensions add
    extra_features: Callable[[bool], list[bytes]] | None = None
    # the namespaces of the features a XEP-0386 bind request may enable inline
    inline_features: Callable[[], list[str]] | None = None
    fast: Callable[[], bool] | None = None  # whether XEP-0484 tokens are offered
    # the features that <authenticate/> may carry a request of (XEP-0198 <sm/>)
    sasl2_inline_features: Callable[[], list[bytes]] | None = None
    channel_binding: dict[str, bytes] = field(default_factory=dict)  # type name -> data


class C2SNegotiation:
    def __init__(self, settings: Settings, *, tls_active: bool = False) -> None:
        self.settings = settings
        self.state = State.AWAIT_STREAM
        self.tls_active = tls_active
        self.domain: str | None = None
        self.authenticated: JID | None = None
        self.header_sent = False
        self._mechanism: PlainMechanism | ScramMechanism | HashedTokenMechanism | None = None
        self._mechanism_name = ""  # for the Authenticated/AuthFailed actions
        self._pending_username: str | None = None
        self._pending_password: str | None = None
        self._user_known = False
        self._auth_attempts = 0
        self._namespace = NS_SASL  # of the running SASL profile: NS_SASL2 for <authenticate/>
        self._bind_request: etree._Element | None = None  # SASL2: a Bind 2 request for after success
        self._user_agent: str | None = None
        self._fast: etree._Element | None = None  # XEP-0484 <fast/> of the <authenticate/>
        self._token_request: str | None = None
        self._token_used: bytes | None = None
        self._additional_data: bytes | None = None
        self._inline: tuple[etree._Element, ...] = ()
        self._resumed = False  # a XEP-0198 <resume/> inside <authenticate/> took a session over
        self.stream_id = ""

    # ---------------------------------------------------------------- inputs

    def receive(self, event: StreamEvent) -> list[Action]:
        if self.state in (State.BOUND, State.CLOSED):
            raise LocalProtocolError(f"negotiation is over ({self.state.value})")
        if isinstance(event, StreamErrorDetected):
            return self._error(event.condition, event.text)
        if isinstance(event, StreamClosed):
            self.state = State.CLOSED
            return [SendBytes(STREAM_CLOSE), CloseStream()]
        if isinstance(event, StreamOpened):
            return self._stream_opened(event.attributes)
        if self.state is State.AWAIT_STREAM:
            return self._error("not-well-formed", "stream header expected")
        element = event.element
        handler = {
            State.AWAIT_STARTTLS: self._in_await_starttls,
            State.AWAIT_AUTH: self._in_await_auth,
            State.SASL_EXCHANGE: self._in_sasl_exchange,
            State.AWAIT_BIND: self._in_await_bind,
        }.get(self.state)
        if handler is None:  # AWAIT_CREDENTIALS, CHECKING_PASSWORD, BINDING: the client must wait for us
            return self._error("policy-violation", "element sent out of turn")
        return handler(element)

    def tls_started(self) -> None:
        self._expect(State.AWAIT_STARTTLS)
        self.tls_active = True
        self.state = State.AWAIT_STREAM
        self.header_sent = False

    def credentials_found(self, creds: ScramCredentials | None) -> list[Action]:
        self._expect(State.AWAIT_CREDENTIALS)
        mechanism, username = self._mechanism, self._pending_username
        assert mechanism is not None and username is not None  # set on entering AWAIT_CREDENTIALS
        assert not isinstance(mechanism, HashedTokenMechanism)  # its lookup is LookupToken
        if isinstance(mechanism, PlainMechanism):
            password, self._pending_password = self._pending_password, None
            assert password is not None  # PLAIN's, kept from its <auth/>
            self._user_known = creds is not None
            self.state = State.CHECKING_PASSWORD
            return [CheckPassword(password, creds or stand_in_credentials(username, "sha256"), "sha256")]
        self.state = State.SASL_EXCHANGE
        challenge = mechanism.server_first(creds)
        return [SendBytes(_sasl("challenge", base64.b64encode(challenge).decode(), self._namespace))]

    def tokens_found(self, tokens: list[bytes], expired: list[bytes]) -> list[Action]:
        """XEP-0484: the client's valid tokens for its mechanism (none for an unknown user),
        and its expired ones: a token no longer trusted gets credentials-expired (section 6.2)."""
        self._expect(State.AWAIT_CREDENTIALS)
        mechanism, username = self._mechanism, self._pending_username
        assert isinstance(mechanism, HashedTokenMechanism) and username is not None
        try:
            self._token_used, responder = mechanism.verify(tokens)
        except SaslFailure as failure:
            try:
                mechanism.verify(expired)
            except SaslFailure:
                return self._sasl_failed(failure.condition)
            return self._sasl_failed("credentials-expired")
        return self._succeed(username, responder)

    def password_checked(self, matches: bool) -> list[Action]:
        self._expect(State.CHECKING_PASSWORD)
        username = self._pending_username
        assert username is not None  # set on entering AWAIT_CREDENTIALS
        if matches and self._user_known:
            return self._succeed(username, None)
        return self._sasl_failed("not-authorized")

    def attempt_refused(self, text: str) -> list[Action]:
        """The caller's budget of authentication attempts is used up: the password is not
        checked and the client may try again later (RFC 6120 6.5.12)."""
        self._expect(State.AWAIT_CREDENTIALS)
        self._pending_password = None
        return self._sasl_failed("temporary-auth-failure", text)

    def bound(self, full_jid: JID, iq: etree._Element) -> list[Action]:
        self._expect(State.BINDING)
        self.state = State.BOUND
        result = (
            f"<iq type='result' id={quoteattr(iq.get('id', ''))}><bind xmlns='{NS_BIND}'>"
            f"<jid>{escape(str(full_jid))}</jid></bind></iq>"
        ).encode()
        return [SendBytes(result)]

    def bind_failed(
        self, iq: etree._Element, condition: str, error_type: str = "modify", text: str | None = None
    ) -> list[Action]:
        self._expect(State.BINDING)
        self.state = State.AWAIT_BIND
        described = f"<text xmlns='{NS_STANZAS}'>{escape(text)}</text>" if text else ""
        reply = (
            f"<iq type='error' id={quoteattr(iq.get('id', ''))}><error type='{error_type}'>"
            f"<{condition} xmlns='{NS_STANZAS}'/>{described}</error></iq>"
        ).encode()
        return [SendBytes(reply)]

    def sasl2_completed(
        self, identifier: JID, bound: bytes | None, extensions: bytes = b"", negotiated: frozenset[str] = frozenset()
    ) -> list[Action]:
        """The <success/> names `identifier`, the full JID when Bind 2 bound one (`bound`:
        what the inline features answered), and carries `extensions` (a XEP-0484 token);
        the features of the stream follow it, without a restart (XEP-0388 2.6.1), but not
        those of the `negotiated` namespaces: enabled inline (XEP-0198), they are no more."""
        self._expect(State.BINDING)
        if bound is not None or self._resumed:
            self.state = State.BOUND
            if bound is not None:
                extensions = f"<bound xmlns='{NS_BIND2}'>".encode() + bound + b"</bound>" + extensions
            features = "".join(
                f.decode()
                for f in self._extra_features(True)
                if etree.QName(etree.fromstring(f)).namespace not in negotiated
            )
        else:
            self.state = State.AWAIT_BIND
            features = self._bind_features()
        data = self._additional_data
        additional = f"<additional-data>{base64.b64encode(data).decode()}</additional-data>" if data else ""
        named = f"<authorization-identifier>{escape(str(identifier))}</authorization-identifier>"
        success = f"<success xmlns='{NS_SASL2}'>{additional}{named}".encode() + extensions + b"</success>"
        return [SendBytes(success + f"<stream:features>{features}</stream:features>".encode())]

    def resumed(self) -> None:
        """XEP-0198: the stream took over an earlier session instead of binding (inline
        in SASL2: before `sasl2_completed`, which then binds nothing)."""
        if self.state is State.BINDING and self._namespace == NS_SASL2:
            self._resumed = True
            return
        self._expect(State.AWAIT_BIND)
        self.state = State.BOUND

    # ---------------------------------------------------------------- states

    def _stream_opened(self, attributes: dict[str, str]) -> list[Action]:
        if self.state is not State.AWAIT_STREAM:
            return self._error("policy-violation", "unexpected stream restart")
        domain = self.domain = attributes.get("to", self.domain)
        if domain is None or domain not in self.settings.domains:
            return self._error("host-unknown")
        if attributes.get("version") != "1.0":
            return self._error("unsupported-version")
        out: list[Action] = [SendBytes(self._header(domain))]
        if self.authenticated is not None:
            self.state = State.AWAIT_BIND
            features = self._bind_features()
        elif not self.tls_active and self.settings.tls_available and self.settings.tls_required:
            self.state = State.AWAIT_STARTTLS
            features = f"<starttls xmlns='{NS_TLS}'><required/></starttls>"
        else:
            self.state = State.AWAIT_AUTH
            features = ""
            if not self.tls_active and self.settings.tls_available:
                features = f"<starttls xmlns='{NS_TLS}'/>"
            features += self._mechanisms()
            features += "".join(f.decode() for f in self._extra_features(False))
        out.append(SendBytes(f"<stream:features>{features}</stream:features>".encode()))
        return out

    def _in_await_starttls(self, element: etree._Element) -> list[Action]:
        if element.tag != f"{{{NS_TLS}}}starttls":
            return self._error("policy-violation", "STARTTLS is required")
        return [SendBytes(f"<proceed xmlns='{NS_TLS}'/>".encode()), StartTls()]

    def _in_await_auth(self, element: etree._Element) -> list[Action]:
        if element.tag == f"{{{NS_TLS}}}starttls" and not self.tls_active and self.settings.tls_available:
            self.state = State.AWAIT_STARTTLS
            return self._in_await_starttls(element)
        if (
            element.tag == f"{{{NS_CLIENT}}}iq"
            and element.get("type") in ("get", "set")
            and element.get("id")
            and len(element) == 1
        ):
            return [UnauthenticatedIq(element)]
        if element.tag == f"{{{NS_SASL2}}}authenticate":
            self._namespace = NS_SASL2
            self._bind_request = element.find(f"{{{NS_BIND2}}}bind")
            user_agent = element.find(f"{{{NS_SASL2}}}user-agent")
            self._user_agent = (user_agent.get("id") or None) if user_agent is not None else None
            self._fast = element.find(f"{{{NS_FAST}}}fast")
            self._inline = tuple(
                child
                for child in element
                if isinstance(child.tag, str) and etree.QName(child).namespace not in (NS_SASL2, NS_BIND2, NS_FAST)
            )
            request = element.find(f"{{{NS_FAST}}}request-token")
            wanted = request.get("mechanism") if request is not None else None
            # XEP-0484: tokens are per client, so only for one that names itself
            self._token_request = wanted if wanted in self.fast_mechanism_names() and self._user_agent else None
            # No <initial-response/> is no initial response; an empty one is an empty string.
            return self._start(element.get("mechanism", ""), element.findtext(f"{{{NS_SASL2}}}initial-response"))
        if element.tag != f"{{{NS_SASL}}}auth":
            return self._error("not-authorized")
        self._namespace = NS_SASL
        return self._start(element.get("mechanism", ""), element.text)

    def _start(self, name: str, initial_response: str | None) -> list[Action]:
        """Run mechanism `name` on the client's initial response (base64), in either profile."""
        if self._namespace == NS_SASL2 and self._fast is not None and self._user_agent:
            if name in self.fast_mechanism_names():
                return self._start_token(name, initial_response)
        if name not in self.mechanism_names():
            return [SendBytes(_failure("invalid-mechanism", namespace=self._namespace))]
        self._mechanism_name = name
        try:
            initial = _decode(initial_response)
        except SaslFailure as failure:
            return self._sasl_failed(failure.condition)
        if name == "PLAIN":
            self._mechanism = PlainMechanism()
            try:
                authzid, authcid, password = self._mechanism.parse(initial)
                username = self._username(authcid)
                if authzid and authzid != f"{username}@{self.domain}":
                    raise SaslFailure("invalid-authzid")
            except SaslFailure as failure:
                return self._sasl_failed(failure.condition)
            self._pending_username, self._pending_password = username, password
            self.state = State.AWAIT_CREDENTIALS
            return [LookupCredentials(username, "sha256")]
        base = name.removesuffix("-PLUS")
        self._mechanism = ScramMechanism(
            SCRAM_HASHES[base],
            plus=name.endswith("-PLUS"),
            channel_binding=self.settings.channel_binding if self.tls_active else {},
        )
        try:
            username = self._username(self._mechanism.client_first(initial))
        except SaslFailure as failure:
            return self._sasl_failed(failure.condition)
        self._pending_username = username
        self.state = State.AWAIT_CREDENTIALS
        return [LookupCredentials(username, SCRAM_HASHES[base])]

    def _start_token(self, name: str, initial_response: str | None) -> list[Action]:
        """XEP-0484: an HT mechanism, bound to the channel its name says."""
        assert self._user_agent is not None  # checked by _start
        self._mechanism_name = name
        binding_type = next(kind for kind, mechanism in HT_MECHANISMS.items() if mechanism == name)
        self._mechanism = HashedTokenMechanism(self.settings.channel_binding[binding_type] if binding_type else b"")
        try:
            username = self._username(self._mechanism.parse(_decode(initial_response)))
        except SaslFailure as failure:
            return self._sasl_failed(failure.condition)
        self._pending_username = username
        self.state = State.AWAIT_CREDENTIALS
        return [LookupToken(username, name, self._user_agent)]

    def _in_sasl_exchange(self, element: etree._Element) -> list[Action]:
        if element.tag == f"{{{self._namespace}}}abort":
            return self._sasl_failed("aborted")
        if element.tag != f"{{{self._namespace}}}response":
            return self._error("not-authorized")
        mechanism, username = self._mechanism, self._pending_username
        assert isinstance(mechanism, ScramMechanism) and username is not None  # PLAIN and HT have no exchange
        try:
            server_final = mechanism.client_final(_decode(element.text))
        except SaslFailure as failure:
            return self._sasl_failed(failure.condition)
        return self._succeed(username, server_final)

    def _in_await_bind(self, element: etree._Element) -> list[Action]:
        if not element.tag.startswith(f"{{{NS_CLIENT}}}"):
            return [UnhandledElement(element)]
        if element.tag != f"{{{NS_CLIENT}}}iq":  # RFC 6120 7.1: bind first
            return self._error("not-authorized", "bind a resource first")
        bind = element.find(f"{{{NS_BIND}}}bind")
        if element.get("type") != "set" or bind is None:
            return self._error("not-authorized", "bind a resource first")
        resource = bind.findtext(f"{{{NS_BIND}}}resource")
        resource = resource.strip() if resource else None
        if resource:
            try:
                JID.parse(f"x@{self.domain}/{resource}")
            except InvalidJID:
                reply = (
                    f"<iq type='error' id={quoteattr(element.get('id', ''))}><error type='modify'>"
                    f"<bad-request xmlns='{NS_STANZAS}'/></error></iq>"
                ).encode()
                return [SendBytes(reply)]
        assert self.authenticated is not None  # AWAIT_BIND comes after SASL only
        self.state = State.BINDING
        return [BindResource(self.authenticated, resource or None, element)]

    # ---------------------------------------------------------------- helpers

    def mechanism_names(self) -> list[str]:
        names: list[str] = []
        if self.tls_active and self.settings.channel_binding:
            names += ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"]
        names += ["SCRAM-SHA-256", "SCRAM-SHA-1"]
        if self.tls_active:
            names.append("PLAIN")  # never offered without TLS
        return names

    def fast_mechanism_names(self) -> list[str]:
        """XEP-0484 mechanisms: only over TLS (its section 9), those binding to the channel first."""
        if not (self.tls_active and self.settings.fast and self.settings.fast()):
            return []
        return [
            mechanism
            for kind, mechanism in HT_MECHANISMS.items()
            if kind is None or kind in self.settings.channel_binding
        ]

    def _mechanisms(self) -> str:
        """RFC 6120's <mechanisms/>, XEP-0388's <authentication/> with XEP-0386 and XEP-0484
        inline, and the XEP-0440 channel-binding types."""
        items = "".join(f"<mechanism>{name}</mechanism>" for name in self.mechanism_names())
        features = f"<mechanisms xmlns='{NS_SASL}'>{items}</mechanisms>"
        inline = "".join(f"<feature var={quoteattr(var)}/>" for var in self._inline_features())
        bind = f"<bind xmlns='{NS_BIND2}'><inline>{inline}</inline></bind>" if inline else f"<bind xmlns='{NS_BIND2}'/>"
        fast = "".join(f"<mechanism>{name}</mechanism>" for name in self.fast_mechanism_names())
        if fast:
            bind += f"<fast xmlns='{NS_FAST}'>{fast}</fast>"
        if self.settings.sasl2_inline_features:
            bind += "".join(f.decode() for f in self.settings.sasl2_inline_features())
        features += f"<authentication xmlns='{NS_SASL2}'>{items}<inline>{bind}</inline></authentication>"
        if self.tls_active and self.settings.channel_binding:
            types = "".join(f"<channel-binding type='{kind}'/>" for kind in self.settings.channel_binding)
            features += f"<sasl-channel-binding xmlns='{NS_SASL_CB}'>{types}</sasl-channel-binding>"
        return features

    def _extra_features(self, authenticated: bool) -> list[bytes]:
        return self.settings.extra_features(authenticated) if self.settings.extra_features else []

    def _inline_features(self) -> list[str]:
        return self.settings.inline_features() if self.settings.inline_features else []

    def _bind_features(self) -> str:
        """The features of an authenticated stream that has no resource yet."""
        features = f"<bind xmlns='{NS_BIND}'/><session xmlns='{NS_SESSION}'><optional/></session>"
        return features + "".join(f.decode() for f in self._extra_features(True))

    def _username(self, name: str) -> str:
        try:
            local = JID.parse(f"{name}@{self.domain}").local
        except InvalidJID:
            raise SaslFailure("not-authorized") from None
        assert local is not None  # JID.parse refuses an empty localpart
        return local

    def _succeed(self, username: str, server_final: bytes | None) -> list[Action]:
        assert self.domain is not None  # SASL runs on an accepted stream header
        self.authenticated = JID(username, self.domain)
        self._mechanism = None
        if self._namespace == NS_SASL2:
            return self._sasl2_succeeded(server_final)
        text = base64.b64encode(server_final).decode() if server_final else None
        success = _sasl("success", text)
        self.state = State.AWAIT_STREAM
        self.header_sent = False
        return [SendBytes(success), Authenticated(self.authenticated, self._mechanism_name)]

    def _sasl2_succeeded(self, server_final: bytes | None) -> list[Action]:
        """XEP-0388 2.6.1: the <success/> waits for what the caller adds to it."""
        jid = self.authenticated
        assert jid is not None  # set by _succeed
        self._additional_data = server_final
        self.state = State.BINDING
        request = self._bind_request
        tag = (request.findtext(f"{{{NS_BIND2}}}tag") or "").strip() or None if request is not None else None
        fast = self._fast
        complete = CompleteSasl2(
            jid,
            self._user_agent,
            request,
            tag,
            self._token_request,
            self._token_used,
            self._mechanism_name,
            fast is not None and self._token_used is not None and fast.get("invalidate") in ("true", "1"),
            self._inline,
        )
        return [Authenticated(jid, self._mechanism_name, restart=False), complete]

    def _sasl_failed(self, condition: str, text: str | None = None) -> list[Action]:
        self._auth_attempts += 1
        username, self._pending_username, self._mechanism = self._pending_username, None, None
        self.state = State.AWAIT_AUTH
        out: list[Action] = [
            AuthFailed(username, condition, self._mechanism_name),
            SendBytes(_failure(condition, text, self._namespace)),
        ]
        if self._auth_attempts >= MAX_AUTH_ATTEMPTS:
            out += self._error("policy-violation", "too many authentication attempts")
        return out

    def _header(self, domain: str) -> bytes:
        self.header_sent = True
        self.stream_id = secrets.token_urlsafe(12)
        return stream_header(from_=domain, id=self.stream_id)

    def _error(self, condition: str, text: str | None = None) -> list[Action]:
        out: list[Action] = []
        if not self.header_sent:
            out.append(
                SendBytes(
                    stream_header(from_=self.domain or sorted(self.settings.domains)[0], id=secrets.token_urlsafe(12))
                )
            )
            self.header_sent = True
        self.state = State.CLOSED
        out += [SendBytes(stream_error(condition, text) + STREAM_CLOSE), CloseStream()]
        return out

    def _expect(self, state: State) -> None:
        if self.state is not state:
            raise LocalProtocolError(f"expected state {state.value}, in {self.state.value}")


def _decode(text: str | None) -> bytes:
    text = (text or "").strip()
    if text in ("", "="):
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SaslFailure("incorrect-encoding") from None
