"""Raw XEP-0198 clients for the stream management, durability and push tests.

A raw socket gives the control these tests need: when to ack, how many stanzas the
client admits to have handled, and an abrupt TCP drop (`drop`) with no stream close.
"""

from __future__ import annotations

import asyncio
import re
import socket

from lxml import etree

from tests.support.raw import RawClient

NS_SM = "urn:xmpp:sm:3"
MESSAGE = "{jabber:client}message"
IQ = "{jabber:client}iq"
ARCHIVED_MESSAGE = "{urn:xmpp:mam:2}result/{urn:xmpp:forward:0}forwarded/{jabber:client}message"
STANZAS = frozenset((MESSAGE, "{jabber:client}presence", IQ))


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
    await client.send(
        f"<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
        f"<resource>{resource}</resource></bind></iq>"
    )
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


async def managed_login(
    server, user: str, resource: str, *, max_: int | None = None, presence: bool = True
) -> tuple[RawClient, str]:
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


async def coming_online(server, user: str, resource: str, **reader_options) -> tuple[StanzaStream, str]:
    """A XEP-0198 client that logs in and sends its initial presence: a StanzaStream of
    what comes (its offline queue first), and its SM-ID."""
    client, sm_id = await managed_login(server, user, resource, presence=False)
    await client.send("<presence/>")
    return StanzaStream(client, **reader_options), sm_id


async def ping(client: RawClient, ping_id: str) -> str:
    """Ping the server; return everything received before the answer (a sync point)."""
    await client.send(f"<iq type='get' id='{ping_id}'><ping xmlns='urn:xmpp:ping'/></iq>")
    match = await client.expect(rf"""<iq[^>]*\bid=["']{ping_id}["'][^>]*(/>|>.*?</iq>)""")
    return match.string[: match.start()]


def drop(client: RawClient) -> None:
    """Lose the connection abruptly: no stream close, no TCP FIN handshake."""
    client.writer.transport.abort()


async def send_message(client: RawClient, to: str, body: str, message_id: str | None = None) -> None:
    id_attribute = f" id='{message_id}'" if message_id else ""
    await client.send(f"<message to='{to}' type='chat'{id_attribute}><body>{body}</body></message>")


class StanzaStream:
    """The stanzas of a bound stream read as a XEP-0198 client reads them: each one
    counted in `handled` ('h'), every <r/> answered with <a h=.../>, the ids of the
    messages kept in order. `pace` makes it a slow reader: at most `chunk` bytes per
    `pace` seconds, with a small socket receive buffer (the server's output backs up)."""

    def __init__(
        self,
        client: RawClient,
        handled: int = 0,
        *,
        chunk: int = 65536,
        pace: float = 0.0,
        resumed: StanzaStream | None = None,
    ):
        """With `resumed`, the stream this one resumes: its counts and what it saw go on."""
        self.client = client
        self.handled = resumed.handled if resumed else handled
        self.chunk = chunk
        self.pace = pace
        self.message_ids: list[str] = resumed.message_ids if resumed else []
        self.arrivals: list[tuple[str, int]] = resumed.arrivals if resumed else []  # (message id, its 'h')
        self.iqs: dict[str, etree._Element] = {}  # the iqs received, by id
        self.archived_ids: list[str] = []  # of the messages in XEP-0313 results
        self.errors: dict[str, str] = {}  # message id -> the error's condition
        self.acked = self.handled  # the last 'h' sent to the server
        self.confirmed = self.handled  # the last 'h' it surely had (a round trip after it)
        self.parser = etree.XMLPullParser(events=("start", "end"), resolve_entities=False)
        self.parser.feed(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
        self.depth = 0
        if pace:
            client.writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self._take(client.buffer.encode())
        client.buffer = ""

    async def read(self) -> bool:
        """Read and handle one chunk; False at the end of the stream."""
        transport = self.client.writer.transport
        if self.pace:
            transport.resume_reading()
        data = await self.client.reader.read(self.chunk)
        if self.pace:
            transport.pause_reading()
        if not data:
            return False
        self._take(data)
        if self.pace:
            await asyncio.sleep(self.pace)  # the reading speed, not a synchronisation
        return True

    async def ping(self, ping_id: str, timeout: float = 30) -> None:
        """A round trip: everything sent before the answer has been read."""
        await self.request(f"<iq type='get' id='{ping_id}'><ping xmlns='urn:xmpp:ping'/></iq>", ping_id, timeout)

    async def request(self, iq: str, iq_id: str, timeout: float = 30) -> etree._Element:
        """Send an iq; its answer, once read (with everything sent before it)."""
        acked = self.acked
        await self.client.send(iq)
        await self.until(lambda: iq_id in self.iqs, timeout)
        self.confirmed = max(self.confirmed, acked)
        return self.iqs[iq_id]

    async def until(self, done, timeout: float) -> None:
        """Read until `done()` holds; ConnectionError if the stream ends first."""
        async with asyncio.timeout(timeout):
            while not done():
                if not await self.read():
                    raise ConnectionError(f"stream ended after {self.handled} stanzas")

    def _take(self, data: bytes) -> None:
        self.parser.feed(data)
        answers = []
        for event, element in self.parser.read_events():
            if event == "start":
                self.depth += 1
                continue
            self.depth -= 1
            if self.depth != 1:
                continue
            if element.tag in STANZAS:
                self.handled += 1
                archived = element.find(ARCHIVED_MESSAGE)
                if archived is not None:
                    self.archived_ids.append(archived.get("id"))
                elif element.get("type") == "error" and element.tag == MESSAGE:
                    condition = element.find("{jabber:client}error/*")
                    self.errors[element.get("id")] = etree.QName(condition).localname if condition is not None else ""
                elif element.tag == MESSAGE and element.get("id"):
                    self.message_ids.append(element.get("id"))
                    self.arrivals.append((element.get("id"), self.handled))
                elif element.tag == IQ:
                    self.iqs[element.get("id")] = element
            elif element.tag == f"{{{NS_SM}}}r":
                answers.append(f"<a xmlns='{NS_SM}' h='{self.handled % 2**32}'/>")
                self.acked = self.handled
            element.getparent().remove(element)
        if answers:
            self.client.writer.write("".join(answers).encode())
