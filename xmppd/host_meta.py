"""XEP-0156 Discovering Alternative XMPP Connection Methods, by HTTP.

GET /.well-known/host-meta (XRD, RFC 6415) and /.well-known/host-meta.json list the
endpoints a web client connects to: the RFC 7395 WebSocket (xmppd/websocket.py) at
[http] public_url, and the XEP-0206 BOSH one (xmppd/bosh.py), while they are on. Any page
may read them (Access-Control-Allow-Origin: *): a web client served from elsewhere finds
its server's endpoint this way.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING
from xml.sax.saxutils import quoteattr

from aiohttp import web

from xmppd import bosh, websocket

if TYPE_CHECKING:
    from xmppd.config import Config
    from xmppd.http import HttpServer

NS_XRD = "http://docs.oasis-open.org/ns/xri/xrd-1.0"
REL_WEBSOCKET = "urn:xmpp:alt-connections:websocket"
REL_BOSH = "urn:xmpp:alt-connections:xbosh"
CORS = {"Access-Control-Allow-Origin": "*"}


class HostMeta:
    def __init__(self, config: Config, http: HttpServer):
        self.http = http
        urls = [
            (REL_WEBSOCKET, websocket.endpoint_url(config, http.public_url)),
            (REL_BOSH, bosh.endpoint_url(config, http.public_url)),
        ]
        self.links = [(rel, url) for rel, url in urls if url]

    def add_routes(self) -> None:
        self.http.add_route("GET", "/.well-known/host-meta", self.serve_xrd)
        self.http.add_route("GET", "/.well-known/host-meta.json", self.serve_json)

    async def serve_xrd(self, request: web.Request) -> web.Response:
        links = "".join(f"<Link rel={quoteattr(rel)} href={quoteattr(href)}/>" for rel, href in self.links)
        body = f"<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='{NS_XRD}'>{links}</XRD>\n"
        return web.Response(text=body, content_type="application/xrd+xml", headers=CORS)

    async def serve_json(self, request: web.Request) -> web.Response:
        body = json.dumps({"links": [{"rel": rel, "href": href} for rel, href in self.links]})
        return web.Response(text=body, content_type="application/json", headers=CORS)
