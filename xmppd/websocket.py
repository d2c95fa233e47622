"""RFC 7395 XMPP over WebSocket: the [websocket] endpoint of the HTTP server.

A web client opens `wss://<[http] public_url's host>/xmpp-websocket` offering the `xmpp`
subprotocol. The connection then runs the C2SConnection of TCP clients (xmppd/c2s.py)
over a WebSocketTransport (xmppd/transport.py), its messages framed as the RFC says
(xmppd/protocol/framing.py): the same negotiation, stanza size limit, unauthenticated
timeout, login throttles, admission per address, back-pressure and metrics (listener
"websocket"). Once upgraded it leaves the HTTP connection caps for the c2s admission.

Refused before the upgrade, with the reason in the body:
- 426: a request that is no WebSocket handshake;
- 400: a handshake without the `xmpp` subprotocol (the endpoint speaks nothing else);
- 403: an Origin that `allowed_origins` does not list. Browsers send the page's Origin;
  the check keeps other sites' pages from using their visitors' browsers. By default
  only the origin of [http] public_url may, as Prosody's mod_websocket allows only its
  own (cross_domain_websocket); "*" allows every origin. A handshake without Origin
  comes from no browser and is not checked: any other client could send any Origin.
- 403: plain HTTP, unless the peer is on loopback and [c2s] require_encryption is off,
  as for TCP. There is no STARTTLS: TLS is the WebSocket's (RFC 7395 section 3.9).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import hdrs, web
from yarl import URL

from xmppd.protocol.framing import frames
from xmppd.transport import WebSocketTransport, is_loopback_address

if TYPE_CHECKING:
    from xmppd.config import Config
    from xmppd.http import HttpServer

log = logging.getLogger(__name__)

SUBPROTOCOL = "xmpp"


def endpoint_url(config: Config, public_url: str) -> str | None:
    """The ws:// or wss:// URL clients open, from [http] public_url; None when off."""
    path = config.websocket.path
    if not path:
        return None
    url = URL(public_url)
    return str(url.with_scheme("wss" if url.scheme == "https" else "ws").with_path(url.path.rstrip("/") + path))


class WebSocketEndpoint:
    def __init__(self, config: Config, http: HttpServer, serve: Callable[..., Awaitable[None]]):
        self.config = config
        self.options = config.websocket
        self.http = http
        self.serve = serve  # Server.serve: admission, metrics, the connection's run
        origins = self.options.allowed_origins or (http.public_url,)
        self.any_origin = "*" in origins
        self.origins = frozenset(_origin(origin) for origin in origins if origin != "*")

    def add_route(self) -> None:
        if self.options.path:
            self.http.add_route("GET", self.options.path, self.accept)

    async def accept(self, request: web.Request) -> web.StreamResponse:
        refused = self._refusal(request)
        if refused is not None:
            status, reason = refused
            log.debug("event=websocket-refused peer=%s status=%d reason=%s", request.remote, status, reason)
            headers = {hdrs.UPGRADE: "websocket"} if status == 426 else None
            return web.Response(status=status, text=f"{reason}\n", headers=headers)
        c2s = self.config.c2s
        # Messages past twice the stanza limit are cut here (close code 1009); smaller
        # ones reach the stream, which answers one past the limit with its stream error.
        socket = web.WebSocketResponse(
            protocols=(SUBPROTOCOL,),
            compress=False,
            autoping=True,
            max_msg_size=2 * c2s.max_stanza_bytes,
            decode_text=False,
        )
        connection = self.http.connection(request)
        if connection is None:  # gone meanwhile
            return web.Response(status=400)
        await socket.prepare(request)
        connection.upgraded()
        transport = WebSocketTransport(socket, connection, encode=frames, max_output_buffer=c2s.max_output_buffer)
        await self.serve(transport, direct_tls=transport.ssl_object is not None, websocket=True)
        return socket

    def _refusal(self, request: web.Request) -> tuple[int, str] | None:
        if request.headers.get(hdrs.UPGRADE, "").lower() != "websocket":
            return 426, "this is an XMPP over WebSocket endpoint (RFC 7395)"
        offered = {token.strip() for token in request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "").split(",")}
        if SUBPROTOCOL not in offered:
            return 400, "the WebSocket subprotocol 'xmpp' (RFC 7395) is required"
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None and not self.any_origin and _origin(origin) not in self.origins:
            return 403, f"pages of {origin} may not connect here ([websocket] allowed_origins)"
        if request.transport is None:
            return 400, "the connection is gone"
        if request.transport.get_extra_info("ssl_object") is None and (
            self.config.c2s.require_encryption or not is_loopback_address(request.remote or "")
        ):
            return 403, "encryption is required: connect with wss:// ([c2s] require_encryption)"
        return None


def _origin(value: str) -> str:
    """An origin as browsers write it (lower-case, no default port); "" if it is none."""
    try:
        url = URL(value)
        return str(url.origin()) if url.absolute else ""
    except ValueError:
        return ""
