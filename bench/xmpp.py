"""A minimal XMPP client for load generation.

Cheap on purpose: raw asyncio protocols, stanzas written as pre-built bytes, and
no XML parser. During negotiation the byte stream is cut into top-level elements by
counting tags (`Splitter`); in the hot paths the scenarios swap in their own
`on_data` callback that only looks for markers such as ``</message>``.

Everything here talks to a server on the loopback interface only.
"""

import asyncio
import base64
import collections
import hashlib
import hmac
import json
import os
import re
import socket
import ssl

NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_REGISTER = "jabber:iq:register"
NS_ROSTER = "jabber:iq:roster"
NS_PING = "urn:xmpp:ping"
NS_SM = "urn:xmpp:sm:3"

IP_BIND_ADDRESS_NO_PORT = 24  # linux/in.h: let connect() pick the port per 4-tuple

STREAM_END = b"</stream:stream>"


class XMPPError(Exception):
    """The server said no, closed the stream, or answered something unexpected."""


class AuthError(XMPPError):
    pass


def stream_header(domain: str) -> bytes:
    return (
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
        "xmlns:stream='http://etherx.jabber.org/streams' "
        f"to='{domain}' version='1.0'>"
    ).encode()


def xml_escape(text: str) -> str:
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("'", "&apos;")
        .replace('"', "&quot;")
    )


_ATTR_CACHE: dict = {}


def attr(stanza: bytes, name: str) -> str | None:
    """Value of attribute `name` on the top element of `stanza` (either quote style)."""
    rx = _ATTR_CACHE.get(name)
    if rx is None:
        rx = _ATTR_CACHE[name] = re.compile(rb"\s" + name.encode() + rb"\s*=\s*(['\"])(.*?)\1", re.S)
    end = stanza.find(b">")
    m = rx.search(stanza, 0, end if end >= 0 else len(stanza))
    return m.group(2).decode() if m else None


def text_of(stanza: bytes) -> bytes:
    """Character data of a leaf element such as <challenge>...</challenge>."""
    start = stanza.find(b">")
    if start < 0 or stanza[start - 1 : start] == b"/":
        return b""
    end = stanza.rfind(b"</")
    return stanza[start + 1 : end].strip()


def inner(stanza: bytes, tag: bytes) -> bytes | None:
    """Text of the first <tag>...</tag> inside `stanza` (namespace-agnostic, no nesting)."""
    i = stanza.find(b"<" + tag)
    if i < 0:
        return None
    j = stanza.find(b">", i)
    if stanza[j - 1 : j] == b"/":
        return b""
    k = stanza.find(b"</" + tag, j)
    return stanza[j + 1 : k] if k >= 0 else None


class Splitter:
    """Cut an XMPP byte stream into top-level elements.

    Yields the stream header (``<stream:stream ...>``), each complete stanza or
    nonza, and ``</stream:stream>``. It counts tags only: good enough for
    servers, which escape ``>`` inside attribute values.
    """

    __slots__ = ("buf", "scan", "depth", "start")

    def __init__(self):
        self.buf = bytearray()
        self.scan = 0
        self.depth = 0
        self.start = 0

    def reset(self):
        self.__init__()

    def feed(self, data: bytes) -> list:
        buf = self.buf
        buf += data
        out = []
        i = self.scan
        depth = self.depth
        while True:
            lt = buf.find(b"<", i)
            if lt < 0:
                i = len(buf)
                break
            gt = buf.find(b">", lt)
            if gt < 0:
                i = lt
                break
            c = buf[lt + 1]
            if c == 0x3F or c == 0x21:  # <?xml ...?> or <!...>
                i = gt + 1
                continue
            if c == 0x2F:  # end tag
                if depth == 0:
                    out.append(STREAM_END)
                else:
                    depth -= 1
                    if depth == 0:
                        out.append(bytes(buf[self.start : gt + 1]))
                i = gt + 1
                continue
            selfclose = buf[gt - 1] == 0x2F
            if depth == 0:
                if buf.startswith(b"stream:stream", lt + 1):
                    out.append(bytes(buf[lt : gt + 1]))
                elif selfclose:
                    out.append(bytes(buf[lt : gt + 1]))
                else:
                    self.start = lt
                    depth = 1
            elif not selfclose:
                depth += 1
            i = gt + 1
        cut = i if depth == 0 else self.start
        if cut:
            del buf[:cut]
            i -= cut
            self.start = 0
        self.scan = i
        self.depth = depth
        return out

    def leftover(self) -> bytes:
        return bytes(self.buf)


class Conn(asyncio.Protocol):
    """One client connection.

    Three ways to receive: `await next()` for the next element (negotiation),
    `on_stanza(bytes)` for a callback per element, or `on_data(bytes)` for the
    raw bytes (hot path, no splitting at all).
    """

    def __init__(self):
        self.transport = None
        self.splitter = Splitter()
        self.queue = collections.deque()
        self.waiter = None
        self.on_data = None
        self.on_stanza = None
        self.closed = False
        self.close_reason = None
        self.jid = None
        self.user = None
        self.rate = None  # bytes/s this client reads at most (`throttle`)
        self.bytes_read = 0

    # asyncio.Protocol
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.bytes_read += len(data)
        if self.rate:
            # a slow reader: take the next bytes only once these have been "read"
            self.transport.pause_reading()
            asyncio.get_running_loop().call_later(len(data) / self.rate, self._read_on)
        if self.on_data is not None:
            self.on_data(data)
            return
        items = self.splitter.feed(data)
        if not items:
            return
        if self.on_stanza is not None:
            for item in items:
                self.on_stanza(item)
            return
        self.queue.extend(items)
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        self.closed = True
        self.close_reason = exc
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    # negotiation-time reading
    async def next(self) -> bytes:
        while not self.queue:
            if self.closed:
                raise XMPPError(f"connection closed ({self.close_reason or 'by peer'})")
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
            self.waiter = None
        item = self.queue.popleft()
        if item.startswith(b"<stream:error"):
            raise XMPPError(f"stream error: {item[:300]!r}")
        if item is STREAM_END or item == STREAM_END:
            raise XMPPError("server closed the stream")
        return item

    async def iq_reply(self, iq_id: str) -> bytes:
        """Wait for the result or error for `iq_id`; other stanzas are dropped."""
        while True:
            s = await self.next()
            if s.startswith(b"<iq") and attr(s, "id") == iq_id:
                return s

    def set_stanza_handler(self, fn):
        """Switch to one callback per element, replaying what is queued."""
        self.on_stanza = fn
        while self.queue:
            fn(self.queue.popleft())

    def set_data_handler(self, fn):
        """Switch to raw bytes; queued elements and a partial one are replayed as bytes."""
        pending = b"".join(self.queue) + self.splitter.leftover()
        self.queue.clear()
        self.splitter.reset()
        self.on_data = fn
        if pending:
            fn(pending)

    def _read_on(self):
        if self.rate and not self.transport.is_closing():
            self.transport.resume_reading()

    def throttle(self, bytes_per_s: float | None):
        """Read at most `bytes_per_s` on average (None: as fast as data comes)."""
        self.rate = bytes_per_s
        if not bytes_per_s and not self.transport.is_closing():
            self.transport.resume_reading()

    def write(self, data: bytes):
        self.transport.write(data)

    def close(self):
        if self.transport is not None and not self.transport.is_closing():
            try:
                self.transport.write(STREAM_END)
            except Exception:
                pass
            self.transport.close()

    def abort(self):
        if self.transport is not None:
            self.transport.abort()


class ScramCache:
    """SaltedPassword per (user, salt, iterations), kept on disk between runs.

    Real clients cache it too (SCRAM's point); here it keeps PBKDF2 out of the
    load generator's hot path so that a login costs the generator little.
    """

    def __init__(self, path=None):
        self.path = path
        self.data = {}
        self.dirty = False
        if path and os.path.exists(path):
            try:
                with open(path) as f:
                    self.data = json.load(f)
            except (OSError, ValueError):
                self.data = {}

    def salted(self, user: str, password: str, salt: bytes, iterations: int) -> bytes:
        key = f"{user}:{base64.b64encode(salt).decode()}:{iterations}"
        hit = self.data.get(key)
        if hit is not None:
            return bytes.fromhex(hit)
        value = hashlib.pbkdf2_hmac("sha1", password.encode(), salt, iterations)
        self.data[key] = value.hex()
        self.dirty = True
        return value

    def has_user(self, user: str) -> bool:
        prefix = user + ":"
        return any(k.startswith(prefix) for k in self.data)

    def users(self) -> set:
        return {k.rsplit(":", 2)[0] for k in self.data}

    def save(self):
        if self.path and self.dirty:
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.data, f)
            os.replace(tmp, self.path)
            self.dirty = False


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha1).digest()


def _saslname(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


async def sasl_scram_sha1(conn: Conn, user: str, password: str, cache: ScramCache):
    """SCRAM-SHA-1 (RFC 5802) without channel binding, as in RFC 6120's SASL."""
    cnonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = f"n={_saslname(user)},r={cnonce}"
    conn.write(
        f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-1'>".encode()
        + base64.b64encode(b"n,," + first_bare.encode())
        + b"</auth>"
    )
    s = await conn.next()
    if not s.startswith(b"<challenge"):
        raise AuthError(f"SCRAM: expected a challenge, got {s[:200]!r}")
    server_first = base64.b64decode(text_of(s)).decode()
    fields = dict(part.split("=", 1) for part in server_first.split(","))
    nonce, salt, iterations = fields["r"], base64.b64decode(fields["s"]), int(fields["i"])
    if not nonce.startswith(cnonce):
        raise AuthError("SCRAM: server nonce does not extend ours")
    salted = cache.salted(user, password, salt, iterations)
    final_bare = f"c=biws,r={nonce}"
    auth_message = f"{first_bare},{server_first},{final_bare}".encode()
    client_key = _hmac(salted, b"Client Key")
    signature = _hmac(hashlib.sha1(client_key).digest(), auth_message)
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    conn.write(
        f"<response xmlns='{NS_SASL}'>".encode()
        + base64.b64encode(final_bare.encode() + b",p=" + base64.b64encode(proof))
        + b"</response>"
    )
    s = await conn.next()
    if s.startswith(b"<challenge"):  # server-final as a challenge
        extra = text_of(s)
        conn.write(f"<response xmlns='{NS_SASL}'/>".encode())
        s = await conn.next()
    elif s.startswith(b"<success"):
        extra = text_of(s)
    else:
        extra = b""
    if not s.startswith(b"<success"):
        raise AuthError(f"SASL failed for {user}: {s[:200]!r}")
    if extra:
        server_final = base64.b64decode(extra).decode()
        expected = base64.b64encode(_hmac(_hmac(salted, b"Server Key"), auth_message)).decode()
        if server_final != "v=" + expected:
            raise AuthError("SCRAM: bad server signature")


def client_tls_context() -> ssl.SSLContext:
    """TLS without verification: the servers under test use self-signed certificates."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Target:
    """Where to connect and how: the only thing scenarios know about a server."""

    def __init__(
        self, host, port, domain, muc_domain, sources=("127.0.0.1",), cache=None, tls_context=None, timeout=60.0
    ):
        self.host = host
        self.port = port
        self.domain = domain
        self.muc_domain = muc_domain
        self.sources = list(sources) or [None]
        self.cache = cache or ScramCache()
        self.tls_context = tls_context or client_tls_context()
        self.timeout = timeout
        self._rr = 0

    def next_source(self):
        self._rr += 1
        return self.sources[self._rr % len(self.sources)]


async def connect(target: Target, rcvbuf: int | None = None) -> Conn:
    """A connection; `rcvbuf` sets a small socket receive buffer (before connect, so
    that the TCP window follows it), as on a phone on a slow network."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        src = target.next_source()
        if src:
            try:
                sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            except OSError:
                pass
            sock.bind((src, 0))
        await loop.sock_connect(sock, (target.host, target.port))
        _, conn = await loop.create_connection(Conn, sock=sock)
    except BaseException:
        sock.close()
        raise
    return conn


async def open_stream(conn: Conn, domain: str) -> bytes:
    """Send a stream header, return the <stream:features/> element."""
    conn.splitter.reset()
    conn.write(stream_header(domain))
    header = await conn.next()
    if not header.startswith(b"<stream:stream"):
        raise XMPPError(f"expected a stream header, got {header[:200]!r}")
    features = await conn.next()
    if not features.startswith(b"<stream:features"):
        raise XMPPError(f"expected stream features, got {features[:200]!r}")
    return features


async def starttls(conn: Conn, target: Target):
    conn.write(f"<starttls xmlns='{NS_TLS}'/>".encode())
    s = await conn.next()
    if not s.startswith(b"<proceed"):
        raise XMPPError(f"STARTTLS refused: {s[:200]!r}")
    loop = asyncio.get_running_loop()
    conn.transport = await loop.start_tls(conn.transport, conn, target.tls_context, server_hostname=target.domain)


_iq_counter = 0


def new_id(prefix="b") -> str:
    global _iq_counter
    _iq_counter += 1
    return f"{prefix}{_iq_counter}"


async def login(
    target: Target,
    user: str,
    password: str,
    *,
    tls=False,
    resource="bench",
    bind=True,
    presence=False,
    sm=False,
    rcvbuf=None,
) -> Conn:
    """Connect, (STARTTLS), SCRAM-SHA-1, bind, (XEP-0198 <enable/>); return the live
    connection. With `sm`, hand it to `StreamManagement` before the server sends
    anything more (the first stanza after <enabled/> is number 1)."""
    conn = await connect(target, rcvbuf)
    try:
        features = await open_stream(conn, target.domain)
        if tls:
            if b"<starttls" not in features:
                raise XMPPError("server does not offer STARTTLS")
            await starttls(conn, target)
            features = await open_stream(conn, target.domain)
        if b">SCRAM-SHA-1<" not in features:
            raise XMPPError(f"server does not offer SCRAM-SHA-1: {features[:400]!r}")
        await sasl_scram_sha1(conn, user, password, target.cache)
        conn.user = user
        if not bind:
            return conn
        features = await open_stream(conn, target.domain)
        iq_id = new_id("bind")
        conn.write(
            f"<iq type='set' id='{iq_id}'><bind xmlns='{NS_BIND}'>"
            f"<resource>{xml_escape(resource)}</resource></bind></iq>".encode()
        )
        reply = await conn.iq_reply(iq_id)
        if attr(reply, "type") != "result":
            raise XMPPError(f"bind failed: {reply[:300]!r}")
        jid = inner(reply, b"jid")
        conn.jid = jid.decode() if jid else f"{user}@{target.domain}/{resource}"
        i = features.find(NS_SESSION.encode())
        if i >= 0 and b"<optional" not in features[i : i + 200]:
            iq_id = new_id("sess")
            conn.write(f"<iq type='set' id='{iq_id}'><session xmlns='{NS_SESSION}'/></iq>".encode())
            await conn.iq_reply(iq_id)
        if sm:
            if f"'{NS_SM}'".encode() not in features and f'"{NS_SM}"'.encode() not in features:
                raise XMPPError("server does not offer stream management (XEP-0198)")
            conn.write(f"<enable xmlns='{NS_SM}' resume='true'/>".encode())
            reply = await conn.next()
            if not reply.startswith(b"<enabled"):
                raise XMPPError(f"XEP-0198 <enable/> refused: {reply[:300]!r}")
        if presence:
            conn.write(b"<presence/>")
        return conn
    except BaseException:
        conn.abort()
        raise


class StreamManagement:
    """The client side of XEP-0198 after <enabled/>, as a phone does it: count the
    stanzas received ('h') and answer every <r/> with <a h='..'/> as soon as it is read.
    Each stanza goes on to `on_stanza`; `ended` says why the stream ended, if it did."""

    def __init__(self, conn: Conn, on_stanza=None):
        self.conn = conn
        self.h = 0
        self.on_stanza = on_stanza
        self.ended = None
        self.replies = {}
        conn.set_stanza_handler(self._element)

    def _element(self, item: bytes):
        if item.startswith((b"<r ", b"<r/")):
            self.conn.write(f"<a xmlns='{NS_SM}' h='{self.h}'/>".encode())
        elif item.startswith((b"<message", b"<presence", b"<iq")):
            self.h = (self.h + 1) % 2**32
            if item.startswith(b"<iq") and (f := self.replies.pop(attr(item, "id"), None)):
                if not f.done():
                    f.set_result(item)
            elif self.on_stanza is not None:
                self.on_stanza(item)
        elif item.startswith(b"<stream:error") or item == STREAM_END:
            self.ended = self.ended or item[:300].decode(errors="replace")

    async def ping(self, to: str) -> bytes:
        iq_id = new_id("ping")
        f = self.replies[iq_id] = asyncio.get_running_loop().create_future()
        self.conn.write(f"<iq type='get' id='{iq_id}' to='{to}'><ping xmlns='{NS_PING}'/></iq>".encode())
        return await f

    def close(self):
        """Acknowledge everything received, then close the stream."""
        if not self.conn.closed:
            self.conn.write(f"<a xmlns='{NS_SM}' h='{self.h}'/>".encode())
        self.conn.close()


async def register(target: Target, user: str, password: str, conn: Conn = None) -> str:
    """In-band registration (XEP-0077). Returns 'created' or 'exists'."""
    own = conn is None
    if own:
        conn = await connect(target)
        features = await open_stream(conn, target.domain)
        if b"jabber.org/features/iq-register" not in features and b"iq-register" not in features:
            conn.abort()
            raise XMPPError("server does not advertise in-band registration")
    try:
        iq_id = new_id("reg")
        conn.write(
            f"<iq type='set' id='{iq_id}'><query xmlns='{NS_REGISTER}'>"
            f"<username>{xml_escape(user)}</username><password>{xml_escape(password)}</password>"
            "</query></iq>".encode()
        )
        reply = await conn.iq_reply(iq_id)
        if attr(reply, "type") == "result":
            return "created"
        if b"<conflict" in reply:
            return "exists"
        raise XMPPError(f"registration of {user} refused: {reply[:300]!r}")
    finally:
        if own:
            conn.close()


async def ping(conn: Conn, to: str):
    iq_id = new_id("ping")
    conn.write(f"<iq type='get' id='{iq_id}' to='{to}'><ping xmlns='{NS_PING}'/></iq>".encode())
    return await conn.iq_reply(iq_id)
