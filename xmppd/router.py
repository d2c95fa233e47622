"""Stanza routing: RFC 6121 section 8 delivery rules, by firing events.

A stanza from a client fires `pre-<kind>/<target>` on the sender's host (vetoable), then
`<kind>/<target>` on the addressee's host, where target is `host`, `self`, `bare` or
`full` (and `broadcast` for a presence without 'to'). iqs to the server or an account
also fire `iq-<type>/<target>/<namespace>:<element>`. The default delivery below is hooked
at priority -1 so that extensions (blocking, carbons, archive) run before it. An iq get
or set that nobody handles gets service-unavailable; an error is never answered.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import TYPE_CHECKING

from lxml import etree

from xmppd.logs import redacted
from xmppd.protocol.errors import (
    BadRequest,
    InternalServerError,
    JidMalformed,
    RemoteServerNotFound,
    ServiceUnavailable,
    StanzaError,
)
from xmppd.protocol.jid import JID, InvalidJID
from xmppd.protocol.namespaces import NS_CLIENT, NS_SESSION
from xmppd.protocol.stanza import error_reply, reply
from xmppd.session import top_priority

if TYPE_CHECKING:
    from xmppd.host import Host
    from xmppd.services import Directory
    from xmppd.session import Session

log = logging.getLogger(__name__)

KINDS = {f"{{{NS_CLIENT}}}message": "message", f"{{{NS_CLIENT}}}presence": "presence", f"{{{NS_CLIENT}}}iq": "iq"}
IQ_TYPES = frozenset(("get", "set", "result", "error"))
PRESENCE_TYPES = frozenset(
    (None, "unavailable", "subscribe", "subscribed", "unsubscribe", "unsubscribed", "probe", "error")
)
DEFAULT_PRIORITY = -1
RETURNED = "returned"  # Stanza.meta: handed on by a session that ended (sent to it once already)
# The `writes` of the stanza a client sent that is being routed: a stanza forwarded to
# another node adds the wait for that node's answer (xmppd/cluster), so that the XEP-0198
# ack comes after the receiving node delivered, stored or bounced it.
CURRENT_WRITES: contextvars.ContextVar[list | None] = contextvars.ContextVar("current_writes", default=None)


class Stanza:
    """A thin envelope around the lxml element: parsed addresses and internal meta.
    `writes`: storage writes a handler started in the background whose commit the
    sender's XEP-0198 ack must wait for (an offline message)."""

    __slots__ = ("element", "kind", "type", "from_", "to", "target", "origin", "meta", "writes")

    def __init__(self, element, kind, from_, to, origin=None):
        self.element = element
        self.kind = kind
        self.type = element.get("type")
        self.from_: JID = from_
        self.to: JID | None = to
        self.target = ""
        self.origin: Session | None = origin
        self.meta: dict = {}
        self.writes: list[asyncio.Task] = []

    @property
    def id(self) -> str | None:
        return self.element.get("id")

    def __repr__(self):
        return f"<Stanza {redacted(self.element)}>"  # reprs end up in logs: no text


def target_of(kind: str, to: JID | None, from_: JID) -> str:
    if to is None:
        return {"presence": "broadcast", "iq": "self"}.get(kind, "bare")
    if to.local is None:
        return "host"
    if to.resource is not None:
        return "full"
    return "self" if kind == "iq" and to == from_.bare else "bare"


class Router:
    """The delivery service (xmppd.services.Delivery) of one process."""

    def __init__(self, directory: Directory):
        self.directory = directory

    # ------------------------------------------------------------- entry points

    async def from_client(self, session: Session, element: etree._Element) -> list[asyncio.Task]:
        """A stanza read from a bound client: validate, stamp 'from', route. Returns the
        writes still committing that the stanza's XEP-0198 ack must wait for."""
        kind = KINDS.get(element.tag)
        if kind is None:
            session.close("unsupported-stanza-type")
            return []
        element.set("from", str(session.jid))
        try:
            to = JID.parse(element.get("to")) if element.get("to") is not None else None
        except InvalidJID:
            element.set("to", session.host.domain)  # the error comes from the server, not a bad JID
            await self._reply_error(element, session.host, JidMalformed())
            return []
        stanza = Stanza(element, kind, session.jid, to, session)
        token = CURRENT_WRITES.set(stanza.writes)
        try:
            await self._from_client(session, stanza)
        finally:
            CURRENT_WRITES.reset(token)
        return stanza.writes

    async def _from_client(self, session: Session, stanza: Stanza) -> None:
        element, kind, to = stanza.element, stanza.kind, stanza.to
        problem = self.invalid(stanza)
        if problem:
            await self._reply_error(element, session.host, BadRequest(text=problem))
            return
        stanza.target = target_of(kind, to, session.jid)
        if to is None and kind != "presence":
            stanza.to = session.jid.bare  # RFC 6120 10.3: addressed to the sender's account
            if kind == "iq":  # so that replies come from the account (RFC 6120 8.1.2.1)
                element.set("to", str(stanza.to))
        host = session.host
        if await self._fire(host, f"pre-{kind}/{stanza.target}", stanza):
            return
        if stanza.target == "broadcast":
            await self._fire(host, "presence/broadcast", stanza)
            return
        await self.route(stanza)

    async def dispatch(self, element: etree._Element) -> None:
        """A stanza originated by the server; its 'from' must be set."""
        kind = KINDS[element.tag]
        to = JID.parse(element.get("to")) if element.get("to") else None
        stanza = Stanza(element, kind, JID.parse(element.get("from")), to)
        stanza.target = target_of(kind, to, stanza.from_) if to is not None else "host"
        if to is None:
            stanza.to = stanza.from_.bare if stanza.from_.local else stanza.from_
        await self.route(stanza)

    async def route(self, stanza: Stanza) -> None:
        host = self.directory.host(stanza.to.domain)
        if host is None:
            await self.bounce(stanza, RemoteServerNotFound())
            return
        if not await self._fire(host, f"{stanza.kind}/{stanza.target}", stanza):
            if stanza.kind == "iq" and stanza.type in ("get", "set"):
                await self.bounce(stanza, ServiceUnavailable())

    # ------------------------------------------------------------- errors

    async def bounce(self, stanza: Stanza, error: StanzaError) -> None:
        """Return `stanza` to its sender with `error` (never for an error or a result)."""
        if stanza.type in ("error", "result"):
            return
        await self._reply_error(stanza.element, self.directory.host(stanza.to.domain) if stanza.to else None, error)

    async def _reply_error(self, element, host, error: StanzaError) -> None:
        if element.get("type") in ("error", "result"):
            return
        reply = error_reply(element, error)
        if reply.get("from") is None and host is not None:
            reply.set("from", host.domain)
        await self.dispatch(reply)

    async def _fire(self, host: Host, name: str, stanza: Stanza) -> bool:
        try:
            return await host.bus.fire(name, stanza)
        except StanzaError as error:
            await self.bounce(stanza, error)
        except Exception:
            log.exception("event=stanza-handler-crashed name=%s stanza=%s", name, redacted(stanza.element))
            await self.bounce(stanza, InternalServerError())
        return True

    @staticmethod
    def invalid(stanza: Stanza) -> str | None:
        if stanza.kind == "iq":
            if stanza.type not in IQ_TYPES:
                return "iq type must be get, set, result or error"
            if not stanza.element.get("id"):
                return "iq needs an id"
            if stanza.type in ("get", "set") and len(stanza.element) != 1:
                return "iq get/set needs exactly one payload"
        elif stanza.kind == "presence" and stanza.type not in PRESENCE_TYPES:
            return "unknown presence type"
        return None


class CoreDelivery:
    """The default delivery rules of RFC 6121 section 8, hooked at priority -1 on user hosts."""

    def __init__(self, host: Host):
        self.host = host
        for name, handler in (
            ("message/bare", self.message_to_bare),
            ("message/full", self.message_to_full),
            ("presence/bare", self.presence_to_bare),
            ("presence/full", self.presence_to_full),
            ("iq/full", self.iq_to_full),
            ("iq/bare", self.iq_to_account),
            ("iq/self", self.iq_to_account),
            ("iq/host", self.iq_to_account),
            ("message/host", self.message_to_host),
            ("presence/host", self.ignore),
        ):
            host.bus.hook(name, handler, DEFAULT_PRIORITY)
        for target in ("self", "host"):  # RFC 3921 section 3: a no-op kept for old clients
            host.bus.hook(f"iq-set/{target}/{NS_SESSION}:session", self.legacy_session, DEFAULT_PRIORITY)

    async def message_to_bare(self, stanza: Stanza) -> bool:
        return await deliver_to_account(self.host, stanza)

    async def message_to_full(self, stanza: Stanza) -> bool:
        session = self.host.session_for(stanza.to)
        if session is not None:
            session.send(stanza.element)
            return True
        if stanza.type == "groupchat":
            raise ServiceUnavailable()
        stanza.target = "bare"  # RFC 6121 8.5.3.2.1: treat as sent to the bare JID
        return await self.host.bus.fire("message/bare", stanza)

    async def message_to_host(self, stanza: Stanza) -> bool:
        if (
            stanza.type not in ("error", "groupchat", "headline")
            and stanza.element.find(f"{{{NS_CLIENT}}}body") is not None
        ):
            raise ServiceUnavailable()
        return True

    async def presence_to_bare(self, stanza: Stanza) -> bool:
        for session in self.host.available_sessions(stanza.to.local):
            session.send(stanza.element)
        return True

    async def presence_to_full(self, stanza: Stanza) -> bool:
        session = self.host.session_for(stanza.to)
        if session is not None:
            session.send(stanza.element)
        return True

    async def ignore(self, stanza: Stanza) -> bool:
        return True

    async def iq_to_full(self, stanza: Stanza) -> bool:
        session = self.host.session_for(stanza.to)
        if session is not None:
            session.send(stanza.element)
            return True
        raise ServiceUnavailable()

    async def legacy_session(self, stanza: Stanza) -> bool:
        await self.host.send(reply(stanza.element))
        return True

    async def iq_to_account(self, stanza: Stanza) -> bool:
        return await answer_iq(self.host, stanza)


async def deliver_to_account(host: Host, stanza: Stanza, recipients: list[Session] | None = None) -> bool:
    """RFC 6121 8.5.2.1 (and 8.5.3.2.1 for a full JID whose resource is gone): a message
    to the account of `stanza.to` is delivered, stored offline or refused. `recipients`:
    the resources it goes to, when the caller chose them (the cluster: local ones only)."""
    element = stanza.element
    kind = stanza.type or "normal"
    if kind == "error":
        return True
    if kind == "groupchat":
        raise ServiceUnavailable()
    sessions = bare_message_recipients(host, stanza.to.local, kind) if recipients is None else recipients
    if sessions:
        for session in sessions:
            session.send(element)
        return True
    if not await host.user_exists(stanza.to.local):
        raise ServiceUnavailable()
    if await host.bus.fire("message/offline/store", stanza):
        return True
    if kind != "headline" and element.find(f"{{{NS_CLIENT}}}body") is not None:
        raise ServiceUnavailable()
    return True  # transient payloads are not bounced


def bare_message_recipients(host: Host, local: str, kind: str) -> list[Session]:
    """RFC 6121 8.5.2.1.1: the resources a message of type `kind` to the bare JID goes
    to: the available ones of highest non-negative priority, every such one for a
    headline. Empty when the message must be stored or refused."""
    if kind == "headline":
        return [s for s in host.available_sessions(local) if s.priority >= 0]
    return top_priority(host.available_sessions(local))


async def answer_iq(host: Host, stanza: Stanza) -> bool:
    """Fire the namespaced iq event; unhandled gets/sets are refused, results resolve requests."""
    if stanza.type in ("get", "set"):
        payload = stanza.element[0]
        name = f"iq-{stanza.type}/{stanza.target}/{etree.QName(payload).namespace}:{etree.QName(payload).localname}"
        if await host.bus.fire(name, stanza):
            return True
        raise ServiceUnavailable()
    host.resolve_request(stanza.element)
    return True
