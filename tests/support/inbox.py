"""What a test client received, awaited with timeouts instead of sleeps.

`Inbox(client)` records every stanza the client receives, before slixmpp's plugins
see it, as an lxml element. `await inbox.wait(predicate)` returns the first recorded
stanza that matches and was not returned before; `inbox.received(predicate)` lists
what matched so far (for "nothing leaked" checks after a synchronising stanza).
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

from lxml import etree

from xmppd.client import Client

NS_CLIENT = "jabber:client"
NS_ROSTER = "jabber:iq:roster"
MESSAGE, PRESENCE, IQ = (f"{{{NS_CLIENT}}}{name}" for name in ("message", "presence", "iq"))
ROSTER_ITEM = f"{{{NS_ROSTER}}}query/{{{NS_ROSTER}}}item"
TIMEOUT = 10.0


class Inbox:
    def __init__(self, client):
        self.stanzas: list[etree._Element] = []
        self._taken: set[int] = set()
        self._arrived = asyncio.Event()
        client.add_filter("in", self._record)

    def _record(self, stanza):
        self.stanzas.append(etree.fromstring(ET.tostring(stanza.xml)))
        self._arrived.set()
        return stanza

    def received(self, predicate) -> list[etree._Element]:
        return [s for s in self.stanzas if predicate(s)]

    async def wait(self, predicate, timeout: float = TIMEOUT) -> etree._Element:
        async def scan():
            while True:
                for index, stanza in enumerate(self.stanzas):
                    if index not in self._taken and predicate(stanza):
                        self._taken.add(index)
                        return stanza
                self._arrived.clear()
                await self._arrived.wait()

        try:
            return await asyncio.wait_for(scan(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"nothing matched within {timeout}s; received:\n"
                + "\n".join(etree.tostring(s).decode() for s in self.stanzas)
            ) from None


def presence(type_=None, from_=None, to=None):
    """A predicate: a presence of `type_` (None: available), from and to as given."""

    def match(stanza):
        return (
            stanza.tag == PRESENCE
            and stanza.get("type") == type_
            and (from_ is None or stanza.get("from") == str(from_))
            and (to is None or stanza.get("to") == str(to))
        )

    return match


def message(from_=None, body=None):
    def match(stanza):
        return (
            stanza.tag == MESSAGE
            and stanza.get("type") != "error"
            and (from_ is None or stanza.get("from") == str(from_))
            and (body is None or stanza.findtext(f"{{{NS_CLIENT}}}body") == body)
        )

    return match


def roster_push(jid, **attributes):
    """A predicate: a roster push of the item `jid` whose attributes include `attributes`
    (value None: the attribute is absent)."""

    def match(stanza):
        if stanza.tag != IQ or stanza.get("type") != "set":
            return False
        item = stanza.find(ROSTER_ITEM)
        return (
            item is not None
            and item.get("jid") == str(jid)
            and all(item.get(name) == value for name, value in attributes.items())
        )

    return match


async def online(
    server,
    jid: str,
    resource: str | None = None,
    *,
    roster: bool = True,
    presence_xml: str | None = "<presence/>",
    password: str = "secret",
) -> tuple[Client, Inbox]:
    """A logged-in client that (by default) asked for its roster and sent initial presence,
    with subscription requests left to the test."""
    client = Client(f"{jid}/{resource}" if resource else jid, password, verify_tls=False)
    client.auto_authorize = None
    client.auto_subscribe = False
    inbox = Inbox(client)
    await client.login("127.0.0.1", server.port)
    if roster:
        await client.get_roster()
    if presence_xml is not None:
        client.send_raw(presence_xml)
        await inbox.wait(
            lambda s: s.tag == PRESENCE and s.get("from") == str(client.boundjid) and s.get("type") is None
        )
    return client, inbox
