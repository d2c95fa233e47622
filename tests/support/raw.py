"""A raw XMPP client over a socket, for protocol edge cases that client libraries hide.

It sends bytes as given and waits for patterns in what the server sends, with timeouts.
`login()` does STARTTLS, SASL (PLAIN or SCRAM, with channel binding) and bind;
`authenticate2()` runs SCRAM over SASL2 (XEP-0388), with what else <authenticate/> carries,
`authenticate_token()` a XEP-0484 HT mechanism.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
import ssl

from xmppd import tls as server_tls

TIMEOUT = 10.0
NS_SASL2 = "urn:xmpp:sasl:2"


def client_context(max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if max_version is not None:
        context.maximum_version = max_version
    return context


class RawClient:
    """`source`: the loopback address to connect from (127.0.0.0/8), for per-address limits."""

    def __init__(self, domain: str = "localhost", source: str | None = None):
        self.domain = domain
        self.source = source
        self.buffer = ""
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.jid = None
        self.server_signature = b""  # what the server's last SCRAM final message must prove

    async def connect(self, port: int, *, direct_tls: bool = False, context: ssl.SSLContext | None = None):
        self.reader, self.writer = await asyncio.open_connection(
            "127.0.0.1",
            port,
            ssl=(context or client_context()) if direct_tls else None,
            server_hostname=self.domain if direct_tls else None,
            local_addr=(self.source, 0) if self.source else None,
        )
        return self

    async def send(self, data: str | bytes) -> None:
        self.writer.write(data.encode() if isinstance(data, str) else data)
        await self.writer.drain()

    async def expect(self, pattern: str, timeout: float = TIMEOUT) -> re.Match:
        """Wait until the received text matches `pattern` (regex, DOTALL); consume up to the match."""
        regex = re.compile(pattern, re.DOTALL)

        async def wait():
            while True:
                match = regex.search(self.buffer)
                if match:
                    self.buffer = self.buffer[match.end() :]
                    return match
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError(f"closed while waiting for {pattern!r}; got {self.buffer!r}")
                self.buffer += data.decode("utf-8", "replace")

        return await asyncio.wait_for(wait(), timeout)

    async def closed(self, timeout: float = TIMEOUT) -> str:
        """Wait for the server to close the connection; return everything it sent meanwhile."""

        async def drain():
            while data := await self.reader.read(65536):
                self.buffer += data.decode("utf-8", "replace")
            return self.buffer

        return await asyncio.wait_for(drain(), timeout)

    async def open_stream(self) -> re.Match:
        await self.send(
            f"<?xml version='1.0'?><stream:stream to='{self.domain}' version='1.0' "
            "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        )
        return await self.expect(r"<stream:features>(.*?)</stream:features>")

    async def starttls(self, context: ssl.SSLContext | None = None) -> re.Match:
        await self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        await self.expect(r"<proceed[^>]*/>")
        await self.writer.start_tls(context or client_context(), server_hostname=self.domain)
        return await self.open_stream()

    async def secure(self, port: int, context: ssl.SSLContext | None = None) -> str:
        """Connect, open the stream and STARTTLS; the stream features offered then."""
        await self.connect(port)
        await self.open_stream()
        return (await self.starttls(context)).group(1)

    async def login(
        self,
        port: int,
        user: str,
        password: str,
        *,
        resource: str = "raw",
        mechanism: str = "PLAIN",
        direct_tls: bool = False,
    ) -> RawClient:
        await self.connect(port, direct_tls=direct_tls)
        features = await self.open_stream()
        if not direct_tls and "starttls" in features.group(1):
            await self.starttls()
        await self.authenticate(user, password, mechanism)
        await self.open_stream()
        await self.send(
            f"<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            f"<resource>{resource}</resource></bind></iq>"
        )
        self.jid = (await self.expect(r"<jid>([^<]+)</jid>")).group(1)
        await self.expect(r"</iq>")
        return self

    async def authenticate(
        self, user: str, password: str, mechanism: str = "PLAIN", binding: str | None = None
    ) -> None:
        """SASL; raises AssertionError on <failure/>."""
        if mechanism == "PLAIN":
            token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
            await self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        else:
            await self._scram(user, password, mechanism, binding)
        outcome = await self.expect(r"<(success|failure)[^>]*?(?:/>|>(.*?)</\1>)")
        assert outcome.group(1) == "success", f"authentication failed: {outcome.group(0)}"

    async def authenticate2(
        self, user: str, password: str, mechanism: str = "SCRAM-SHA-256", extra: str = ""
    ) -> re.Match:
        """SCRAM over SASL2, `extra` added to <authenticate/>; the <success/> or <failure/>
        (group 1: which, group 2: its content)."""
        await self._scram(user, password, mechanism, None, sasl2=extra)
        return await self.expect(rf"<(success|failure) xmlns=.{NS_SASL2}.>(.*?)</\1>")

    async def authenticate_token(
        self, user: str, token: str, mechanism: str = "HT-SHA-256-NONE", extra: str = ""
    ) -> re.Match:
        """XEP-0484: an HT mechanism over SASL2 with `token` (`extra`: the <fast/>,
        <user-agent/>... of <authenticate/>); the outcome as authenticate2's."""
        kind = {"EXPR": "tls-exporter", "ENDP": "tls-server-end-point", "UNIQ": "tls-unique"}.get(mechanism[-4:])
        cb_data = self._binding_data(kind) if kind else b""
        proof = hmac.new(token.encode(), b"Initiator" + cb_data, hashlib.sha256).digest()
        self.server_signature = hmac.new(token.encode(), b"Responder" + cb_data, hashlib.sha256).digest()
        initial = base64.b64encode(user.encode() + b"\0" + proof).decode()
        await self.send(
            f"<authenticate xmlns='{NS_SASL2}' mechanism='{mechanism}'>"
            f"<initial-response>{initial}</initial-response>{extra}</authenticate>"
        )
        return await self.expect(rf"<(success|failure) xmlns=.{NS_SASL2}.>(.*?)</\1>")

    async def _scram(
        self, user: str, password: str, mechanism: str, binding: str | None, sasl2: str | None = None
    ) -> None:
        """SASL1's <auth/>, or SASL2's <authenticate/> carrying `sasl2` when it is given."""
        hash_name = "sha256" if "SHA-256" in mechanism else "sha1"
        plus = mechanism.endswith("-PLUS")
        if plus:
            cb_data = self._binding_data(binding)
            gs2 = f"p={binding},,"
        else:
            cb_data, gs2 = b"", "y,," if binding == "y" else "n,,"
        nonce = secrets.token_urlsafe(18)
        first_bare = f"n={user},r={nonce}"
        initial = base64.b64encode((gs2 + first_bare).encode()).decode()
        if sasl2 is None:
            await self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mechanism}'>{initial}</auth>")
        else:
            await self.send(
                f"<authenticate xmlns='{NS_SASL2}' mechanism='{mechanism}'>"
                f"<initial-response>{initial}</initial-response>{sasl2}</authenticate>"
            )
        challenge = base64.b64decode((await self.expect(r"<challenge[^>]*>([^<]*)</challenge>")).group(1)).decode()
        fields = dict(part.split("=", 1) for part in challenge.split(","))
        salted = hashlib.pbkdf2_hmac(hash_name, password.encode(), base64.b64decode(fields["s"]), int(fields["i"]))
        client_key = hmac.new(salted, b"Client Key", hash_name).digest()
        stored_key = hashlib.new(hash_name, client_key).digest()
        without_proof = f"c={base64.b64encode(gs2.encode() + cb_data).decode()},r={fields['r']}"
        auth_message = f"{first_bare},{challenge},{without_proof}".encode()
        signature = hmac.new(stored_key, auth_message, hash_name).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.new(salted, b"Server Key", hash_name).digest()
        self.server_signature = hmac.new(server_key, auth_message, hash_name).digest()
        final = f"{without_proof},p={base64.b64encode(proof).decode()}"
        namespace = "urn:ietf:params:xml:ns:xmpp-sasl" if sasl2 is None else NS_SASL2
        await self.send(f"<response xmlns='{namespace}'>{base64.b64encode(final.encode()).decode()}</response>")

    def ssl_object(self) -> ssl.SSLObject:
        return self.writer.get_extra_info("ssl_object")

    def _binding_data(self, binding: str) -> bytes:
        ssl_object = self.ssl_object()
        if binding == "tls-server-end-point":
            der = ssl_object.getpeercert(binary_form=True)
            return hashlib.sha256(der).digest()
        if binding == "tls-unique":
            return ssl_object.get_channel_binding("tls-unique")
        if binding == "tls-exporter":
            return server_tls._tls_exporter(ssl_object)
        raise ValueError(binding)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await asyncio.wait_for(self.writer.wait_closed(), 5)
            except (TimeoutError, OSError, ssl.SSLError):
                pass
