"""Configuration: conf/xmppd.toml read into frozen dataclasses at start-up.

Every error names the file and the key path and suggests the nearest valid key; nothing
is clamped silently. Sections:

    [server]   ServerOptions        [c2s]  C2SOptions        [tls]  TlsOptions
    [[hosts]]  HostOptions          [storage] StorageOptions (+ [storage.<backend>])
    [http]     HttpOptions          [extensions.<name>] the extension's own Options
    [components] ComponentsOptions (XEP-0114)
    [websocket] WebSocketOptions (RFC 7395)    [bosh] BoshOptions (XEP-0124, XEP-0206)
    [cluster]  ClusterOptions
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import socket
import tomllib
import types
import typing
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DATA_DIR = "~/.local/share/xmppd"


class ConfigError(Exception):
    """A bad config: the message names the file and the key."""


@dataclass(frozen=True)
class ServerOptions:
    data_dir: str = DEFAULT_DATA_DIR  # SQLite database, uploads, certificates, admin socket
    log_level: str = "info"  # debug | info | warning | error
    log_format: str = "text"  # text (key=value) | json
    admin_socket: str = ""  # default: <data_dir>/admin.sock
    extensions: tuple[str, ...] = ()  # default: every bundled extension
    graceful_shutdown_timeout: float = 10.0
    shutdown_delay: float = 0.0  # seconds /health answers 503 before a shutdown closes anything

    def validate(self, where):
        where.one_of("log_level", self.log_level, ("debug", "info", "warning", "error"))
        where.one_of("log_format", self.log_format, ("text", "json"))
        where.check("shutdown_delay", self.shutdown_delay >= 0, "must not be negative")


@dataclass(frozen=True)
class C2SOptions:
    interfaces: tuple[str, ...] = ("127.0.0.1",)
    port: int = 5222  # STARTTLS
    direct_tls_port: int = 5223  # XEP-0368; 0 disables
    require_encryption: bool = True  # false allows plain text from loopback peers only
    max_stanza_bytes: int = 262144
    unauthenticated_timeout: float = 60.0  # seconds to finish authentication and bind
    max_unauthenticated_per_ip: int = 100  # when full, the oldest one is closed for a new one
    max_unauthenticated: int = 2000  # the same, over all addresses
    max_sessions_per_ip: int = 0  # authenticated (and hibernating) sessions; 0: no limit
    ipv6_prefix: int = 64  # an IPv6 address counts as its /ipv6_prefix network
    auth_failures_per_ip: int = 30  # budgets of failed logins, refilled over auth_failure_window
    auth_failures_per_account: int = 10  # per account and address
    auth_failure_window: float = 600.0
    max_output_buffer: int = 1024 * 1024  # unsent output past which a client gets nothing more for now
    max_held_bytes: int = 512 * 1024  # stanzas held in memory for a client with no room
    stall_timeout: float = 300.0  # seconds a client may take nothing; 0: forever
    auth_failure_delay: float = 1.0  # grows per recent failure from one address
    max_resources_per_account: int = 10  # bound resources, hibernating XEP-0198 sessions included

    # Keys of earlier versions: naming one stops start-up with what replaces it.
    REPLACED = {"max_connections_per_ip": "max_unauthenticated_per_ip, max_unauthenticated and max_sessions_per_ip"}

    def validate(self, where):
        for key in ("port", "direct_tls_port"):
            where.check(key, 0 <= getattr(self, key) < 65536, "must be a port number (0-65535)")
        where.check("max_stanza_bytes", self.max_stanza_bytes >= 10000, "must be at least 10000")
        for key in (
            "max_unauthenticated_per_ip",
            "max_unauthenticated",
            "auth_failures_per_ip",
            "auth_failures_per_account",
        ):
            where.check(key, getattr(self, key) > 0, "must be positive")
        where.check("max_sessions_per_ip", self.max_sessions_per_ip >= 0, "must not be negative (0: no limit)")
        where.check("ipv6_prefix", 1 <= self.ipv6_prefix <= 128, "must be a prefix length (1-128)")
        where.check("auth_failure_window", self.auth_failure_window > 0, "must be positive")
        where.check("auth_failure_delay", self.auth_failure_delay >= 0, "must not be negative")
        for key in ("max_output_buffer", "max_held_bytes"):
            where.check(key, getattr(self, key) >= 65536, "must be at least 65536")
        where.check("stall_timeout", self.stall_timeout >= 0, "must not be negative")
        where.check("max_resources_per_account", self.max_resources_per_account > 0, "must be positive")


@dataclass(frozen=True)
class TlsOptions:
    certificate: str = ""  # PEM; default <data_dir>/<first domain>.crt
    key: str = ""  # PEM; default <data_dir>/<first domain>.key
    min_version: str = "1.2"

    def validate(self, where):
        where.one_of("min_version", self.min_version, ("1.2", "1.3"))


@dataclass(frozen=True)
class HostOptions:
    domain: str = "localhost"
    admins: tuple[str, ...] = ()  # bare JIDs allowed the XEP-0133 commands


@dataclass(frozen=True)
class StorageOptions:
    default: str = "sqlite"  # backend for every store not named below
    archive: str = ""  # backend of the message archives (MAM, offline)
    media: str = "filesystem"  # filesystem | s3


@dataclass(frozen=True)
class HttpOptions:
    interfaces: tuple[str, ...] = ("127.0.0.1",)
    port: int = 5280  # plain HTTP (loopback by default); 0 disables
    tls_port: int = 5443  # HTTPS; 0 disables
    public_url: str = ""  # default https://<first domain>:<tls_port>
    secret: str = field(default="", repr=False)  # signs upload URLs; default: made once in <data_dir>/http.key
    metrics_allow: tuple[str, ...] = ("127.0.0.1", "::1")  # addresses/networks that may read /metrics
    head_timeout: float = 20.0  # seconds for the TLS handshake and each request head
    body_timeout: float = 20.0  # seconds a request body has, plus 1 per min_body_rate bytes
    min_body_rate: int = 1024  # bytes per second
    max_connections_per_ip: int = 32  # IPv6: per /64
    max_connections: int = 512

    def validate(self, where):
        for key in ("port", "tls_port"):
            where.check(key, 0 <= getattr(self, key) < 65536, "must be a port number (0-65535)")
        for key in ("head_timeout", "body_timeout", "min_body_rate", "max_connections_per_ip", "max_connections"):
            where.check(key, getattr(self, key) > 0, "must be positive")
        where.check(
            "public_url",
            not self.public_url or self.public_url.startswith(("https://", "http://")),
            "must be an https:// (or http://) URL",
        )
        where.check("secret", not self.secret or len(self.secret) >= 16, "must be at least 16 characters")
        for index, network in enumerate(self.metrics_allow):
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                where.fail(f"metrics_allow[{index}]", f'{network!r} is not an IP address or network ("10.0.0.0/8")')

    @property
    def metrics_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(network, strict=False) for network in self.metrics_allow)


@dataclass(frozen=True)
class ComponentsOptions:
    """XEP-0114 external components (gateways, bots). As Prosody's component_ports, the
    listener is on loopback at 5347, and it opens only when a component is configured."""

    interfaces: tuple[str, ...] = ("127.0.0.1",)
    port: int = 5347  # 0 disables the listener
    secrets: dict[str, str] = field(default_factory=dict, repr=False)  # component domain -> shared secret
    max_stanza_bytes: int = 262144
    handshake_timeout: float = 30.0  # seconds a connection has to open its stream and authenticate
    max_output_buffer: int = 4 * 1024 * 1024  # unsent output past which stanzas to the component bounce

    def validate(self, where):
        from xmppd.protocol.jid import JID, InvalidJID

        where.check("port", 0 <= self.port < 65536, "must be a port number (0-65535)")
        where.check("max_stanza_bytes", self.max_stanza_bytes >= 10000, "must be at least 10000")
        where.check("handshake_timeout", self.handshake_timeout > 0, "must be positive")
        where.check("max_output_buffer", self.max_output_buffer >= 65536, "must be at least 65536")
        for domain, secret in self.secrets.items():
            try:
                is_domain = JID.parse(domain).is_host
            except InvalidJID:
                is_domain = False
            where.check(f"secrets.{domain!r}", is_domain, "must be a domain name (gateway.example.org)")
            where.check(
                f"secrets.{domain!r}",
                isinstance(secret, str) and len(secret) >= 16,
                "must be a string of at least 16 characters",
            )


@dataclass(frozen=True)
class WebSocketOptions:
    path: str = "/xmpp-websocket"  # RFC 7395 endpoint on the [http] server; "" turns it off
    allowed_origins: tuple[str, ...] = ()  # browser Origins allowed; empty: [http] public_url's only; "*": any

    def validate(self, where):
        where.check(
            "path",
            not self.path or (self.path.startswith("/") and len(self.path) > 1),
            'must be a path such as "/xmpp-websocket" (or "" to turn WebSocket off)',
        )
        check_origins(self.allowed_origins, where)


def check_origins(origins: tuple[str, ...], where) -> None:
    """`allowed_origins` of the HTTP endpoints browsers use: origins, or "*"."""
    for index, origin in enumerate(origins):
        parts = urllib.parse.urlsplit(origin)
        where.check(
            f"allowed_origins[{index}]",
            origin == "*"
            or (
                parts.scheme in ("https", "http")
                and parts.hostname
                and parts.path in ("", "/")
                and not parts.query
                and not parts.fragment
            ),
            f'{origin!r} is not an origin ("https://chat.example.org") nor "*"',
        )


@dataclass(frozen=True)
class BoshOptions:
    path: str = "/http-bind"  # XEP-0124/0206 endpoint on the [http] server; "" turns it off
    allowed_origins: tuple[str, ...] = ()  # browser Origins allowed; empty: [http] public_url's only; "*": any
    max_wait: int = 60  # seconds a request may be held (the client's 'wait' may be less)
    max_hold: int = 1  # requests held at once (the client's 'hold' may be less)
    inactivity: int = 60  # seconds without a request before the session is dropped
    polling: int = 5  # shortest interval between two empty polls
    max_pause: int = 300  # longest 'pause' a client may ask for

    def validate(self, where):
        where.check(
            "path",
            not self.path or (self.path.startswith("/") and len(self.path) > 1),
            'must be a path such as "/http-bind" (or "" to turn BOSH off)',
        )
        check_origins(self.allowed_origins, where)
        where.check("max_wait", 1 <= self.max_wait <= 3600, "must be 1 to 3600 seconds")
        where.check("max_hold", 1 <= self.max_hold <= 8, "must be 1 to 8")
        where.check("inactivity", 2 <= self.inactivity <= 3600, "must be 2 to 3600 seconds")
        where.check("polling", 0 <= self.polling <= self.inactivity, "must be 0 to inactivity seconds")
        where.check("max_pause", self.inactivity <= self.max_pause <= 86400, "must be inactivity to 86400 seconds")


@dataclass(frozen=True)
class ClusterOptions:
    engine: str = ""  # redis:// URL of the cluster engine; "": a single node
    node: str = ""  # this node's name; default <host name>:<c2s port>
    heartbeat: float = 1.0  # seconds between liveness refreshes and checks
    node_timeout: float = 5.0  # seconds after its last refresh that a silent node is dead

    def validate(self, where):
        where.check(
            "engine",
            not self.engine or self.engine.startswith(("redis://", "rediss://", "unix://")),
            'must be a redis://, rediss:// or unix:// URL, or "" for a single node',
        )
        where.check("heartbeat", self.heartbeat > 0, "must be positive")
        where.check(
            "node_timeout",
            self.node_timeout > 2 * self.heartbeat,
            "must be more than twice cluster.heartbeat (a live node refreshes in time)",
        )


# Stores kept in one process: several nodes cannot share them.
PROCESS_LOCAL_BACKENDS = ("sqlite", "memory")


@dataclass(frozen=True)
class Config:
    server: ServerOptions = ServerOptions()
    c2s: C2SOptions = C2SOptions()
    tls: TlsOptions = TlsOptions()
    http: HttpOptions = HttpOptions()
    components: ComponentsOptions = ComponentsOptions()
    websocket: WebSocketOptions = WebSocketOptions()
    bosh: BoshOptions = BoshOptions()
    hosts: tuple[HostOptions, ...] = (HostOptions(),)
    storage: StorageOptions = StorageOptions()
    cluster: ClusterOptions = ClusterOptions()
    backend_options: dict = field(default_factory=dict)  # backend kind -> its Options
    extension_options: dict = field(default_factory=dict)  # extension name -> its raw table
    source: str = "<defaults>"

    @property
    def data_dir(self) -> Path:
        return Path(os.path.expanduser(self.server.data_dir))

    @property
    def admin_socket(self) -> Path:
        return Path(self.server.admin_socket) if self.server.admin_socket else self.data_dir / "admin.sock"

    @property
    def certificate(self) -> Path:
        return Path(self.tls.certificate) if self.tls.certificate else self.data_dir / f"{self.hosts[0].domain}.crt"

    @property
    def private_key(self) -> Path:
        return Path(self.tls.key) if self.tls.key else self.data_dir / f"{self.hosts[0].domain}.key"

    @property
    def node_name(self) -> str:
        return self.cluster.node or f"{socket.gethostname()}:{self.c2s.port}"


class Where:
    """A position in the config file, for error messages."""

    def __init__(self, source: str, path: str):
        self.source, self.path = source, path

    def key(self, name) -> str:
        return f"{self.path}.{name}" if self.path else str(name)

    def fail(self, name, message):
        raise ConfigError(f"{self.source}: {self.key(name)}: {message}")

    def check(self, name, condition, message):
        if not condition:
            self.fail(name, message)

    def component_domain(self, name, template: str):
        """A component's domain template, where {host} stands for the user host's domain."""
        from xmppd.protocol.jid import JID, InvalidJID

        try:
            jid = JID.parse(template.format(host="example.org"))
        except (InvalidJID, KeyError, IndexError, ValueError):
            jid = None
        if jid is None or not jid.is_host:
            self.fail(name, f"must be a domain name, where {{host}} stands for the user host: {template!r}")

    def one_of(self, name, value, choices):
        self.check(name, value in choices, f"must be one of {', '.join(map(repr, choices))}, not {value!r}")


def _convert(value, kind, where: Where, name):
    """Check `value` against the annotation `kind`; tuples come from TOML arrays."""
    origin = typing.get_origin(kind)
    if kind is typing.Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, where, name)
            except ConfigError:
                pass
        where.fail(name, f"has the wrong type {type(value).__name__}")
    if origin is tuple:
        if not isinstance(value, list):
            where.fail(name, f"must be an array, not {type(value).__name__}")
        item = typing.get_args(kind)[0]
        return tuple(_convert(v, item, where, f"{name}[{i}]") for i, v in enumerate(value))
    if origin is dict or kind is dict:
        if not isinstance(value, dict):
            where.fail(name, f"must be a table, not {type(value).__name__}")
        return dict(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind in (int, float) and isinstance(value, bool) or not isinstance(value, kind):
        where.fail(name, f"must be {kind.__name__}, not {type(value).__name__} ({value!r})")
    return value


def build(cls, table: dict, where: Where):
    """Make the frozen dataclass `cls` from a TOML table, strictly."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where.source}: {where.path}: must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for name, value in table.items():
        if name in getattr(cls, "REPLACED", {}):
            where.fail(name, f"no longer exists; use {cls.REPLACED[name]} instead")
        if name not in fields:
            close = difflib.get_close_matches(name, fields, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(sorted(fields))}"
            where.fail(name, f"unknown key{hint}")
        values[name] = _convert(value, hints[name], where, name)
    options = cls(**values)
    if hasattr(options, "validate"):
        options.validate(where)
    return options


MEDIA_BACKENDS = ("filesystem", "s3")
SECTIONS = {
    "server": ServerOptions,
    "c2s": C2SOptions,
    "tls": TlsOptions,
    "http": HttpOptions,
    "components": ComponentsOptions,
    "websocket": WebSocketOptions,
    "bosh": BoshOptions,
    "cluster": ClusterOptions,
}


def parse(data: dict, source: str) -> Config:
    top = Where(source, "")
    known = set(SECTIONS) | {"hosts", "storage", "extensions"}
    for name in data:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            top.fail(name, "unknown section" + (f"; did you mean {close[0]!r}?" if close else ""))
    sections = {name: build(cls, data.get(name, {}), Where(source, name)) for name, cls in SECTIONS.items()}

    raw_hosts = data.get("hosts", [{}])
    if not isinstance(raw_hosts, list) or not raw_hosts:
        top.fail("hosts", "must be an array of tables ([[hosts]]) with at least one host")
    hosts = tuple(build(HostOptions, h, Where(source, f"hosts[{i}]")) for i, h in enumerate(raw_hosts))
    domains = [h.domain for h in hosts]
    if len(set(domains)) != len(domains):
        top.fail("hosts", "a domain appears twice")

    storage_table = dict(data.get("storage", {}))
    backend_tables = {k: storage_table.pop(k) for k in list(storage_table) if isinstance(storage_table[k], dict)}
    storage = build(StorageOptions, storage_table, Where(source, "storage"))
    backend_options = {}
    for kind in {storage.default, storage.archive or storage.default, storage.media} | set(backend_tables):
        backend_options[kind] = _backend_options(kind, backend_tables.get(kind, {}), Where(source, f"storage.{kind}"))

    if sections["cluster"].engine:
        for key in ("default", "archive"):
            if getattr(storage, key) in PROCESS_LOCAL_BACKENDS:
                top.fail(
                    f"storage.{key}",
                    f"{getattr(storage, key)!r} keeps its data in one process; with "
                    "cluster.engine set every node needs the same storage (cassandra)",
                )

    extensions = data.get("extensions", {})
    if not isinstance(extensions, dict) or not all(isinstance(v, dict) for v in extensions.values()):
        top.fail("extensions", "must hold one table per extension ([extensions.<name>])")
    return Config(
        hosts=hosts,
        storage=storage,
        backend_options=backend_options,
        extension_options=extensions,
        source=source,
        **sections,
    )


def _backend_options(kind: str, table: dict, where: Where):
    from xmppd.storage import backend_module

    try:
        module = backend_module(f"media.{kind}" if kind in MEDIA_BACKENDS else kind)
    except ImportError as exc:
        raise ConfigError(f"{where.source}: {where.path}: unknown storage backend {kind!r} ({exc})") from None
    return build(module.Options, table, where)


def load(path: str | os.PathLike | None) -> Config:
    """Read the config file, or the embedded defaults when path is None."""
    if path is None:
        return parse({}, "<defaults>")
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse(data, str(path))
