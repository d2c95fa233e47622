"""The server: storage, hosts and their extensions, TLS, listeners, graceful shutdown.

Its `state` goes "new" -> "starting" -> "serving" -> "stopping" (what /health reports);
systemd hears READY=1 and STOPPING=1 at those steps (xmppd/systemd.py).
"""
from __future__ import annotations

import asyncio
import difflib
import pkgutil
import logging
import resource
import ssl
import time
import weakref

from xmppd import certs, systemd, tls
from xmppd.admin import AdminSocket
from xmppd.c2s import C2SConnection
from xmppd.config import Config, ConfigError, Where, build
from xmppd.host import Host
from xmppd.http import HttpServer
from xmppd.metrics import CONNECTIONS_ACCEPTED, LIMIT_REACHED, CountedMedia, Metrics, TimedBackend
from xmppd.monitoring import Monitoring
from xmppd.protocol.negotiation import State
from xmppd.roster_cache import CachedRosters
from xmppd.router import CoreDelivery, Router
from xmppd.storage import open_backend
from xmppd.storage.media import open_media
from xmppd.throttle import AuthThrottle
from xmppd.transport import Transport

log = logging.getLogger(__name__)

# Seconds a connection to the XEP-0368 port has to complete its TLS handshake (a real
# client needs well under one). The loop does the handshake, so a socket is counted
# among the unauthenticated ones from its end: this bounds how long one held open
# without a handshake keeps its file descriptor.
TLS_HANDSHAKE_TIMEOUT = 10.0

def bundled_extensions() -> list[str]:
    """Every module or package of xmppd.extensions: the default when the config names none."""
    import xmppd.extensions
    return sorted(module.name for module in pkgutil.iter_modules(xmppd.extensions.__path__))


class Server:
    def __init__(self, config: Config):
        self.config = config
        self.user_domains = [h.domain for h in config.hosts]
        self.hosts: dict[str, Host] = {}
        self.router = Router(self)
        self.metrics = Metrics()
        self.auth_throttle = AuthThrottle(config.c2s)
        self.ssl_context: ssl.SSLContext | None = None
        self._end_point_hash: bytes | None = None
        self.storage = None
        self.archive_storage = None
        self.media = None                     # MediaStore: file bytes of HTTP uploads
        self.http = HttpServer(self)
        self.monitoring = Monitoring(self)
        self.state = "new"
        self._watchdog: asyncio.Task | None = None
        self.connections: set[C2SConnection] = set()
        # Connections not authenticated yet, oldest first:
        # per address group and in all.
        self._unauthenticated: dict[str, dict] = {}
        self._all_unauthenticated: dict = {}
        self._hibernating = weakref.WeakKeyDictionary()    # Session -> address group it was left from
        self._listeners: list[asyncio.AbstractServer] = []
        self._tasks: set[asyncio.Task] = set()
        self.admin = AdminSocket(self)

    # ------------------------------------------------------------- start-up

    async def open(self) -> None:
        """Storage, hosts and extensions: everything but the network (xmppctl uses this)."""
        cfg = self.config
        check_extensions(cfg)
        make_data_dir(cfg.data_dir)
        # The one place storage is measured: every store comes through these proxies.
        self.storage = TimedBackend(open_backend(cfg.storage.default, cfg.backend_options[cfg.storage.default],
                                                 str(cfg.data_dir)), self.metrics)
        await self.storage.start()
        self.storage.rosters = CachedRosters(self.storage.rosters)
        archive_kind = cfg.storage.archive or cfg.storage.default
        if archive_kind == cfg.storage.default:
            self.archive_storage = self.storage
        else:
            self.archive_storage = TimedBackend(open_backend(archive_kind, cfg.backend_options[archive_kind],
                                                             str(cfg.data_dir)), self.metrics)
            await self.archive_storage.start()
        self.media = CountedMedia(open_media(cfg.storage.media, cfg.backend_options.get(cfg.storage.media),
                                             str(cfg.data_dir)), self.metrics)
        names = cfg.server.extensions or bundled_extensions()
        for host_options in cfg.hosts:
            host = Host(self, host_options.domain, admins=host_options.admins)
            self.hosts[host.domain] = host
            CoreDelivery(host)
            for name in names:
                await host.load(name)

    def add_component(self, domain: str, parent: Host | None = None) -> Host:
        """A component domain (conference.<domain>, upload.<domain>) routed like a host;
        `parent` is the user host whose extension made it (its extensions find their
        shared state there)."""
        if domain in self.hosts:
            raise ConfigError(f"{self.config.source}: the domain {domain} is configured twice")
        host = Host(self, domain, is_component=True, parent=parent)
        self.hosts[domain] = host
        return host

    async def start(self) -> None:
        self.state = "starting"
        await self.open()
        self._raise_open_file_limit()
        self._setup_tls()
        await self.http.start(self.ssl_context)
        c2s = self.config.c2s
        for interface in c2s.interfaces:
            self._listeners.append(await asyncio.start_server(
                lambda r, w: self._accept(r, w, direct_tls=False), interface, c2s.port, reuse_address=True))
            if c2s.direct_tls_port:                 # XEP-0368: the loop does the handshake
                self._listeners.append(await asyncio.start_server(
                    lambda r, w: self._accept(r, w, direct_tls=True), interface, c2s.direct_tls_port,
                    reuse_address=True, ssl=self.ssl_context, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT))
        await self.admin.start()
        for host in list(self.hosts.values()):
            await host.bus.notify("server-started", self)
        self.state = "serving"
        systemd.notify(f"READY=1\nSTATUS=serving {', '.join(self.user_domains)}")
        interval = systemd.watchdog_interval()
        if interval:
            self._watchdog = asyncio.get_running_loop().create_task(systemd.watchdog(interval))

    def _raise_open_file_limit(self) -> None:
        """Every connection is a file descriptor: take the whole hard limit (a shell's soft
        limit is often 1024; the systemd unit sets LimitNOFILE), and say when the
        unauthenticated connections alone could use it up."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
                soft = hard
            except (ValueError, OSError):       # an unlimited hard limit the kernel caps lower
                pass
        if soft != resource.RLIM_INFINITY and self.config.c2s.max_unauthenticated > soft // 2:
            log.warning("event=open-file-limit-low limit=%d c2s.max_unauthenticated=%d: raise the limit "
                        "(LimitNOFILE) or lower max_unauthenticated", soft, self.config.c2s.max_unauthenticated)

    def _setup_tls(self) -> None:
        cert, key = self.config.certificate, self.config.private_key
        if not self.config.tls.certificate and not cert.exists():
            certs.make_self_signed(cert, key, self.user_domains)
            log.info("event=certificate-created path=%s", cert)
        try:
            self.ssl_context = tls.server_context(cert, key, self.config.tls.min_version)
            self._end_point_hash = tls.end_point_hash(cert)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"{self.config.source}: tls.certificate/tls.key: cannot load {cert} / {key}: {exc}") from None

    def channel_binding(self, ssl_object) -> dict[str, bytes]:
        """Channel-binding data that SCRAM-*-PLUS may use on this TLS connection."""
        return tls.channel_bindings(ssl_object, self._end_point_hash)

    async def _accept(self, reader, writer, *, direct_tls: bool) -> None:
        transport = Transport(reader, writer, max_output_buffer=self.config.c2s.max_output_buffer)
        group = self.auth_throttle.group(transport.peer)
        connection = C2SConnection(self, transport, direct_tls=direct_tls)
        self._count_unauthenticated(connection, group)
        self.connections.add(connection)
        self.metrics.count(CONNECTIONS_ACCEPTED, connection.listener)
        try:
            await connection.run()
        except Exception:
            log.exception("event=connection-crashed peer=%s", transport.peer)
        finally:
            self.connections.discard(connection)
            self._forget_unauthenticated(connection, group)
            session = connection.session
            if session is not None and session.connection is None and not session.closed:
                self._hibernating[session] = group

    def _count_unauthenticated(self, connection, group: str) -> None:
        self._make_room(group)
        self._unauthenticated.setdefault(group, {})[connection] = None
        self._all_unauthenticated[connection] = None

    def _make_room(self, group: str) -> None:
        """Close the oldest unauthenticated connection of the address group, or of all,
        when a new one would exceed max_unauthenticated_per_ip or max_unauthenticated:
        idle sockets cannot lock out the logins from an address, or from everywhere."""
        for pending, option, condition, text in (
                (self._unauthenticated.get(group, {}), "max_unauthenticated_per_ip",
                 "policy-violation", "too many unauthenticated connections from your address"),
                (self._all_unauthenticated, "max_unauthenticated",
                 "resource-constraint", "too many unauthenticated connections")):
            while len(pending) >= getattr(self.config.c2s, option):
                oldest = next(iter(pending))
                self.metrics.count(LIMIT_REACHED, f"c2s.{option}")
                self._forget_unauthenticated(oldest, self.auth_throttle.group(oldest.peer))
                oldest.close(condition, text)

    def _forget_unauthenticated(self, connection, group: str) -> None:
        pending = self._unauthenticated.get(group)
        if pending is not None:
            pending.pop(connection, None)
            if not pending:
                del self._unauthenticated[group]
        self._all_unauthenticated.pop(connection, None)

    def authenticated(self, connection: C2SConnection, jid) -> None:
        """`connection` logged in as `jid`: its attempt does not count against the login
        budgets, nor the connection against the unauthenticated ones."""
        self.auth_throttle.succeeded(connection.peer, str(jid))
        self._forget_unauthenticated(connection, self.auth_throttle.group(connection.peer))

    def too_many_sessions(self, connection: C2SConnection) -> bool:
        """Whether max_sessions_per_ip stops `connection` from authenticating: its address
        group has that many sessions, counting hibernating XEP-0198 sessions and other
        logins in progress (so that parallel logins cannot slip past the limit)."""
        limit = self.config.c2s.max_sessions_per_ip
        if not limit:
            return False
        group = self.auth_throttle.group(connection.peer)
        busy = (State.AWAIT_CREDENTIALS, State.CHECKING_PASSWORD, State.SASL_EXCHANGE)
        count = sum(1 for other in self.connections
                    if other is not connection and self.auth_throttle.group(other.peer) == group
                    and (other.negotiation.authenticated is not None or other.negotiation.state in busy))
        count += sum(1 for session, left_from in list(self._hibernating.items())
                     if left_from == group and session.connection is None and not session.closed)
        if count < limit:
            return False
        self.metrics.count(LIMIT_REACHED, "c2s.max_sessions_per_ip")
        return True

    def spawn(self, coroutine) -> asyncio.Task:
        """A background task owned by the server, cancelled at shutdown."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------- shutdown

    async def stop(self) -> None:
        """Report "stopping" (/health, systemd) and keep serving for `shutdown_delay`, stop
        accepting, tell every client <system-shutdown/>, wait, then close HTTP and storage."""
        if self.state in ("starting", "serving"):
            was_serving, self.state = self.state == "serving", "stopping"
            systemd.notify("STOPPING=1")
            if was_serving:
                await asyncio.sleep(self.config.server.shutdown_delay)
        self.state = "stopping"
        for listener in self._listeners:
            listener.close()
        await self.admin.stop()
        for connection in list(self.connections):
            connection.close("system-shutdown")
        deadline = time.monotonic() + self.config.server.graceful_shutdown_timeout
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self.http.stop()              # last: /health answers 503 while clients drain
        for host in list(self.hosts.values()):
            for session in [s for resources in list(host.sessions.values()) for s in list(resources.values())]:
                await host.end_session(session)
        for host in list(self.hosts.values()):
            await host.unload_all()
        for task in list(self._tasks):
            task.cancel()
        if self.media is not None:
            await self.media.close()
        if self.archive_storage is not None and self.archive_storage is not self.storage:
            await self.archive_storage.close()
        if self.storage is not None:
            await self.storage.close()
        if self._watchdog is not None:
            self._watchdog.cancel()

    def listening(self) -> list[str]:
        return ([f"{sock.getsockname()[0]}:{sock.getsockname()[1]}" for listener in self._listeners for sock in listener.sockets]
                + self.http.listening())


def make_data_dir(path) -> None:
    """The data directory (database, uploads, keys) made 0700 whatever the umask. One
    that exists keeps its mode (the admin's or the package's: the systemd unit's is
    0750), with a warning when any user of the machine may enter it."""
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        if path.stat().st_mode & 0o007:
            log.warning("event=data-dir-not-private path=%s fix='chmod o-rwx %s'", path, path)


def check_extensions(config: Config) -> None:
    """Every enabled extension exists and its [extensions.<name>] table is valid, checked
    before anything starts (and by `xmppd --check-config`)."""
    from xmppd.extension import extension_class
    names = config.server.extensions or bundled_extensions()
    enabled = set(names) | set(_all_dependencies(names, config.source))
    unknown = sorted(set(config.extension_options) - enabled)
    if unknown:
        close = difflib.get_close_matches(unknown[0], enabled, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{config.source}: extensions.{unknown[0]}: options for an extension that is not enabled{hint}")
    for name in sorted(enabled):
        options = extension_class(name).Options
        if options is not None:
            build(options, config.extension_options.get(name, {}), Where(config.source, f"extensions.{name}"))


def _all_dependencies(names, source: str) -> list[str]:
    from xmppd.extension import extension_class
    found = []
    for name in names:
        try:
            found += extension_class(name).depends
        except ImportError as exc:
            close = difflib.get_close_matches(name, bundled_extensions(), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{source}: server.extensions: unknown extension {name!r} ({exc}){hint}") from None
    return found
