"""Raw XEP-0198 clients for the stream management, durability and push tests.

A raw socket gives the control these tests need: when to ack, how many stanzas the
client admits to have handled, and an abrupt TCP drop (`drop`) with no stream close.
"""
from __future__ import annotations

import re

from tests.support.raw import RawClient

NS_SM = "urn:xmpp:sm:3"


async def authenticated(server, user: str, password: str = "secret") -> tuple[RawClient, str]:
    """A raw client logged in, not bound; returns it and the stream features offered."""
    client = RawClient(server.domain)
    await client.connect(server.port)
    features = await client.open_stream()
    if "starttls" in features.group(1):
        await client.starttls()
    await client.authenticate(user, password)
    features = await client.open_stream()
    return client, features.group(1)


async def bind(client: RawClient, resource: str) -> str:
    await client.send(f"<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                      f"<resource>{resource}</resource></bind></iq>")
    client.jid = (await client.expect(r"<jid>([^<]+)</jid>")).group(1)
    await client.expect(r"</iq>")
    return client.jid


async def enable(client: RawClient, resume: bool = True, max_: int | None = None) -> re.Match:
    """<enable/>; returns the <enabled/> match (group 1: its attributes)."""
    attributes = " resume='true'" if resume else ""
    if max_ is not None:
        attributes += f" max='{max_}'"
    await client.send(f"<enable xmlns='{NS_SM}'{attributes}/>")
    return await client.expect(r"<enabled ([^>]*)/>")


def attribute(attributes: str, name: str) -> str | None:
    match = re.search(rf"""\b{name}=["']([^"']*)["']""", attributes)
    return match.group(1) if match else None


async def managed_login(server, user: str, resource: str, *, max_: int | None = None,
                        presence: bool = True) -> tuple[RawClient, str]:
    """Logged in, bound, stream management enabled with resumption, and (with
    `presence`) available: the presence echo is the one stanza handled so far.
    Returns the client and its SM-ID."""
    client, _ = await authenticated(server, user)
    await bind(client, resource)
    enabled = await enable(client, max_=max_)
    if presence:
        await client.send("<presence/>")
        await client.expect(r"<presence[^>]*(/>|>.*?</presence>)")
    return client, attribute(enabled.group(1), "id")


async def ping(client: RawClient, ping_id: str) -> str:
    """Ping the server; return everything received before the answer (a sync point)."""
    await client.send(f"<iq type='get' id='{ping_id}'><ping xmlns='urn:xmpp:ping'/></iq>")
    match = await client.expect(rf"""<iq[^>]*\bid=["']{ping_id}["'][^>]*(/>|>.*?</iq>)""")
    return match.string[:match.start()]


def drop(client: RawClient) -> None:
    """Lose the connection abruptly: no stream close, no TCP FIN handshake."""
    client.writer.transport.abort()


async def send_message(client: RawClient, to: str, body: str, message_id: str | None = None) -> None:
    id_attribute = f" id='{message_id}'" if message_id else ""
    await client.send(f"<message to='{to}' type='chat'{id_attribute}><body>{body}</body></message>")
