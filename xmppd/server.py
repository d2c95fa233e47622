"""The server: storage, hosts and their extensions, TLS, listeners, graceful shutdown.

Its `state` goes "new" -> "starting" -> "serving" -> "stopping" (what /health reports);
systemd hears READY=1 and STOPPING=1 at those steps (xmppd/systemd.py).
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import pkgutil
import resource
import ssl
import time

from xmppd import certs, systemd
from xmppd.admin import AdminSocket
from xmppd.admission import Admission
from xmppd.bosh import BoshEndpoint
from xmppd.c2s import C2SConnection
from xmppd.component import Components
from xmppd.config import Config, ConfigError, Where, build
from xmppd.host import Host, Hosts
from xmppd.host_meta import HostMeta
from xmppd.http import HttpServer
from xmppd.metrics import CONNECTIONS_ACCEPTED, CountedMedia, Metrics, TimedBackend
from xmppd.monitoring import Monitoring
from xmppd.roster_cache import CachedRosters
from xmppd.router import CoreDelivery, Router
from xmppd.services import OpenStores, Services, TaskGroup
from xmppd.storage import open_backend
from xmppd.storage.media import open_media
from xmppd.tls import ServerTls
from xmppd.transport import Transport
from xmppd.websocket import WebSocketEndpoint

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
    """The composition root: builds the services once, hands them to the hosts, and runs
    the listeners. Nothing but the command line holds it."""

    def __init__(self, config: Config):
        self.config = config
        self.metrics = Metrics()
        self.directory = Hosts([h.domain for h in config.hosts])
        self.hosts = self.directory.by_domain
        self.user_domains = self.directory.user_domains
        self.router = Router(self.directory)
        self.tasks = TaskGroup()
        self.admission = Admission(config.c2s, self.metrics)
        self.tls: ServerTls | None = None
        self.stores: OpenStores | None = None
        self.http = HttpServer(config, self.metrics)
        self.state = "new"
        self._watchdog: asyncio.Task | None = None
        self._listeners: list[asyncio.AbstractServer] = []
        self.monitoring: Monitoring | None = None
        self.admin: AdminSocket | None = None
        self.components: Components | None = None
        self.cluster = None  # xmppd.cluster.Cluster when [cluster] engine is set

    @property
    def storage(self):
        return self.stores.backend if self.stores else None

    @property
    def connections(self) -> set[C2SConnection]:
        return self.admission.connections

    # ------------------------------------------------------------- start-up

    async def open(self) -> None:
        """Storage, hosts and extensions: everything but the network (xmppctl uses this)."""
        cfg = self.config
        check_extensions(cfg)
        make_data_dir(cfg.data_dir)
        # The one place storage is measured: every store comes through these proxies.
        storage = TimedBackend(
            open_backend(cfg.storage.default, cfg.backend_options[cfg.storage.default], str(cfg.data_dir)), self.metrics
        )
        await storage.start()
        if not cfg.cluster.engine:  # exact while this process is the rosters' only writer
            storage.rosters = CachedRosters(storage.rosters)
        archive_kind = cfg.storage.archive or cfg.storage.default
        archives = storage
        if archive_kind != cfg.storage.default:
            archives = TimedBackend(
                open_backend(archive_kind, cfg.backend_options[archive_kind], str(cfg.data_dir)), self.metrics
            )
            await archives.start()
        media = CountedMedia(
            open_media(cfg.storage.media, cfg.backend_options.get(cfg.storage.media), str(cfg.data_dir)), self.metrics
        )
        self.stores = OpenStores(storage, archives, media)
        self.services = Services(
            config=cfg,
            delivery=self.router,
            directory=self.directory,
            tasks=self.tasks,
            metrics=self.metrics,
            http=self.http,
            stores=self.stores,
        )
        self.monitoring = Monitoring(self.services, self)
        names = cfg.server.extensions or bundled_extensions()
        for host_options in cfg.hosts:
            host = self.directory.add(Host(self.services, host_options.domain, admins=host_options.admins))
            CoreDelivery(host)
            for name in names:
                await host.load(name)
        self.components = Components(self.services)  # XEP-0114

    async def start(self) -> None:
        self.state = "starting"
        await self.open()
        if self.config.cluster.engine:  # not in open(): xmppctl opens the hosts, it is no node
            from xmppd.cluster import Cluster

            cluster = Cluster(self.services, self.config.cluster)
            await cluster.start()
            self.cluster = cluster
        self._raise_open_file_limit()
        self._setup_tls()
        WebSocketEndpoint(self.config, self.http, self.serve).add_route()
        BoshEndpoint(self.config, self.http, self.serve).add_route()
        HostMeta(self.config, self.http).add_routes()
        await self.http.start(self.tls.context)
        c2s = self.config.c2s
        for interface in c2s.interfaces:
            self._listeners.append(
                await asyncio.start_server(
                    lambda r, w: self._accept(r, w, direct_tls=False), interface, c2s.port, reuse_address=True
                )
            )
            if c2s.direct_tls_port:  # XEP-0368: the loop does the handshake
                self._listeners.append(
                    await asyncio.start_server(
                        lambda r, w: self._accept(r, w, direct_tls=True),
                        interface,
                        c2s.direct_tls_port,
                        reuse_address=True,
                        ssl=self.tls.context,
                        ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
                    )
                )
        self._listeners += await self.components.listen()
        self.admin = AdminSocket(self.services, self)
        await self.admin.start()
        for host in self.directory.hosts():
            await host.bus.notify("server-started", self.services)
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
            except (ValueError, OSError):  # an unlimited hard limit the kernel caps lower
                pass
        if soft != resource.RLIM_INFINITY and self.config.c2s.max_unauthenticated > soft // 2:
            log.warning(
                "event=open-file-limit-low limit=%d c2s.max_unauthenticated=%d: raise the limit "
                "(LimitNOFILE) or lower max_unauthenticated",
                soft,
                self.config.c2s.max_unauthenticated,
            )

    def _setup_tls(self) -> None:
        cert, key = self.config.certificate, self.config.private_key
        if not self.config.tls.certificate and not cert.exists():
            certs.make_self_signed(cert, key, self.user_domains)
            log.info("event=certificate-created path=%s", cert)
        try:
            self.tls = ServerTls.load(cert, key, self.config.tls.min_version)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(
                f"{self.config.source}: tls.certificate/tls.key: cannot load {cert} / {key}: {exc}"
            ) from None

    async def _accept(self, reader, writer, *, direct_tls: bool) -> None:
        transport = Transport(reader, writer, max_output_buffer=self.config.c2s.max_output_buffer)
        await self.serve(transport, direct_tls=direct_tls)

    async def serve(self, transport, *, direct_tls: bool, websocket: bool = False, bosh: bool = False) -> None:
        """Run a client connection, TCP, WebSocket (xmppd/websocket.py) or BOSH
        (xmppd/bosh.py), to its end."""
        connection = C2SConnection(
            self.services, self.admission, self.tls, transport, direct_tls=direct_tls, websocket=websocket, bosh=bosh
        )
        self.admission.admit(connection)
        self.metrics.count(CONNECTIONS_ACCEPTED, connection.listener)
        try:
            await connection.run()
        except Exception:
            log.exception("event=connection-crashed peer=%s", transport.peer)
        finally:
            self.admission.release(connection)

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
        if self.admin is not None:
            await self.admin.stop()
        for connection in list(self.connections):
            connection.close("system-shutdown")
        if self.components is not None:
            self.components.close()
        deadline = time.monotonic() + self.config.server.graceful_shutdown_timeout
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self.http.stop()  # last: /health answers 503 while clients drain
        for host in self.directory.hosts():
            for session in [s for resources in list(host.sessions.values()) for s in list(resources.values())]:
                await host.end_session(session)
        if self.cluster is not None:
            await self.cluster.stop()
        for host in self.directory.hosts():
            await host.unload_all()
        self.tasks.cancel_all()
        if self.stores is not None:
            await self.stores.media.close()
            if self.stores.archive_backend is not self.stores.backend:
                await self.stores.archive_backend.close()
            await self.stores.backend.close()
        if self._watchdog is not None:
            self._watchdog.cancel()

    def listening(self) -> list[str]:
        return [
            f"{sock.getsockname()[0]}:{sock.getsockname()[1]}"
            for listener in self._listeners
            for sock in listener.sockets
        ] + self.http.listening()


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
        raise ConfigError(
            f"{config.source}: extensions.{unknown[0]}: options for an extension that is not enabled{hint}"
        )
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
