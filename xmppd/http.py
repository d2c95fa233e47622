"""The HTTP(S) server inside xmppd (aiohttp), shared by every feature that speaks HTTP.

It listens on the `[http]` interfaces: plain HTTP on `port` (loopback by default, for a
reverse proxy in front or local tools) and HTTPS on `tls_port` with the certificate of
the XMPP streams; 0 turns either off. Features add their routes while the extensions
load, before the server starts (aiohttp freezes the routes then; a later `add_route`
raises RuntimeError):

    self.server.http.add_route("GET", "/health", handler)

`public_url` is the base of the links the server hands out (upload slots), and
`signing_key` the secret that signs them: `[http] secret` when set (every node of a
cluster needs the same one), else 32 random bytes made once and kept in
`<data_dir>/http.key` (mode 0600).
"""
from __future__ import annotations

import logging
import os
import secrets
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from xmppd.config import ConfigError

if TYPE_CHECKING:
    from xmppd.server import Server

log = logging.getLogger(__name__)

KEY_FILE = "http.key"


class HttpServer:
    def __init__(self, server: "Server"):
        self.config = server.config
        self.options = server.config.http
        self.app = web.Application()
        self._runner: web.AppRunner | None = None
        self._signing_key: bytes | None = None

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
        timeout = self.config.server.graceful_shutdown_timeout
        # No access log: a line per request (and its URL, which holds a slot id) is
        # more than the server's logs should carry.
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        for interface in self.options.interfaces:
            if self.options.port:
                await web.TCPSite(self._runner, interface, self.options.port, reuse_address=True,
                                  shutdown_timeout=timeout).start()
            if self.options.tls_port:
                await web.TCPSite(self._runner, interface, self.options.tls_port, reuse_address=True,
                                  ssl_context=ssl_context, shutdown_timeout=timeout).start()

    async def stop(self) -> None:
        """Stop listening, let requests in progress finish (up to the graceful
        shutdown timeout), then close."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def listening(self) -> list[str]:
        if self._runner is None:
            return []
        return [site.name for site in self._runner.sites]       # http://127.0.0.1:5280, https://...


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
        os.link(temporary, path)      # fails if another process made the key meanwhile
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
