"""A session bound on another node, as this node's routing and extensions see it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lxml import etree

from xmppd.protocol.jid import JID
from xmppd.protocol.stanza import from_storage, to_storage

if TYPE_CHECKING:
    from xmppd.cluster.node import Cluster, Peer
    from xmppd.host import Host


class ElsewhereConnection:
    """The `connection` of a RemoteSession: connected, on its own node. Whether it is
    congested or hibernates is that node's business (it applies its flow control when
    the stanza arrives)."""

    congested = False


ELSEWHERE = ElsewhereConnection()


class RemoteSession:
    """What the registry says of a session on another node (its availability, priority,
    last presence, interest in roster pushes and `shared` state); `send` forwards to
    that node. Kept in `Host.remote`, so that `Host.sessions_of` and the others find it
    beside the local sessions; never in `Host.sessions`."""

    is_remote = True
    closed = False
    behind = False
    connection = ELSEWHERE

    def __init__(self, cluster: Cluster, host: Host, jid: JID, peer: Peer):
        self.cluster = cluster
        self.host = host
        self.jid = jid
        self.peer = peer  # the node (the incarnation of it) that bound it
        self.meta: dict = {}  # node-local extension state stays on its node
        self.available = False
        self.priority = 0
        self.presence: etree._Element | None = None
        self.interested = False
        self.shared: dict = {}

    def __repr__(self):
        return f"<RemoteSession {self.jid} on {self.node}>"

    @property
    def node(self) -> str:
        return self.peer.name

    def update(self, entry: dict) -> None:
        self.available = entry["available"]
        self.priority = entry["priority"]
        self.presence = from_storage(entry["presence"].encode()) if entry["presence"] else None
        self.interested = entry["interested"]
        self.shared = entry["shared"]

    def send(self, element: etree._Element, *, after=None) -> None:
        self.cluster.forward(self, element)

    def close(self, condition: str | None = None, text: str | None = None) -> None:
        """Ask its node to close its stream (a bind of the same full JID here, an account deleted)."""
        self.cluster.close_remote(self, condition, text)

    async def drain_now(self, key: str, drain) -> None:
        """Stored messages (offline.py's queue, stored while this session was online: a
        forward that found its session gone) are drained by the session's own node."""
        self.cluster.deliver_offline(self)


def registry_entry(session) -> dict:
    """What other nodes keep of a local session (RemoteSession.update reads it)."""
    return {
        "available": session.available,
        "priority": session.priority,
        "presence": to_storage(session.presence).decode() if session.presence is not None else None,
        "interested": session.interested,
        "shared": session.shared,
    }
