"""A raw RFC 7395 client: XMPP over WebSocket with aiohttp's client, for edge cases.

It is RawClient (tests/support/raw.py) with WebSocket messages in place of a byte
stream: `send` sends one message, `expect` matches what the messages received so far say
(joined), so RawClient's SASL (PLAIN, SCRAM) runs unchanged. `messages` keeps every
message received, to check the framing itself.
"""

from __future__ import annotations

import asyncio
import re

import aiohttp

from tests.support.raw import TIMEOUT, RawClient, client_context

NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
PATH = "/xmpp-websocket"


def url(server, *, tls: bool = True, path: str = PATH) -> str:
    return f"wss://127.0.0.1:{server.https_port}{path}" if tls else f"ws://127.0.0.1:{server.http_port}{path}"


class WebSocketClient(RawClient):
    def __init__(self, domain: str = "localhost"):
        super().__init__(domain)
        self.session: aiohttp.ClientSession | None = None
        self.socket: aiohttp.ClientWebSocketResponse | None = None
        self.messages: list[str] = []

    async def connect_to(
        self, address: str, *, origin: str | None = None, protocols: tuple[str, ...] = ("xmpp",)
    ) -> WebSocketClient:
        """Open the WebSocket; raises aiohttp.WSServerHandshakeError when refused."""
        self.session = aiohttp.ClientSession()
        headers = {"Origin": origin} if origin else {}
        try:
            self.socket = await self.session.ws_connect(
                address,
                protocols=protocols,
                headers=headers,
                ssl=client_context(),
                timeout=aiohttp.ClientWSTimeout(ws_close=TIMEOUT),
                autoping=True,
            )
        except BaseException:
            await self.session.close()
            raise
        return self

    async def send(self, data: str | bytes) -> None:
        await self.socket.send_str(data.decode() if isinstance(data, bytes) else data)

    async def _receive(self) -> str:
        message = await self.socket.receive()
        if message.type is not aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"WebSocket {message.type.name} while reading; got {self.buffer!r}")
        self.messages.append(message.data)
        self.buffer += message.data
        return message.data

    async def expect(self, pattern: str, timeout: float = TIMEOUT) -> re.Match:
        regex = re.compile(pattern, re.DOTALL)

        async def wait():
            while True:
                match = regex.search(self.buffer)
                if match:
                    self.buffer = self.buffer[match.end() :]
                    return match
                await self._receive()

        return await asyncio.wait_for(wait(), timeout)

    async def closed(self, timeout: float = TIMEOUT) -> str:
        """Wait until the server closes the WebSocket; return what it sent meanwhile."""

        async def drain():
            while True:
                try:
                    await self._receive()
                except ConnectionError:
                    return self.buffer

        return await asyncio.wait_for(drain(), timeout)

    async def open_stream(self) -> re.Match:
        await self.send(f"<open xmlns='{NS_FRAMING}' to='{self.domain}' version='1.0'/>")
        await self.expect(r"<open [^>]*/>")
        return await self.expect(r"<stream:features[^>]*>(.*?)</stream:features>")

    async def login_to(
        self,
        address: str,
        user: str,
        password: str,
        *,
        resource: str = "web",
        mechanism: str = "SCRAM-SHA-256",
        origin: str | None = None,
    ) -> WebSocketClient:
        await self.connect_to(address, origin=origin)
        await self.open_stream()
        await self.authenticate(user, password, mechanism)
        await self.open_stream()
        await self.send(
            f"<iq type='set' id='bind' xmlns='jabber:client'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            f"<resource>{resource}</resource></bind></iq>"
        )
        self.jid = (await self.expect(r"<jid>([^<]+)</jid>")).group(1)
        await self.expect(r"</iq>")
        return self

    def ssl_object(self):
        return self.socket.get_extra_info("ssl_object")

    def drop(self) -> None:
        """Lose the connection: no <close/>, no WebSocket closing handshake."""
        self.socket.get_extra_info("socket").shutdown(2)

    async def close(self) -> None:
        if self.socket is not None:
            await self.socket.close()
        if self.session is not None:
            await self.session.close()
