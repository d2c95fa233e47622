"""Helpers for the MUC end-to-end tests: a user with a client and an inbox, entering
rooms, configuring them and reading the XEP-0045 parts of what comes back."""

from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

from lxml import etree

from tests.conftest import AccountPool, unique
from tests.support.inbox import IQ, MESSAGE, PRESENCE, Inbox, online
from xmppd.client import Client

NS_MUC = "http://jabber.org/protocol/muc"
NS_USER = NS_MUC + "#user"
NS_ADMIN = NS_MUC + "#admin"
NS_OWNER = NS_MUC + "#owner"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_MAM = "urn:xmpp:mam:2"
NS_RSM = "http://jabber.org/protocol/rsm"
ROOMCONFIG = NS_MUC + "#roomconfig"
SERVICE = "conference.localhost"

_ids = itertools.count()


@dataclass
class User:
    jid: str  # full JID
    client: Client
    inbox: Inbox

    async def send(self, xml: str) -> None:
        self.client.send_raw(xml)

    async def iq(self, type_: str, to: str, payload: str) -> etree._Element:
        """Send an iq and return its result or error."""
        iq_id = f"iq{next(_ids)}"
        self.client.send_raw(f"<iq type='{type_}' id='{iq_id}' to='{to}'>{payload}</iq>")
        return await self.inbox.wait(
            lambda s: s.tag == IQ and s.get("id") == iq_id and s.get("type") in ("result", "error")
        )

    async def join(
        self, room: str, nick: str, *, password: str | None = None, history: str = "", expect_error: bool = False
    ) -> etree._Element:
        """Enter `room` as `nick`; the self-presence (status 110), or the error presence."""
        inner = (f"<password>{password}</password>" if password is not None else "") + history
        self.client.send_raw(f"<presence to='{room}/{nick}'><x xmlns='{NS_MUC}'>{inner}</x></presence>")
        occupant = f"{room}/{nick}"
        if expect_error:
            return await self.inbox.wait(
                lambda s: s.tag == PRESENCE and s.get("type") == "error" and s.get("from") == occupant
            )
        return await self.inbox.wait(
            lambda s: s.tag == PRESENCE and s.get("from") == occupant and s.get("type") != "error" and "110" in codes(s)
        )

    async def subject(self, room: str) -> etree._Element:
        """The subject message that ends entering a room."""
        return await self.inbox.wait(
            lambda s: (
                s.tag == MESSAGE
                and s.get("from", "").split("/")[0] == room
                and s.find("{jabber:client}subject") is not None
            )
        )

    async def leave(self, room: str, nick: str) -> None:
        self.client.send_raw(f"<presence type='unavailable' to='{room}/{nick}'/>")
        await self.inbox.wait(
            lambda s: (
                s.tag == PRESENCE
                and s.get("type") == "unavailable"
                and s.get("from") == f"{room}/{nick}"
                and "110" in codes(s)
            )
        )

    async def say(self, room: str, body: str, msg_id: str | None = None) -> etree._Element:
        """Send a groupchat message and return its reflection."""
        msg_id = msg_id or f"m{next(_ids)}"
        self.client.send_raw(f"<message type='groupchat' id='{msg_id}' to='{room}'><body>{body}</body></message>")
        return await self.inbox.wait(lambda s: s.tag == MESSAGE and s.get("id") == msg_id)

    async def configure(self, room: str, **fields: str) -> etree._Element:
        return await self.iq("set", room, f"<query xmlns='{NS_OWNER}'>{form(ROOMCONFIG, fields)}</query>")

    async def logout(self) -> None:
        await self.client.logout()


# Per server object, not per id(): a stopped server's id can be reused by the next one,
# which would then be handed accounts that exist only on the old one.
_pools: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


async def new_account(server) -> str:
    """A fresh account with password "secret" on `server`."""
    pool = _pools.get(server)
    if pool is None:
        pool = _pools[server] = AccountPool(server)
    return next(pool)


async def new_user(server) -> User:
    jid = await new_account(server)
    client, inbox = await online(server, jid, "phone")
    return User(str(client.boundjid), client, inbox)


def new_room(prefix: str = "room") -> str:
    return f"{unique(prefix)}@{SERVICE}"


async def create_room(owner: User, nick: str = "owner", **fields: str) -> str:
    """A new room configured by `owner` with `fields` (muc#roomconfig_ without prefix)."""
    room = new_room()
    await owner.join(room, nick)
    await owner.subject(room)
    result = await owner.configure(
        room, **{f"muc#roomconfig_{k}" if not k.startswith("muc#") else k: v for k, v in fields.items()}
    )
    assert result.get("type") == "result", etree.tostring(result)
    return room


def form(form_type: str, fields: dict[str, str]) -> str:
    parts = [f"<field var='FORM_TYPE'><value>{form_type}</value></field>"]
    for var, value in fields.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        parts.append(f"<field var={quoteattr(var)}>" + "".join(f"<value>{v}</value>" for v in values) + "</field>")
    return f"<x xmlns='jabber:x:data' type='submit'>{''.join(parts)}</x>"


def codes(stanza: etree._Element) -> set[str]:
    return {status.get("code") for status in stanza.iterfind(f"{{{NS_USER}}}x/{{{NS_USER}}}status")}


def item(stanza: etree._Element) -> etree._Element | None:
    return stanza.find(f"{{{NS_USER}}}x/{{{NS_USER}}}item")


def error_of(stanza: etree._Element) -> tuple[str, str]:
    """(type, condition) of an error stanza."""
    error = stanza.find("{jabber:client}error")
    assert error is not None, etree.tostring(stanza)
    condition = next(
        etree.QName(child).localname
        for child in error
        if etree.QName(child).namespace == NS_STANZAS and etree.QName(child).localname != "text"
    )
    return error.get("type"), condition


def from_(jid: str, tag: str = PRESENCE, type_: str | None = "*"):
    """A predicate: a stanza of `tag` from `jid` (of `type_` unless '*')."""
    return lambda s: s.tag == tag and s.get("from") == jid and (type_ == "*" or s.get("type") == type_)
