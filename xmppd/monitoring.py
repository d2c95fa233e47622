"""The operators' endpoints on xmppd's HTTP server (xmppd/http.py):

    GET /metrics   the Prometheus text format 0.0.4 (xmppd/metrics.py), for peers in
                   [http] metrics_allow (loopback by default), 403 for any other
    GET /health    200 {"status": "ok"} while the server serves and its storage answers a
                   read within HEALTH_TIMEOUT seconds; 503 otherwise: before start-up is
                   over, when storage fails or is slow, and from the first moment of a
                   shutdown, so that load balancers drain the node ([server]
                   shutdown_delay). Peers in metrics_allow also get "sessions": N and
                   "storage"; the rest of the world learns nothing of the server's load.

It also registers the gauges computed at each scrape: sessions and hibernating sessions
per host, open connections per listener.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import json
import logging
from typing import TYPE_CHECKING

from aiohttp import web

from xmppd import metrics

if TYPE_CHECKING:
    from xmppd.services import Node, Services

log = logging.getLogger(__name__)

HEALTH_TIMEOUT = 2.0  # seconds storage has to answer a health probe
PROBE_OWNER = "health-probe@invalid"  # an account that cannot exist (RFC 6761 .invalid)


class Monitoring:
    def __init__(self, services: Services, node: Node):
        self.services = services
        self.node = node
        self.allowed = services.config.http.metrics_networks
        services.http.add_route("GET", "/metrics", self.serve_metrics)
        services.http.add_route("GET", "/health", self.serve_health)
        services.metrics.gauge(metrics.SESSIONS, lambda: self._per_host(lambda session: True))
        services.metrics.gauge(
            metrics.SESSIONS_HIBERNATING, lambda: self._per_host(lambda session: session.connection is None)
        )
        services.metrics.gauge(
            metrics.SESSIONS_HELD_BACK,
            lambda: self._per_host(lambda session: session.connection is not None and session.behind),
        )
        services.metrics.gauge(metrics.CONNECTIONS_OPEN, self._connections)

    # ------------------------------------------------------------- /metrics

    async def serve_metrics(self, request: web.Request) -> web.Response:
        if not self.is_allowed(request.remote):
            return web.Response(status=403, text="/metrics is not served to this address ([http] metrics_allow)\n")
        return web.Response(
            body=self.services.metrics.render().encode(), headers={"Content-Type": metrics.CONTENT_TYPE}
        )

    def is_allowed(self, remote: str | None) -> bool:
        try:
            address = ipaddress.ip_address((remote or "").split("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # an IPv4 peer on a dual-stack "::" socket
        return any(address in network for network in self.allowed)

    def _per_host(self, counted) -> dict[tuple[str], int]:
        return {
            (host.domain,): sum(
                1 for resources in host.sessions.values() for session in resources.values() if counted(session)
            )
            for host in self.services.directory.hosts()
            if not host.is_component
        }

    def _connections(self) -> dict[tuple[str], int]:
        open_now = collections.Counter({"starttls": 0, "direct_tls": 0})
        open_now.update(connection.listener for connection in self.node.connections)
        return {(listener,): count for listener, count in open_now.items()}

    # ------------------------------------------------------------- /health

    async def serve_health(self, request: web.Request) -> web.Response:
        storage = await self.probe_storage()
        sessions = sum(
            len(resources) for host in self.services.directory.hosts() for resources in host.sessions.values()
        )
        status = self.node.state if self.node.state != "serving" else ("ok" if storage == "ok" else "unavailable")
        body = {"status": status}
        if self.is_allowed(request.remote):
            body.update(sessions=sessions, storage=storage)
        return web.Response(
            status=200 if status == "ok" else 503,
            text=json.dumps(body),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    async def probe_storage(self) -> str:
        """ "ok" when the stores answer a cheap read in time, else what went wrong."""
        stores = self.services.stores
        probes = [stores.backend.accounts.get(PROBE_OWNER), stores.archive("offline").count(PROBE_OWNER)]
        try:
            await asyncio.wait_for(asyncio.gather(*probes), HEALTH_TIMEOUT)
        except TimeoutError:
            return "timeout"
        except Exception as exc:
            log.warning("event=health-probe-failed error=%s", exc)
            return "unavailable"
        return "ok"
