"""The HTTP(S) server inside xmppd (aiohttp), shared by every feature that speaks HTTP.

It listens on the `[http]` interfaces: plain HTTP on `port` (loopback by default, for a
reverse proxy in front or local tools) and HTTPS on `tls_port` with the certificate of
the XMPP streams; 0 turns either off. Features add their routes while the extensions
load, before the server starts (aiohttp freezes the routes then; a later `add_route`
raises RuntimeError):

    self.services.http.add_route("GET", "/health", handler)

`public_url` is the base of the links the server hands out (upload slots), and
`signing_key` the secret that signs them: `[http] secret` when set (every node of a
cluster needs the same one), else 32 random bytes made once and kept in
`<data_dir>/http.key` (mode 0600).

Its sockets share the process's file descriptors with the XMPP streams, so every
connection passes `Connection` before aiohttp sees it: refused past
`max_connections_per_ip` (IPv6: per /64) or `max_connections` (plain HTTP gets a 429 or
503 first; TLS is closed before any handshake work), and closed when its TLS handshake
and request head, or the wait for the next request, take longer than `head_timeout`
(408 when a request had begun); a connection upgraded to a WebSocket (xmppd/websocket.py)
leaves these caps for the c2s admission's. A handler that reads a body uses `body()`,
which cuts a client sending slower than `min_body_rate` after `body_timeout` seconds
(408). Responses name the server "xmppd", without versions.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import os
import secrets
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web
from yarl import URL

from xmppd.config import Config, ConfigError
from xmppd.metrics import LIMIT_REACHED

if TYPE_CHECKING:
    from xmppd.services import Metrics

log = logging.getLogger(__name__)

KEY_FILE = "http.key"
SERVER_NAME = "xmppd"  # the Server header: no software versions
READ_SIZE = 64 * 1024
MAX_UNREAD = 64 * 1024  # bytes kept for aiohttp before it takes the connection


class BodyTooSlow(Exception):
    """The request body fell behind [http] body_timeout and min_body_rate."""


class HttpServer:
    def __init__(self, config: Config, metrics: Metrics):
        self.config = config
        self.options = config.http
        self.metrics = metrics
        self.app = web.Application(middlewares=[self._track_request])
        self.app.on_response_prepare.append(_name_server)
        self._runner: web.AppRunner | None = None
        self._signing_key: bytes | None = None
        self._open = 0  # connections admitted
        self._per_address: collections.Counter = collections.Counter()
        self._connections: dict[asyncio.BaseTransport, Connection] = {}  # handed to aiohttp

    def add_route(self, method: str, path: str, handler) -> None:
        """Serve `method` requests for `path` (aiohttp syntax: "/files/{name}") with
        `async def handler(request) -> web.StreamResponse`."""
        self.app.router.add_route(method, path, handler)

    @property
    def public_url(self) -> str:
        """The base URL clients reach this server at, without a trailing slash."""
        if self.options.public_url:
            return self.options.public_url.rstrip("/")
        domain = self.config.hosts[0].domain
        if self.options.tls_port:
            return f"https://{domain}:{self.options.tls_port}"
        return f"http://{domain}:{self.options.port}"

    @property
    def signing_key(self) -> bytes:
        if self._signing_key is None:
            if self.options.secret:
                self._signing_key = self.options.secret.encode()
            else:
                self._signing_key = _load_or_create_key(self.config.data_dir / KEY_FILE)
        return self._signing_key

    async def start(self, ssl_context: ssl.SSLContext | None) -> None:
        self._runner = web.AppRunner(
            self.app, handle_signals=False, shutdown_timeout=self.config.server.graceful_shutdown_timeout
        )
        await self._runner.setup()
        for interface in self.options.interfaces:
            if self.options.port:
                await _Site(self, interface, self.options.port, None).start()
            if self.options.tls_port:
                await _Site(self, interface, self.options.tls_port, ssl_context).start()

    async def stop(self) -> None:
        """Stop listening, let requests in progress finish (up to the graceful
        shutdown timeout), then close."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def listening(self) -> list[str]:
        if self._runner is None:
            return []
        return [site.name for site in self._runner.sites]  # http://127.0.0.1:5280, https://...

    # ------------------------------------------------------------- limits

    def admit(self, address: str) -> tuple[int, str] | None:
        """Count a new connection from `address` in; (status, reason) if it is refused."""
        if self._open >= self.options.max_connections:
            self.metrics.count(LIMIT_REACHED, "http.max_connections")
            return 503, "the server has too many HTTP connections ([http] max_connections)"
        if self._per_address[address] >= self.options.max_connections_per_ip:
            self.metrics.count(LIMIT_REACHED, "http.max_connections_per_ip")
            return 429, "too many HTTP connections from your address ([http] max_connections_per_ip)"
        self._open += 1
        self._per_address[address] += 1
        return None

    def release(self, address: str) -> None:
        self._open -= 1
        self._per_address[address] -= 1
        if not self._per_address[address]:
            del self._per_address[address]

    def new_handler(self, connection: Connection, transport: asyncio.BaseTransport) -> web.RequestHandler:
        """aiohttp's protocol for an admitted connection. No access log: a line per
        request (and its URL, which holds a slot id) is more than the logs should carry."""
        self._connections[transport] = connection
        return _Handler(self._runner.server, loop=asyncio.get_running_loop(), access_log=None)

    def forget(self, transport: asyncio.BaseTransport) -> None:
        self._connections.pop(transport, None)

    def connection(self, request: web.Request) -> Connection | None:
        """The connection `request` came on (None once it is closed)."""
        return self._connections.get(request.transport)

    @web.middleware
    async def _track_request(self, request: web.Request, handler) -> web.StreamResponse:
        """Tell the connection that a request is being served (no head timeout meanwhile);
        answer a body that came too slowly with 408 and close its connection."""
        connection = self._connections.get(request.transport)
        if connection is None:  # closed meanwhile
            return await handler(request)
        connection.request_started()
        try:
            return await handler(request)
        except BodyTooSlow as slow:
            response = web.Response(status=408, text=f"{slow}\n", headers={"Connection": "close"})
            await response.prepare(request)
            await response.write_eof()
            connection.close()
            return response
        finally:
            connection.request_finished()

    async def body(self, request: web.Request) -> AsyncIterator[bytes]:
        """The request body as it arrives. It has `body_timeout` seconds, and one more for
        every `min_body_rate` bytes received: a client that trickles (slowloris) is cut
        with BodyTooSlow, which the server answers with 408."""
        loop = asyncio.get_running_loop()
        start, received = loop.time(), 0
        while True:
            deadline = start + self.options.body_timeout + received / self.options.min_body_rate
            try:
                async with asyncio.timeout_at(deadline):
                    chunk = await request.content.read(READ_SIZE)
            except TimeoutError:
                self.metrics.count(LIMIT_REACHED, "http.body_timeout")
                raise BodyTooSlow(
                    f"the body came slower than {self.options.min_body_rate} bytes a second "
                    "([http] body_timeout, min_body_rate)"
                ) from None
            if not chunk:
                return
            received += len(chunk)
            yield chunk


class Connection(asyncio.Protocol):
    """One HTTP connection, between its socket and aiohttp's protocol (`handler`): admitted
    under the connection caps, given `head_timeout` for its TLS handshake and each request
    head (and as the keep-alive time between requests), then handed every event."""

    def __init__(self, http: HttpServer, tls: ssl.SSLContext | None):
        self.http, self.tls = http, tls
        self.transport: asyncio.Transport | None = None
        self.handler: web.RequestHandler | None = None
        self.address = ""
        self.is_admitted = self.is_closed = False
        self.requests = 0  # served on this connection
        self.has_partial_request = False  # bytes received since the timer was armed
        self._timer: asyncio.TimerHandle | None = None
        self._handshake: asyncio.Task | None = None
        self._unread = b""
        self._is_paused = False  # the socket, while _unread is full
        self._writable: asyncio.Future | None = None  # while the transport's output is over its high-water mark

    # ------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.address = address_key(transport.get_extra_info("peername"))
        refused = self.http.admit(self.address)
        if refused is not None:
            if self.tls is None:
                transport.write(_plain_response(*refused))
            transport.close()
            return
        self.is_admitted = True
        self._arm()
        if self.tls is None:
            self._hand_over(transport)
        else:
            self._handshake = asyncio.get_running_loop().create_task(self._start_tls(transport))

    def data_received(self, data: bytes) -> None:
        self.has_partial_request = True
        if self.handler is not None:
            self.handler.data_received(data)
        else:
            # Before start_tls took the transport over, the ClientHello (uvloop reads
            # whatever connection_made does), which _start_tls hands on; after the
            # handshake and before the hand-over, the request, which _hand_over does.
            # A client may send a whole request, body and all, right after its TLS
            # Finished (Go does): past MAX_UNREAD the socket is not read until the
            # hand-over, which is the server's delay, not the client's fault.
            self._unread += data
            if len(self._unread) > MAX_UNREAD and not self._is_paused:
                self._is_paused = True
                self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        return self.handler.eof_received() if self.handler is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.is_closed:
            return
        self.is_closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self.is_admitted:
            self.http.release(self.address)
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)  # drained() then raises
        if self.handler is not None:
            self.http.forget(self.transport)
            self.handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()
        if self.handler is not None:
            self.handler.pause_writing()

    def resume_writing(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)
        if self.handler is not None:
            self.handler.resume_writing()

    # ------------------------------------------------------------- ours

    async def _start_tls(self, transport: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        if transport.is_closing():
            return
        handshake = loop.create_task(
            loop.start_tls(
                transport, self, self.tls, server_side=True, ssl_handshake_timeout=self.http.options.head_timeout
            )
        )
        while transport.get_protocol() is self and not handshake.done():
            await asyncio.sleep(0)  # start_tls puts its TLS protocol on the transport
        if self._unread and not handshake.done():
            _feed(transport.get_protocol(), self._unread)
        self._unread = b""
        try:
            secure = await handshake
        except Exception:
            # A failed handshake, or a peer gone before it began: the connection is
            # closed, or will be by the head timeout.
            return
        if not self.is_closed:
            self._hand_over(secure)

    def _hand_over(self, transport: asyncio.Transport) -> None:
        underlying, self.transport = self.transport, transport
        self.handler = self.http.new_handler(self, transport)
        self.handler.connection_made(transport)
        if self._unread:
            unread, self._unread = self._unread, b""
            self.handler.data_received(unread)
        if self._is_paused:  # aiohttp's own flow control from here on
            self._is_paused = False
            underlying.resume_reading()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.has_partial_request = False
        self._timer = asyncio.get_running_loop().call_later(self.http.options.head_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._timer = None
        if self.has_partial_request or not self.requests:
            # A request begun and not finished, or a connection that never sent one; an
            # idle keep-alive connection just ends.
            self.http.metrics.count(LIMIT_REACHED, "http.head_timeout")
            if self.handler is not None and self.has_partial_request:
                self.transport.write(_plain_response(408, "the request head took too long ([http] head_timeout)"))
        self.close()

    def request_started(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def request_finished(self) -> None:
        self.requests += 1
        if not self.is_closed:
            self._arm()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def drained(self) -> None:
        """Return once the output is below the transport's low-water mark; raises
        ConnectionError when the connection is lost meanwhile."""
        if self._writable is not None:
            await asyncio.shield(self._writable)
        if self.is_closed:
            raise ConnectionResetError("connection lost")

    def upgraded(self) -> None:
        """The connection became a WebSocket (xmppd/websocket.py): from now on the c2s
        admission counts it, not the HTTP connection caps."""
        if self.is_admitted:
            self.is_admitted = False
            self.http.release(self.address)


class _Handler(web.RequestHandler):
    def handle_error(self, request, status=500, exc=None, message=None) -> web.StreamResponse:
        """aiohttp's answer to a request it could not parse, without its versions: such
        requests never reach on_response_prepare."""
        response = super().handle_error(request, status, exc, message)
        response.headers["Server"] = SERVER_NAME
        return response


class _Site(web.BaseSite):
    """A listening socket whose connections go through `Connection`."""

    def __init__(self, http: HttpServer, host: str, port: int, tls: ssl.SSLContext | None):
        super().__init__(http._runner, ssl_context=tls)
        self._http, self._host, self._port = http, host, port

    @property
    def name(self) -> str:
        return str(URL.build(scheme="https" if self._ssl_context else "http", host=self._host, port=self._port))

    async def start(self) -> None:
        await super().start()
        self._server = await asyncio.get_running_loop().create_server(
            lambda: Connection(self._http, self._ssl_context),
            self._host,
            self._port,
            reuse_address=True,
            backlog=self._backlog,
        )


def _feed(protocol: asyncio.BaseProtocol, data: bytes) -> None:
    """Give `data` to `protocol` as if its transport had read it (uvloop's TLS protocol
    is buffered without deriving from asyncio.BufferedProtocol)."""
    if not hasattr(protocol, "get_buffer"):
        protocol.data_received(data)
        return
    view = memoryview(data)
    while view:
        buffer = protocol.get_buffer(len(view))
        size = min(len(buffer), len(view))
        buffer[:size] = view[:size]
        protocol.buffer_updated(size)
        view = view[size:]


async def _name_server(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER_NAME


def _plain_response(status: int, reason: str) -> bytes:
    """A whole HTTP/1.1 response that closes the connection, for answers given outside aiohttp."""
    body = f"{reason}\n".encode()
    return (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\nServer: {SERVER_NAME}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body


_REASONS = {408: "Request Timeout", 429: "Too Many Requests", 503: "Service Unavailable"}


def address_key(peername) -> str:
    """What the per-address cap counts: the IPv4 address (also when mapped into IPv6), or
    the /64 of an IPv6 address, which one subscriber usually holds whole."""
    try:
        address = ipaddress.ip_address(str(peername[0]).split("%")[0])
    except (TypeError, IndexError, ValueError):
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _load_or_create_key(path: Path) -> bytes:
    """The key in `path`; a new random one, written there first, if there is none."""
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(secrets.token_hex(32) + "\n")
        file.flush()
        os.fsync(file.fileno())
    try:
        os.link(temporary, path)  # fails if another process made the key meanwhile
        log.info("event=signing-key-created path=%s", path)
    except FileExistsError:
        pass
    finally:
        os.unlink(temporary)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    try:
        key = bytes.fromhex(path.read_text().strip())
    except ValueError:
        key = b""
    if len(key) < 16:
        raise ConfigError(f"{path}: not a signing key (64 hex digits); remove it to have a new one made")
    return key
