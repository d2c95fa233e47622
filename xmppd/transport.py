"""The only code that touches sockets: bytes in, bytes out, TLS, back-pressure.

Writes issued during one turn of the event loop are joined into one socket write: under
load a client gets many stanzas per system call. A client whose unsent output is over its
limit is not read from until the output drains (it cannot add load it does not take),
and is `congested`: the session writes nothing more to it until it has `drained`
(xmppd/session.py holds or backlogs what waits). `Transport` is a TCP connection's;
`WebSocketTransport` offers the same to a client on the HTTP server (RFC 7395).
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import socket
import ssl
import struct
import termios
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import WSCloseCode, WSMsgType

if TYPE_CHECKING:
    from aiohttp import web

    from xmppd.http import Connection as HttpConnection

SEND_QUEUE = getattr(termios, "TIOCOUTQ", None)  # the socket's unsent bytes; Linux


class Transport:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, max_output_buffer: int):
        self.reader = reader
        self.writer = writer
        self.max_output_buffer = max_output_buffer
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.peer: str = peer[0]
        self.local_port: int = (writer.get_extra_info("sockname") or ("", 0))[1]
        self.is_loopback = is_loopback_address(self.peer)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._loop = asyncio.get_running_loop()
        self.closing = False
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def read(self) -> bytes:
        """The next bytes from the peer; b"" at end of stream."""
        if self.writer.transport.get_write_buffer_size() > self.max_output_buffer:
            await self.writer.drain()
        return await self.reader.read(65536)

    def write(self, data: bytes) -> None:
        if self.closing:
            return
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)
        self._pending_bytes += len(data)

    def _flush(self) -> None:
        if self._pending and not self.writer.is_closing():
            self.writer.write(b"".join(self._pending))
        self._pending.clear()
        self._pending_bytes = 0

    @property
    def unsent(self) -> int:
        """Bytes written that the peer has not acknowledged yet: ours and, on Linux, the
        kernel's send queue (TIOCOUTQ), where a slow reader's backlog mostly waits."""
        return self._pending_bytes + self.writer.transport.get_write_buffer_size() + _send_queue(self.writer)

    @property
    def congested(self) -> bool:
        """Whether the output the kernel has not taken yet is over `max_output_buffer`."""
        return self._pending_bytes + self.writer.transport.get_write_buffer_size() > self.max_output_buffer

    async def drained(self) -> None:
        """Return once the output is below the transport's low-water mark; raises
        ConnectionError when the connection is lost meanwhile."""
        self._flush()
        await self.writer.drain()

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        return self.writer.get_extra_info("ssl_object")

    async def start_tls(self, context: ssl.SSLContext, timeout: float) -> None:
        # Stop reading before <proceed/> leaves: a fast client's ClientHello must reach the
        # TLS layer, not the plain-text reader (wait_for below yields to the loop first).
        self.writer.transport.pause_reading()
        self._flush()
        await self.writer.drain()
        await asyncio.wait_for(self.writer.start_tls(context), timeout)

    def abort(self) -> None:
        """Cut the connection at once, unflushed (a peer that stopped answering)."""
        self.closing = True
        self._pending.clear()
        self._pending_bytes = 0
        self.writer.transport.abort()

    async def close(self, timeout: float = 5.0) -> None:
        """Flush what is pending, then close; abort a peer that does not take it in time."""
        if self.closing:
            return
        self._flush()
        self.closing = True
        try:
            async with asyncio.timeout(timeout):  # a deadline, not a task per wait
                await self.writer.drain()
            self.writer.close()
            async with asyncio.timeout(timeout):
                await self.writer.wait_closed()
        except (TimeoutError, OSError, ssl.SSLError):
            self.writer.transport.abort()


class WebSocketTransport:
    """What C2SConnection needs of a Transport, over a WebSocket (RFC 6455) that aiohttp
    accepted on the HTTP server (xmppd/websocket.py): each read is one whole message;
    each write becomes messages through `encode` (RFC 7395 framing) and goes out as
    frames written to the connection's transport, joined per turn of the event loop and
    paced as a TCP client's output is. No STARTTLS: TLS, if any, is the HTTPS connection's."""

    def __init__(
        self,
        socket: web.WebSocketResponse,
        connection: HttpConnection,
        *,
        encode: Callable[[bytes], list[bytes]],
        max_output_buffer: int,
    ):
        self.socket = socket
        self.connection = connection
        self.transport = connection.transport
        self.encode = encode
        self.max_output_buffer = max_output_buffer
        peer = self.transport.get_extra_info("peername") or ("?", 0)
        self.peer: str = peer[0]
        self.is_loopback = is_loopback_address(self.peer)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._loop = asyncio.get_running_loop()
        self.closing = False
        self._closed: asyncio.Task | None = None

    async def read(self) -> bytes:
        """The next message from the peer; b"" once the WebSocket is closing."""
        if self.transport.get_write_buffer_size() > self.max_output_buffer:
            await self.connection.drained()
        message = await self.socket.receive()
        if message.type is WSMsgType.TEXT:
            return message.data if isinstance(message.data, bytes) else message.data.encode()
        if message.type is WSMsgType.BINARY:
            await self.socket.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"XMPP takes text messages (RFC 7395)")
        return b""

    def write(self, data: bytes) -> None:
        if self.closing or self.socket.closed:
            return
        if not self._pending:
            self._loop.call_soon(self._flush)
        for message in self.encode(data):
            frame = _text_frame(message)
            self._pending.append(frame)
            self._pending_bytes += len(frame)

    def _flush(self) -> None:
        # Not past a close frame that aiohttp sent meanwhile (RFC 6455 5.5.1).
        if self._pending and not self.socket.closed and not self.transport.is_closing():
            self.transport.write(b"".join(self._pending))
        self._pending.clear()
        self._pending_bytes = 0

    @property
    def unsent(self) -> int:
        return self._pending_bytes + self.transport.get_write_buffer_size() + _send_queue(self.transport)

    @property
    def congested(self) -> bool:
        return self._pending_bytes + self.transport.get_write_buffer_size() > self.max_output_buffer

    async def drained(self) -> None:
        self._flush()
        await self.connection.drained()

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        return self.transport.get_extra_info("ssl_object")

    def abort(self) -> None:
        self.closing = True
        self._pending.clear()
        self._pending_bytes = 0
        self.transport.abort()

    async def close(self, timeout: float = 5.0) -> None:
        """Flush what is pending, then the closing handshake; abort a peer that does not
        answer it in time. A second call waits for the first one's end: the request
        handler must not return before (aiohttp would cut the handshake)."""
        if self._closed is None:
            self._flush()
            self.closing = True
            self._closed = self._loop.create_task(self._close(timeout))
        await asyncio.shield(self._closed)

    async def _close(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self.socket.close()
        except (TimeoutError, OSError, ssl.SSLError):
            self.transport.abort()


def _text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented text frame (RFC 6455 5.2): what a server sends."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


def _send_queue(transport: asyncio.BaseTransport | asyncio.StreamWriter) -> int:
    """The bytes in the socket's kernel send queue (TIOCOUTQ, Linux), where a slow
    reader's backlog mostly waits; 0 where that cannot be known."""
    sock = transport.get_extra_info("socket")
    if sock is None or SEND_QUEUE is None:
        return 0
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), SEND_QUEUE, b"\0\0\0\0"))[0]
    except OSError:
        return 0


def is_loopback_address(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


async def read_stream(transport, stream, handle: Callable[[Any], Awaitable[None]], closed: Callable[[], bool]) -> None:
    """Feed what the peer sends into the sans-IO `stream` and each event it yields to
    `handle`, until the peer stops sending or `closed()` (a client's or a component's
    connection: xmppd/c2s.py, xmppd/component.py)."""
    while not closed():
        data = await transport.read()
        if not data:
            return
        stream.receive_data(data)
        for event in stream.events():
            await handle(event)
            if closed():
                return
