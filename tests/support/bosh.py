"""A raw XEP-0124/0206 client: XMPP over BOSH with aiohttp's client, written from the XEPs.

It is RawClient (tests/support/raw.py) with <body/> wrappers in place of a byte stream:
`send` POSTs one body holding the data with the next rid and does not wait for its
answer, `expect` matches what the answers received so far held (their payloads,
joined in rid order), so RawClient's SASL (PLAIN, SCRAM) runs unchanged. `request`
sends a body and returns its answer; `post` sends any text, for edge cases. `bodies`
keeps every answer, parsed. A poller (`start_polling`) keeps one request waiting at the
server, as a long-polling client does.
"""

from __future__ import annotations

import asyncio
import random
import re

import aiohttp
from lxml import etree

from tests.support.raw import TIMEOUT, RawClient, client_context

NS_HTTPBIND = "http://jabber.org/protocol/httpbind"
NS_XBOSH = "urn:xmpp:xbosh"
PATH = "/http-bind"


def url(server, *, tls: bool = True, path: str = PATH) -> str:
    return f"https://127.0.0.1:{server.https_port}{path}" if tls else f"http://127.0.0.1:{server.http_port}{path}"


class BoshClient(RawClient):
    def __init__(self, domain: str = "localhost"):
        super().__init__(domain)
        self.http: aiohttp.ClientSession | None = None
        self.address = ""
        self.sid: str | None = None
        self.rid = random.randint(2**40, 2**48)  # the last rid sent
        self.origin: str | None = None
        self.bodies: list[etree._Element] = []  # the answers, in rid order
        self._answers: dict[int, etree._Element] = {}
        self._read = self.rid  # the last rid whose answer was read
        self._arrived = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self.terminated: etree._Element | None = None

    async def post(self, text: str) -> tuple[int, bytes, dict]:
        headers = {"Content-Type": "text/xml; charset=utf-8"}
        if self.origin:
            headers["Origin"] = self.origin
        async with self.http.post(
            self.address,
            data=text.encode(),
            headers=headers,
            ssl=client_context(),
            timeout=aiohttp.ClientTimeout(total=TIMEOUT * 10),
        ) as response:
            return response.status, await response.read(), dict(response.headers)

    def body(self, payload: str = "", rid: int | None = None, attributes: str = "") -> str:
        sid = f" sid='{self.sid}'" if self.sid else ""
        return (
            f"<body xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}' rid='{rid or self.rid}'{sid} {attributes}>"
            f"{payload}</body>"
        )

    async def connect_to(
        self, address: str, *, wait: int = 30, hold: int = 1, origin: str | None = None, attributes: str = "ver='1.11'"
    ) -> etree._Element:
        """Create the session; return the creation answer (with the features, if in it)."""
        self.http = aiohttp.ClientSession()
        self.address, self.origin = address, origin
        answer = await self.request(
            attributes=f"to='{self.domain}' xml:lang='en' wait='{wait}' hold='{hold}' xmpp:version='1.0' {attributes}"
        )
        self.sid = answer.get("sid")
        return answer

    async def request(self, payload: str = "", attributes: str = "") -> etree._Element:
        """Send the next rid with `payload`; return its answer once the ones before it
        were read (their payloads go to the buffer in rid order)."""
        self.rid += 1
        rid = self.rid
        status, content, _ = await self.post(self.body(payload, rid, attributes))
        answer = etree.fromstring(content)
        assert status == 200 and answer.tag == f"{{{NS_HTTPBIND}}}body", (status, content)
        self._answers[rid] = answer
        while self._read + 1 in self._answers:
            self._read += 1
            body = self._answers.pop(self._read)
            self.bodies.append(body)
            self.buffer += "".join(etree.tostring(child, encoding="unicode") for child in body)
            if body.get("type") == "terminate":
                self.terminated = body
        self._arrived.set()
        return answer

    async def send(self, data: str | bytes) -> None:
        task = asyncio.get_running_loop().create_task(self.request(data.decode() if isinstance(data, bytes) else data))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await asyncio.sleep(0)  # its rid goes out before the next one

    def start_polling(self) -> None:
        async def poll():
            while self.terminated is None:
                await self.request()

        task = asyncio.get_running_loop().create_task(poll())
        self._tasks.add(task)

    async def expect(self, pattern: str, timeout: float = TIMEOUT) -> re.Match:
        regex = re.compile(pattern, re.DOTALL)

        async def wait():
            while True:
                match = regex.search(self.buffer)
                if match:
                    self.buffer = self.buffer[match.end() :]
                    return match
                if self.terminated is not None:
                    raise ConnectionError(f"terminated while waiting for {pattern!r}; got {self.buffer!r}")
                self._arrived.clear()
                await self._arrived.wait()

        return await asyncio.wait_for(wait(), timeout)

    async def login_to(
        self,
        address: str,
        user: str,
        password: str,
        *,
        resource: str = "web",
        mechanism: str = "SCRAM-SHA-256",
        wait: int = 30,
        polling: bool = True,
    ) -> BoshClient:
        """Log in and bind. Without `polling` no request is left waiting at the server
        (each step of the login has an answer to wait for)."""
        await self.connect_to(address, wait=wait)
        if polling:
            self.start_polling()
        await self.expect(r"<stream:features[^>]*>(.*?)</stream:features>")
        await self.authenticate(user, password, mechanism)
        await self.request(attributes=f"to='{self.domain}' xml:lang='en' xmpp:restart='true'")
        await self.expect(r"<stream:features[^>]*>.*?urn:ietf:params:xml:ns:xmpp-bind.*?</stream:features>")
        await self.send(
            f"<iq xmlns='jabber:client' type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            f"<resource>{resource}</resource></bind></iq>"
        )
        self.jid = (await self.expect(r"<jid>([^<]+)</jid>")).group(1)
        await self.expect(r"</iq>")
        return self

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self.http is not None:
            await self.http.close()
