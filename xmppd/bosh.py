"""XEP-0124 BOSH and XEP-0206 XMPP over BOSH: the [bosh] endpoint of the HTTP server.

For clients behind proxies that let no WebSocket through: a client POSTs <body/>
wrappers to `<[http] public_url><path>` (/http-bind). Each BOSH session runs the
C2SConnection of TCP clients (xmppd/c2s.py) over a `BoshTransport`, its bodies framed as
xmppd/protocol/bosh.py says: the same negotiation, stanza size limit (for a whole
body), unauthenticated timeout, login throttles, admission per address, back-pressure
and metrics (listener "bosh").

The session, as XEP-0124 has it:
- created by a body without 'sid' whose 'to' is one of our domains (else host-unknown,
  or improper-addressing without 'to'), answered with an unguessable sid (192 random bits),
  'wait' and 'hold' as asked up to max_wait and max_hold, requests = hold + 1, polling,
  inactivity, maxpause, and the stream features (XEP-0206);
- bodies are handed on in rid order: one ahead of its turn waits for the ones before it
  within the window of 'requests' rids; a rid past the window, or one already answered
  whose answer is no longer kept, ends the session with item-not-found; a repeated rid
  gets the answer it had (the last 'requests' answers are kept) or, while held, waits
  for it;
- up to 'hold' requests are held until there is output for them or 'wait' passes; a
  new one beyond them answers the oldest; a 'pause' (up to max_pause) answers every
  held one and lets the client stay away that long once;
- with no request held for 'inactivity' seconds the session is dropped silently, as a
  TCP connection that was lost (XEP-0198 may resume it); a polling session (hold or
  wait 0) that sends two empty requests closer than 'polling' seconds is ended with
  policy-violation;
- a type='terminate' body ends the stream (the user goes offline); a stream error
  ends the session with remote-stream-error and the error's content (system-shutdown
  with the binding's own condition).

Binding errors are <body type='terminate' condition='...'/> with HTTP 200 for clients
that sent 'ver' (XEP-0124 1.6 on); legacy ones, and requests that name no live session,
get the HTTP status the XEP gave them (bad-request 400, policy-violation 403,
item-not-found 404). Sessions begun over HTTPS take no request over plain HTTP (the
connection is closed, the session goes on: XEP-0124 section 20.1); plain HTTP is
refused (403) unless the peer is on loopback and [c2s] require_encryption is off.

CORS, as browsers need it: a page of an allowed origin (`allowed_origins`, by default
[http] public_url's only, "*" any) gets Access-Control-Allow-Origin on its answers and
on the preflight (OPTIONS: methods GET, POST, OPTIONS; header Content-Type; cached two
hours); other origins get 403. A request without Origin is no browser's and not checked.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import secrets
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import hdrs, web
from lxml import etree
from yarl import URL

from xmppd.metrics import LIMIT_REACHED
from xmppd.protocol.bosh import Body, BoshError, parse_body, wrap
from xmppd.protocol.framing import CLOSE_MESSAGE, frames
from xmppd.transport import is_loopback_address
from xmppd.websocket import _origin

if TYPE_CHECKING:
    from xmppd.config import Config
    from xmppd.http import HttpServer

log = logging.getLogger(__name__)

VERSION = "1.11"  # of XEP-0124
CONTENT_TYPE = "text/xml; charset=utf-8"
LEGACY_STATUS = {"bad-request": 400, "policy-violation": 403, "item-not-found": 404}
PREFLIGHT = {
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type",
    "Access-Control-Max-Age": "7200",
}
_STREAM_ERROR = b"<stream:error"
# The 'content' types a client may ask its answers to be sent as (XEP-0124 section 7.1):
# XML or plain text; never HTML, which a browser would run the stanzas of others in.
_CONTENT = re.compile(r"(text/xml|application/xml|text/plain)(; ?charset=utf-8)?", re.IGNORECASE)


def endpoint_url(config: Config, public_url: str) -> str | None:
    """The URL clients POST to, from [http] public_url; None when off."""
    path = config.bosh.path
    if not path:
        return None
    url = URL(public_url)
    return str(url.with_path(url.path.rstrip("/") + path))


def terminal(condition: str | None = None, payloads: bytes = b"") -> bytes:
    attributes = {"type": "terminate"}
    if condition is not None:
        attributes["condition"] = condition
    return wrap(payloads, attributes)


class BoshEndpoint:
    def __init__(self, config: Config, http: HttpServer, serve: Callable[..., Awaitable[None]]):
        self.config = config
        self.options = config.bosh
        self.http = http
        self.serve = serve  # Server.serve: admission, metrics, the connection's run
        self.domains = frozenset(host.domain for host in config.hosts)
        origins = self.options.allowed_origins or (http.public_url,)
        self.any_origin = "*" in origins
        self.origins = frozenset(_origin(origin) for origin in origins if origin != "*")
        self.sessions: dict[str, BoshTransport] = {}
        self._tasks: set[asyncio.Task] = set()

    def add_route(self) -> None:
        if self.options.path:
            for method in ("GET", "POST", "OPTIONS"):
                self.http.add_route(method, self.options.path, self.accept)

    async def accept(self, request: web.Request) -> web.StreamResponse:
        origin = request.headers.get(hdrs.ORIGIN)
        cors = {}
        if origin is not None:
            if not self.any_origin and _origin(origin) not in self.origins:
                return web.Response(
                    status=403, text=f"pages of {origin} may not connect here ([bosh] allowed_origins)\n"
                )
            cors = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        if request.method == "OPTIONS":
            return web.Response(status=200, headers={**cors, **PREFLIGHT})
        if request.method == "GET":
            return web.Response(
                text="this is an XMPP over BOSH endpoint (XEP-0206): POST <body/> wrappers here\n", headers=cors
            )
        if request.transport is None:
            return web.Response(status=400)
        is_secure = request.transport.get_extra_info("ssl_object") is not None
        limit = self.config.c2s.max_stanza_bytes
        data = bytearray()
        async for chunk in self.http.body(request):
            data += chunk
            if len(data) > limit:
                break  # parse_body refuses it: no need for the rest
        try:
            body = parse_body(bytes(data), limit)
        except BoshError as error:
            log.debug("event=bosh-refused peer=%s condition=%s reason=%s", request.remote, error.condition, error.text)
            session = self.sessions.get(error.sid or "")
            if session is not None and session.is_secure == is_secure:
                return self._respond(session.terminate(error.condition), cors, session)
            return self._respond((LEGACY_STATUS[error.condition], terminal(error.condition)), cors)
        if body.sid is None:
            return await self._create(request, body, is_secure, cors)
        session = self.sessions.get(body.sid)
        if session is None:
            return self._respond((404, terminal("item-not-found")), cors)
        if session.is_secure and not is_secure:
            request.transport.close()  # section 20.1: the session goes on
            return web.Response(status=403)
        return self._respond(await session.receive(body), cors, session)

    async def _create(self, request: web.Request, body: Body, is_secure: bool, cors: dict) -> web.Response:
        if not is_secure and (self.config.c2s.require_encryption or not is_loopback_address(request.remote or "")):
            return web.Response(
                status=403, text="encryption is required: use https:// ([c2s] require_encryption)\n", headers=cors
            )
        if not body.get("to"):
            return self._respond((200, terminal("improper-addressing")), cors)
        if body.get("to") not in self.domains:
            return self._respond((200, terminal("host-unknown")), cors)
        try:
            wait = min(int(body.get("wait", str(self.options.max_wait))), self.options.max_wait)
            hold = min(int(body.get("hold", "1")), self.options.max_hold)
        except ValueError:
            wait = hold = -1
        if wait < 0 or hold < 0:
            status = 400 if body.get("ver") is None else 200
            return self._respond((status, terminal("bad-request")), cors)
        if wait == 0:  # section 12: a polling session either way
            hold = 0
        sid = secrets.token_urlsafe(24)
        session = BoshTransport(self, sid, body, request.remote or "?", is_secure, wait=wait, hold=hold)
        self.sessions[sid] = session
        task = asyncio.get_running_loop().create_task(self.serve(session, direct_tls=is_secure, bosh=True))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.debug("event=bosh-session-created peer=%s wait=%d hold=%d", request.remote, wait, hold)
        return self._respond(await session.receive(body), cors, session)

    def _respond(self, answer: tuple[int, bytes], cors: dict, session: BoshTransport | None = None) -> web.Response:
        status, content = answer
        headers = {hdrs.CONTENT_TYPE: session.content_type if session is not None else CONTENT_TYPE, **cors}
        return web.Response(status=status, body=content, headers=headers)

    def forget(self, session: BoshTransport) -> None:
        if self.sessions.get(session.sid) is session:
            del self.sessions[session.sid]


class BoshTransport:
    """A BOSH session as the transport of a C2SConnection: `read` gives the request
    bodies in rid order (`Body`, not bytes; b"" at the end), `write` takes what the
    connection writes for a TCP stream and answers the held requests with it."""

    def __init__(
        self, endpoint: BoshEndpoint, sid: str, creation: Body, peer: str, is_secure: bool, *, wait: int, hold: int
    ):
        options = endpoint.options
        self.endpoint = endpoint
        self.sid = sid
        self.peer = peer
        self.is_loopback = is_loopback_address(peer)
        self.is_secure = is_secure
        self.max_output_buffer = endpoint.config.c2s.max_output_buffer
        self.metrics = endpoint.http.metrics
        self.wait, self.hold, self.requests = wait, hold, hold + 1
        self.inactivity, self.polling, self.max_pause = options.inactivity, options.polling, options.max_pause
        self.is_legacy = creation.get("ver") is None
        content = creation.get("content") or ""
        self.content_type = content if _CONTENT.fullmatch(content) else CONTENT_TYPE
        self.creation_rid = creation.rid
        self.domain = creation.get("to") or ""
        self.rid = creation.rid - 1  # the last rid handed on
        self.closing = False
        self._loop = asyncio.get_running_loop()
        self._bodies: collections.deque[Body] = collections.deque()
        self._readable = asyncio.Event()
        self._early: dict[int, Body] = {}  # ahead of their turn
        self._waiting: dict[int, asyncio.Future] = {}  # their answers
        self._held: dict[int, asyncio.Future] = {}  # rid -> its answer, oldest first
        self._terminate_rid: int | None = None
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._answers: collections.OrderedDict[int, tuple[int, bytes]] = collections.OrderedDict()
        self._output: list[bytes] = []
        self._output_bytes = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._flush_scheduled = False
        self._stream_error: bytes | None = None  # the <stream:error/> written, if any
        self._final: tuple[int, bytes] | None = None  # the answer once the session ended
        self._inactive: asyncio.TimerHandle | None = None
        self._last_empty_poll = -1e9  # when an empty poll got an empty answer
        self._empty_poll: int | None = None  # the rid of the last empty poll

    # ------------------------------------------------------------- requests

    async def receive(self, body: Body) -> tuple[int, bytes]:
        """The answer to a request of this session: (HTTP status, body)."""
        rid = body.rid
        if rid in self._answers:  # section 14.3: the same answer again
            return self._answers[rid]
        if self._final is not None:
            return self._final
        answer = self._held.get(rid) or self._waiting.get(rid)
        if answer is None:
            if rid <= self.rid or rid > self.rid + self.requests:
                return self.terminate("item-not-found")
            answer = self._waiting[rid] = self._loop.create_future()
            self._early[rid] = body
            while self.rid + 1 in self._early and self._final is None:
                self.rid += 1
                self._held[self.rid] = self._waiting.pop(self.rid)
                if self._inactive is not None:
                    self._inactive.cancel()
                    self._inactive = None
                self._take(self._early.pop(self.rid))
        # Shielded: a request whose connection broke keeps its answer for a repeat.
        return await asyncio.shield(answer)

    def _take(self, body: Body) -> None:
        """Hand `body`, the next in rid order, on."""
        rid = body.rid
        pause = body.get("pause")
        if pause is not None:
            if not (pause.isdigit() and int(pause) <= self.max_pause):
                self.metrics.count(LIMIT_REACHED, "bosh.max_pause")
                self.terminate("policy-violation")
                return
            for held in list(self._held):  # section 10: all answered at once, this one empty
                self._answer(held, b"" if held == rid else self._take_output())
            self._start_inactivity(int(pause))
            return
        if self.hold == 0:  # section 12: polls no closer than 'polling'
            if body.payloads or body.is_restart or body.is_terminate:
                self._last_empty_poll, self._empty_poll = -1e9, None
            elif self._loop.time() - self._last_empty_poll < self.polling:
                self.metrics.count(LIMIT_REACHED, "bosh.polling")
                self.terminate("policy-violation")
                return
            else:
                self._empty_poll = rid
        if body.payloads or body.is_restart or body.is_terminate or rid == self.creation_rid:
            self._bodies.append(body)
            self._readable.set()
        if body.is_terminate:
            self._terminate_rid = rid  # answered by close(), once the stream ended
        else:
            self._timers[rid] = self._loop.call_later(self.wait, self._answer_empty, rid)
        if self.hold and len(self._held) > self.hold:
            self._answer(next(iter(self._held)), self._take_output())
        self._schedule_flush()

    def _answer_empty(self, rid: int) -> None:
        if rid in self._held:
            self._answer(rid, self._take_output())

    def _answer(self, rid: int, payloads: bytes, attributes: dict[str, str] | None = None) -> None:
        future = self._held.pop(rid)
        timer = self._timers.pop(rid, None)
        if timer is not None:
            timer.cancel()
        if rid == self.creation_rid:
            attributes = {**self._creation_attributes(), **(attributes or {})}
        answer = (200, wrap(payloads, attributes))
        if rid == self._empty_poll:
            self._last_empty_poll = -1e9 if payloads else self._loop.time()
        self._answers[rid] = answer
        while len(self._answers) > self.requests:
            self._answers.popitem(last=False)
        if not future.done():
            future.set_result(answer)
        if not self._held:
            self._start_inactivity(self.inactivity)

    def _creation_attributes(self) -> dict[str, str]:
        attributes = {
            "sid": self.sid,
            "from": self.domain,
            "wait": str(self.wait),
            "hold": str(self.hold),
            "requests": str(self.requests),
            "polling": str(self.polling),
            "inactivity": str(self.inactivity),
            "maxpause": str(self.max_pause),
            "xmpp:version": "1.0",
            "xmpp:restartlogic": "true",
        }
        if not self.is_legacy:
            attributes["ver"] = VERSION
        return attributes

    def _start_inactivity(self, seconds: int) -> None:
        if self._inactive is not None:
            self._inactive.cancel()
        self._inactive = self._loop.call_later(seconds, self._inactivity_passed)

    def _inactivity_passed(self) -> None:
        """Section 9: no request for too long; the client is gone, as a lost connection."""
        self._inactive = None
        if self._final is None:
            self.metrics.count(LIMIT_REACHED, "bosh.inactivity")
            log.debug("event=bosh-inactive sid=%s", self.sid[:6])
            self._end(terminal("remote-connection-failed"))
        self.endpoint.forget(self)

    def terminate(self, condition: str) -> tuple[int, bytes]:
        """End the session with a terminal binding condition: the answer to every
        request, held or to come, until the session is forgotten."""
        status = LEGACY_STATUS.get(condition, 200) if self.is_legacy else 200
        self._end(terminal(condition), status)
        self._start_inactivity(self.inactivity)  # then forgotten
        return self._final

    def _end(self, content: bytes, status: int = 200) -> None:
        """The client is taken to be gone: the connection reads its end (an interrupted
        session, which XEP-0198 may keep) and every request waiting gets `content`."""
        self.closing = True
        self._final = (status, content)
        self._readable.set()
        for rid, future in [*self._held.items(), *self._waiting.items()]:
            timer = self._timers.pop(rid, None)
            if timer is not None:
                timer.cancel()
            if not future.done():
                future.set_result(self._final)
        self._held.clear()
        self._waiting.clear()
        self._early.clear()
        self._drained.set()

    # ------------------------------------------------------------- output

    def _take_output(self) -> bytes:
        output = b"".join(self._output)
        self._output.clear()
        self._output_bytes = 0
        self._drained.set()
        return output

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Writes of one turn of the event loop go out in one answer, to the oldest
        held request; a polling session's request is answered even without output."""
        self._flush_scheduled = False
        if self._held and (self._output or self.hold == 0) and self._final is None:
            oldest = next(iter(self._held))
            if oldest != self._terminate_rid:
                self._answer(oldest, self._take_output())

    # ------------------------------------------------------------- what C2SConnection uses

    async def read(self) -> Body | bytes:
        """The next body in rid order; b"" once the session ended."""
        if self.congested:
            await self.drained()
        while not self._bodies and not self.closing:
            self._readable.clear()
            await self._readable.wait()
        return self._bodies.popleft() if self._bodies and not self.closing else b""

    def write(self, data: bytes) -> None:
        if self.closing:
            return
        for message in frames(data):
            if message.startswith(b"<open ") or message == CLOSE_MESSAGE:
                continue  # the stream header and end are the binding's
            if message.startswith(_STREAM_ERROR):
                self._stream_error = message
                continue
            self._output.append(message)
            self._output_bytes += len(message)
        if self._output_bytes > self.max_output_buffer:
            self._drained.clear()
        self._schedule_flush()

    @property
    def unsent(self) -> int:
        return self._output_bytes

    @property
    def congested(self) -> bool:
        return self._output_bytes > self.max_output_buffer

    async def drained(self) -> None:
        """Return once the client took the output (a request came for it); raises
        ConnectionError when the session ended meanwhile."""
        await self._drained.wait()
        if self.closing:
            raise ConnectionResetError("BOSH session ended")

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        # Requests of one session come over several HTTPS connections: there is no one
        # TLS channel to bind SCRAM to (no -PLUS mechanism over BOSH).
        return None

    def abort(self) -> None:
        if not self.closing:
            self._end(terminal("remote-connection-failed"))
            self._start_inactivity(self.inactivity)  # then forgotten

    async def close(self, timeout: float = 5.0) -> None:
        """The stream ended: the held requests get the output and the end, with the
        stream error if there was one; without a held request the next one gets it."""
        if self.closing:
            return
        payloads = self._take_output()
        if self._stream_error is None:
            content = terminal(None, payloads)
        else:
            error = etree.fromstring(self._stream_error)
            conditions = [etree.QName(child).localname for child in error]
            if "system-shutdown" in conditions:
                content = terminal("system-shutdown", payloads)
            else:
                content = terminal("remote-stream-error", payloads + b"".join(etree.tostring(child) for child in error))
        held = list(self._held)
        self._end(content)
        if held:
            self.endpoint.forget(self)
        else:  # kept for the next request
            self._start_inactivity(self.inactivity)
        log.debug("event=bosh-session-ended sid=%s", self.sid[:6])


__all__ = ["BoshEndpoint", "BoshTransport", "endpoint_url"]
