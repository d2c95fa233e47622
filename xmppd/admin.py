"""The local admin socket: live commands of xmppctl (status, sessions, kick).

A Unix socket readable by the server's own user only; one JSON request per line, one
JSON answer per line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import TYPE_CHECKING

from xmppd.protocol.jid import JID, InvalidJID

if TYPE_CHECKING:
    from xmppd.services import Node, Services

log = logging.getLogger(__name__)


class AdminSocket:
    def __init__(self, services: Services, node: Node):
        self.services = services
        self.node = node
        self.started = time.time()
        self._listener = None

    async def start(self) -> None:
        path = self.services.config.admin_socket
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.unlink()
        old_umask = os.umask(0o177)
        try:
            self._listener = await asyncio.start_unix_server(self._serve, path=str(path))
        finally:
            os.umask(old_umask)

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self.services.config.admin_socket.unlink(missing_ok=True)

    async def _serve(self, reader, writer) -> None:
        try:
            while line := await reader.readline():
                try:
                    request = json.loads(line)
                    answer = await self.execute(request.get("command"), request)
                except (ValueError, AttributeError) as exc:
                    answer = {"error": f"bad request: {exc}"}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        finally:
            writer.close()

    async def execute(self, command: str, request: dict) -> dict:
        directory, node = self.services.directory, self.node
        # In a cluster, the sessions of every node (Host.sessions_of includes the others').
        sessions = [s for host in directory.hosts() for local in host.online_users() for s in host.sessions_of(local)]
        here = self.services.config.node_name
        if command == "status":
            return {
                "uptime": round(time.time() - self.started, 1),
                "node": here,
                "sessions": len(sessions),
                "sessions_here": sum(1 for s in sessions if not s.is_remote),
                "connections": len(node.connections),
                "listening": node.listening(),
                "hosts": directory.user_domains,
                "counters": self.services.metrics.totals(),
            }
        if command == "sessions":
            return {
                "sessions": sorted(
                    (
                        {
                            "jid": str(s.jid),
                            "peer": getattr(s.connection, "peer", None),  # a remote session's is its node's
                            "available": s.available,
                            "priority": s.priority,
                            "node": s.node if s.is_remote else here,
                        }
                        for s in sessions
                    ),
                    key=lambda entry: entry["jid"],
                )
            }
        if command == "kick":
            try:
                target = JID.parse(request.get("jid", ""))
            except InvalidJID:
                return {"error": "not a valid JID"}
            kicked = [s for s in sessions if s.jid == target or (target.is_bare and s.jid.bare == target)]
            for session in kicked:  # one on another node is closed by that node
                session.close("policy-violation", "disconnected by an administrator")
                await session.host.end_session(session)
            return {"kicked": [str(s.jid) for s in kicked]}
        return {"error": f"unknown command {command!r}"}
