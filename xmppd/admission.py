"""Who may connect and log in: the open client connections, per address group.

The listeners admit each connection here and release it when it ends. Connections not
authenticated yet are bounded per address group and in all (the oldest one is closed
for a new one, so idle sockets cannot lock logins out); sessions per address group are
bounded at login, counting hibernating XEP-0198 sessions; failed logins go through the
login budgets of xmppd/throttle.py.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from xmppd.config import C2SOptions
from xmppd.metrics import LIMIT_REACHED
from xmppd.protocol.negotiation import State
from xmppd.throttle import AuthThrottle

if TYPE_CHECKING:
    from xmppd.c2s import C2SConnection
    from xmppd.services import Metrics
    from xmppd.session import Session

# Negotiation states of a login in progress: it counts against max_sessions_per_ip, so
# that parallel logins cannot slip past the limit.
LOGGING_IN = (State.AWAIT_CREDENTIALS, State.CHECKING_PASSWORD, State.SASL_EXCHANGE)


class Admission:
    def __init__(self, options: C2SOptions, metrics: Metrics):
        self.options = options
        self.metrics = metrics
        self.throttle = AuthThrottle(options)
        self.connections: set[C2SConnection] = set()
        # Connections not authenticated yet, oldest first: per address group and in all.
        self._unauthenticated: dict[str, dict[C2SConnection, None]] = {}
        self._all_unauthenticated: dict[C2SConnection, None] = {}
        self._hibernating: weakref.WeakKeyDictionary[Session, str] = weakref.WeakKeyDictionary()

    def admit(self, connection: C2SConnection) -> None:
        group = self.throttle.group(connection.peer)
        self._make_room(group)
        self._unauthenticated.setdefault(group, {})[connection] = None
        self._all_unauthenticated[connection] = None
        self.connections.add(connection)

    def release(self, connection: C2SConnection) -> None:
        """`connection` ended; a session it leaves hibernating still counts for its group."""
        group = self.throttle.group(connection.peer)
        self.connections.discard(connection)
        self._forget_unauthenticated(connection, group)
        session = connection.session
        if session is not None and session.connection is None and not session.closed:
            self._hibernating[session] = group

    def _make_room(self, group: str) -> None:
        """Close the oldest unauthenticated connection of the address group, or of all,
        when a new one would exceed max_unauthenticated_per_ip or max_unauthenticated."""
        for pending, option, condition, text in (
            (
                self._unauthenticated.get(group, {}),
                "max_unauthenticated_per_ip",
                "policy-violation",
                "too many unauthenticated connections from your address",
            ),
            (
                self._all_unauthenticated,
                "max_unauthenticated",
                "resource-constraint",
                "too many unauthenticated connections",
            ),
        ):
            while len(pending) >= getattr(self.options, option):
                oldest = next(iter(pending))
                self.metrics.count(LIMIT_REACHED, f"c2s.{option}")
                self._forget_unauthenticated(oldest, self.throttle.group(oldest.peer))
                oldest.close(condition, text)

    def _forget_unauthenticated(self, connection: C2SConnection, group: str) -> None:
        pending = self._unauthenticated.get(group)
        if pending is not None:
            pending.pop(connection, None)
            if not pending:
                del self._unauthenticated[group]
        self._all_unauthenticated.pop(connection, None)

    def authenticated(self, connection: C2SConnection, jid) -> None:
        """`connection` logged in as `jid`: its attempt does not count against the login
        budgets, nor the connection against the unauthenticated ones."""
        self.throttle.succeeded(connection.peer, str(jid))
        self._forget_unauthenticated(connection, self.throttle.group(connection.peer))

    def too_many_sessions(self, connection: C2SConnection) -> bool:
        """Whether max_sessions_per_ip stops `connection` from authenticating: its address
        group has that many sessions, hibernating ones and logins in progress included."""
        limit = self.options.max_sessions_per_ip
        if not limit:
            return False
        group = self.throttle.group(connection.peer)
        count = sum(
            1
            for other in self.connections
            if other is not connection
            and self.throttle.group(other.peer) == group
            and (other.negotiation.authenticated is not None or other.negotiation.state in LOGGING_IN)
        )
        count += sum(
            1
            for session, left_from in list(self._hibernating.items())
            if left_from == group and session.connection is None and not session.closed
        )
        if count < limit:
            return False
        self.metrics.count(LIMIT_REACHED, "c2s.max_sessions_per_ip")
        return True
