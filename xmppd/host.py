"""A virtual host (a served domain, or a component domain such as conference.<domain>).

It owns an event bus, the extensions loaded on it, the disco features and identities
they declare, and, for a user host, the sessions of its users.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lxml import etree

from xmppd.config import ConfigError, Where, build
from xmppd.events import EventBus
from xmppd.extension import Extension, extension_class, register, unregister
from xmppd.metrics import LIMIT_REACHED
from xmppd.protocol.jid import JID

if TYPE_CHECKING:
    from xmppd.services import Directory, Services
    from xmppd.session import Session

log = logging.getLogger(__name__)

KNOWN_USERS_MAX = 100_000
# Set while a stanza is delivered again after a forward to another node failed: the
# session look-ups see this node's sessions only, so that a stanza is forwarded once.
LOCAL_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("local_only", default=False)


@dataclass(frozen=True)
class BlockQuery:
    """The `is-blocked` question, fired on the owner's host: does the user `owner`
    block `contact`? A handler (XEP-0191 blocking, when loaded) returns True if so."""

    owner: JID
    contact: JID


@dataclass(frozen=True)
class ForwardArrived:
    """`forward-arrived`, fired on the host of a session of this node that a stanza routed
    on another node of a cluster is for: a handler that takes it over (backlog.py keeps a
    message for a session that is behind) returns True once it is stored; otherwise it
    goes to the session's `send`."""

    session: Session
    element: etree._Element


@dataclass(frozen=True)
class UserDataChanged:
    """`user-data-changed`, notified by an extension (`kind`: its name) once it stored a
    change of a user's data that it keeps in memory too (a block list); in a cluster,
    the other nodes hear `user-data-changed-elsewhere` with it and forget their copy."""

    kind: str
    owner: str  # the user's bare JID


async def blocks(directory: Directory, owner: JID, contact: JID) -> bool:
    """Whether `owner`, a user of one of our user hosts, blocks `contact`; False for a
    JID of any other domain."""
    host = directory.host(owner.domain)
    if host is None or host.is_component or owner.local is None:
        return False
    return await host.bus.fire("is-blocked", BlockQuery(owner.bare, contact))


class Hosts:
    """The directory of served domains (xmppd.services.Directory)."""

    def __init__(self, user_domains: list[str]):
        self.user_domains = user_domains
        self.by_domain: dict[str, Host] = {}

    def host(self, domain: str) -> Host | None:
        return self.by_domain.get(domain)

    def hosts(self):
        return iter(list(self.by_domain.values()))

    def add(self, host: Host) -> Host:
        if host.domain in self.by_domain:
            raise ConfigError(f"{host.services.config.source}: the domain {host.domain} is configured twice")
        self.by_domain[host.domain] = host
        return host

    def add_component(self, domain: str, parent: Host) -> Host:
        """A component domain (conference.<domain>, upload.<domain>) routed like a host;
        `parent` is the user host whose extension made it (its extensions find their
        shared state there)."""
        return self.add(Host(parent.services, domain, is_component=True, parent=parent))


class Host:
    def __init__(
        self, services: Services, domain: str, *, admins=(), is_component: bool = False, parent: Host | None = None
    ):
        self.services = services
        self.domain = domain
        self.parent = parent  # for a component: the user host it serves
        self.jid = JID(None, domain)
        self.admins = frozenset(admins)
        self.is_component = is_component
        self.bus = EventBus()
        self.extensions: dict[str, Extension] = {}
        self.sessions: dict[str, dict[str, Session]] = {}  # local part -> resource -> session
        self.remote: dict[str, dict[str, Session]] = {}  # the same, on other nodes (xmppd/cluster)
        self._pending_iqs: dict[str, asyncio.Future] = {}
        # Accounts seen to exist: a message to an offline user need not read the account
        # again. Forgotten when this process deletes the account (`xmppctl deluser` on a
        # running server goes behind its back: messages then wait offline in vain).
        self._known_users: set[str] = set()

    # ------------------------------------------------------------- extensions

    async def load(self, name: str) -> Extension:
        """Load extension `name` (and what it depends on) onto this host, once."""
        if name in self.extensions:
            return self.extensions[name]
        cls = extension_class(name)
        for dependency in cls.depends:
            await self.load(dependency)
        options = None
        if cls.Options is not None:
            config = self.services.config
            options = build(
                cls.Options, config.extension_options.get(name, {}), Where(config.source, f"extensions.{name}")
            )
        extension = cls(self, options)
        self.extensions[name] = extension
        register(extension)
        await extension.start()
        await self.bus.notify("extension-loaded", extension)
        return extension

    async def unload_all(self) -> None:
        for extension in reversed(list(self.extensions.values())):
            unregister(extension)
            try:
                await extension.stop()
            except Exception:
                log.exception("event=extension-stop-failed extension=%s", extension.name)
        self.extensions.clear()

    @property
    def features(self) -> list[str]:
        return self._gather("features")

    @property
    def identities(self) -> list[tuple[str, str, str]]:
        return self._gather("identities")

    def _gather(self, attribute: str) -> list:
        """What the loaded extensions declare, in load order, each once."""
        return list(
            dict.fromkeys(item for extension in self.extensions.values() for item in getattr(extension, attribute))
        )

    # ------------------------------------------------------------- stores

    @property
    def storage(self):
        return self.services.stores.backend

    @property
    def media(self):
        """The MediaStore of uploaded files (xmppd.storage.interfaces.MediaStore)."""
        return self.services.stores.media

    def open_archive(self, name: str):
        return self.services.stores.archive(name)

    def open_keyvalue(self, name: str):
        return self.services.stores.keyvalue(name)

    # ------------------------------------------------------------- sessions

    def is_admin(self, jid: JID) -> bool:
        return str(jid.bare) in self.admins

    def _resources(self, local: str) -> dict[str, Session]:
        """The sessions of `local` by resource, on this node and (in a cluster) on the
        others; a resource bound here wins over an entry another node has not dropped yet."""
        here = self.sessions.get(local, {})
        elsewhere = self.remote.get(local)
        if not elsewhere or LOCAL_ONLY.get():
            return here
        return {**elsewhere, **here}

    def online_users(self) -> set[str]:
        """The local parts of the users with a session, on any node."""
        return set(self.sessions) | set(self.remote)

    def sessions_of(self, local: str) -> list[Session]:
        return list(self._resources(local).values())

    def available_sessions(self, local: str) -> list[Session]:
        return [s for s in self._resources(local).values() if s.available]

    def session_for(self, jid: JID) -> Session | None:
        return self._resources(jid.local).get(jid.resource)

    async def user_exists(self, local: str) -> bool:
        if local in self.sessions or local in self._known_users:
            return True
        if await self.storage.accounts.get(f"{local}@{self.domain}") is None:
            return False
        if len(self._known_users) >= KNOWN_USERS_MAX:
            self._known_users.clear()
        self._known_users.add(local)
        return True

    def forget_user(self, local: str) -> None:
        self._known_users.discard(local)

    def add_session(self, session: Session) -> None:
        self.sessions.setdefault(session.jid.local, {})[session.jid.resource] = session

    def remove_session(self, session: Session) -> None:
        resources = self.sessions.get(session.jid.local)
        if resources and resources.get(session.jid.resource) is session:
            del resources[session.jid.resource]
            if not resources:
                del self.sessions[session.jid.local]

    def bind_refusal(self, jid: JID) -> str | None:
        """Why `jid` may not be bound (the error's text, the refusal counted): its account
        has c2s.max_resources_per_account resources already, hibernating XEP-0198 sessions
        included (binding a resource again replaces it). None: it may."""
        limit = self.services.config.c2s.max_resources_per_account
        if sum(1 for resource in self._resources(jid.local) if resource != jid.resource) < limit:
            return None
        self.services.metrics.count(LIMIT_REACHED, "c2s.max_resources_per_account")
        return f"an account has at most {limit} resources (c2s.max_resources_per_account)"

    def new_resource(self) -> str:
        return secrets.token_hex(6)

    async def session_interrupted(self, session: Session) -> None:
        """The connection of `session` is gone: an extension may keep the session
        (XEP-0198 hibernation) by handling `session-interrupted`; otherwise it ends."""
        if session.closed:
            return
        session.connection = None
        if not await self.bus.fire("session-interrupted", session):
            await self.end_session(session)

    async def end_session(self, session: Session) -> None:
        if session.closed or session.is_remote:  # a remote one ends on its node
            return
        session.closed = True
        self.remove_session(session)
        await self.bus.notify("session-closed", session)

    def stream_features(self, authenticated: bool) -> list[bytes]:
        """Stream features that the loaded extensions offer (XEP-0198 <sm/>, XEP-0352 <csi/>...)."""
        return [
            feature for extension in self.extensions.values() for feature in extension.stream_features(authenticated)
        ]

    # ------------------------------------------------------------- stanzas out

    async def send(self, element: etree._Element) -> None:
        """Route a stanza originated by the server (pushes, replies, notifications)."""
        await self.services.delivery.dispatch(element)

    async def request(self, iq: etree._Element, timeout: float = 30.0) -> etree._Element:
        """Send an iq get/set from the server and wait for its result or error."""
        iq_id = iq.get("id") or secrets.token_hex(8)
        iq.set("id", iq_id)
        if iq.get("from") is None:
            iq.set("from", self.domain)
        future = asyncio.get_running_loop().create_future()
        self._pending_iqs[iq_id] = future
        try:
            await self.send(iq)
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending_iqs.pop(iq_id, None)

    def resolve_request(self, iq: etree._Element) -> bool:
        future = self._pending_iqs.get(iq.get("id", ""))
        if future is None or future.done():
            return False
        future.set_result(iq)
        return True
