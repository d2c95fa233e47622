"""End to end: the HTTP server's limits (issue 20), with raw sockets from several
loopback addresses (127.0.0.0/8 is all loopback on Linux, so each test attacks from an
address of its own and checks that another one is still served).

- half-sent requests and half-done TLS handshakes are closed after [http] head_timeout;
- a connection past max_connections_per_ip, or past max_connections, is refused (429 or
  503 on plain HTTP, closed before the handshake on HTTPS) while others are served;
- an upload body that trickles is cut (408) after body_timeout at min_body_rate, and its
  slot is spent cleanly: no file, no record, a new slot works;
- responses name the server "xmppd", without versions, even to requests aiohttp refuses;
- a client that sends its whole request right after its TLS Finished, as Go's does, is
  answered: the gatekeeper pauses reading until aiohttp takes over, it does not cut.
"""

from __future__ import annotations

import asyncio
import ssl
import time

import pytest

from tests.support.accounts import create_accounts
from tests.support.inbox import online
from tests.support.server import XmppdProcess
from tests.support.upload import download, http, payload, put, request_slot, upload

TIMEOUT = 10.0
SERVICE = "upload.localhost"


def start(directory, http_options: str) -> XmppdProcess:
    """A server whose [http] table has `http_options` too."""
    process = XmppdProcess(directory)
    process.config_path.write_text(process.config_path.read_text().replace("[http]\n", f"[http]\n{http_options}\n"))
    return process.start()


@pytest.fixture(scope="module")
def fast(tmp_path_factory):
    """Short head and body timeouts; caps out of the way."""
    process = start(
        tmp_path_factory.mktemp("http-fast"), "head_timeout = 1.0\nbody_timeout = 1.0\nmin_body_rate = 1000"
    )
    yield process
    process.stop()


@pytest.fixture(scope="module")
def capped(tmp_path_factory):
    """Small connection caps; timeouts out of the way."""
    process = start(
        tmp_path_factory.mktemp("http-capped"), "head_timeout = 60.0\nmax_connections_per_ip = 5\nmax_connections = 8"
    )
    yield process
    process.stop()


async def open_from(address: str, port: int, tls: bool = False):
    context = None
    if tls:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return await asyncio.wait_for(
        asyncio.open_connection(
            "127.0.0.1", port, local_addr=(address, 0), ssl=context, server_hostname="localhost" if tls else None
        ),
        TIMEOUT,
    )


async def until_closed(reader: asyncio.StreamReader, timeout: float = TIMEOUT) -> bytes:
    """Everything the server sends until it closes the connection (or resets it: a client
    still sending when the server closes gets a reset after the answer)."""
    received = []

    async def drain():
        while chunk := await reader.read(65536):
            received.append(chunk)

    try:
        await asyncio.wait_for(drain(), timeout)
    except ConnectionResetError:
        pass
    return b"".join(received)


async def hold(address: str, port: int):
    """A connection the server admitted (it answered a request on it) and keeps open."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        reader, writer = await open_from(address, port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        if head.startswith(b"HTTP/1.1 200"):
            await asyncio.wait_for(reader.readuntil(b"}"), TIMEOUT)
            return reader, writer
        writer.close()  # a connection of an earlier request not yet seen gone
        assert time.monotonic() < deadline, head
        await asyncio.sleep(0.1)


async def get_health(address: str, port: int, tls: bool = False) -> bytes:
    """The response to a whole GET /health from `address`."""
    reader, writer = await open_from(address, port, tls)
    writer.write(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    try:
        return await until_closed(reader)
    finally:
        writer.close()


async def served(address: str, port: int, tls: bool = False, timeout: float = TIMEOUT) -> bool:
    """True once a request from `address` is answered 200: the server may take a moment
    to see that connections closed by the test are gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if (await get_health(address, port, tls)).startswith(b"HTTP/1.1 200"):
                return True
        except (ConnectionError, ssl.SSLError):
            pass
        await asyncio.sleep(0.1)
    return False


def close_all(connections) -> None:
    for _, writer in connections:
        writer.close()


# ------------------------------------------------------------------ head timeout


async def test_half_sent_requests_are_closed_after_the_head_timeout(fast):
    before = await fast.limit_reached("http.head_timeout")
    connections = [await open_from("127.0.0.11", fast.http_port) for _ in range(20)]
    for _, writer in connections:
        writer.write(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")  # never finished
    started = time.monotonic()
    answers = await asyncio.gather(*(until_closed(reader) for reader, _ in connections))
    elapsed = time.monotonic() - started
    close_all(connections)
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers), answers[0]
    assert elapsed < 5.0, f"closed after {elapsed:.1f} s with head_timeout = 1 s"
    assert await fast.limit_reached("http.head_timeout") - before == 20
    assert await served("127.0.0.11", fast.http_port)


async def test_silent_connections_and_half_done_tls_handshakes_are_closed(fast):
    plain = [await open_from("127.0.0.12", fast.http_port) for _ in range(5)]
    # TCP to the HTTPS port, then a ClientHello that never comes.
    tls = [await open_from("127.0.0.12", fast.https_port) for _ in range(5)]
    tls[0][1].write(b"\x16\x03\x01\x00")  # a TLS record begun
    await asyncio.gather(*(until_closed(reader) for reader, _ in plain + tls))
    close_all(plain + tls)
    assert await served("127.0.0.12", fast.https_port, tls=True)


async def test_keep_alive_connections_serve_several_requests(fast):
    reader, writer = await open_from("127.0.0.13", fast.http_port)
    for _ in range(3):
        writer.write(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)).startswith(b"HTTP/1.1 200")
        await asyncio.wait_for(reader.readuntil(b"}"), TIMEOUT)
    # Idle afterwards: closed without a word, and not counted as an attack.
    before = await fast.limit_reached("http.head_timeout")
    assert await until_closed(reader) == b""
    writer.close()
    assert await fast.limit_reached("http.head_timeout") == before


# ------------------------------------------------------------------ body rate


async def slot_for(server, size: int):
    jid = create_accounts(server, [f"uploader{time.monotonic_ns()}"])[0]
    client, _ = await online(server, jid)
    return client, await request_slot(client, SERVICE, "slow.bin", size, "application/octet-stream")


def put_head(server, slot, size: int) -> bytes:
    path = slot.put_url.split(f":{server.https_port}", 1)[1]
    return (
        f"PUT {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {slot.headers['Authorization']}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n"
    ).encode()


async def test_a_trickling_upload_is_cut_and_its_slot_spent(fast):
    """One byte every 0.2 s against body_timeout = 1 s at 1000 bytes a second: cut with
    408 after about a second. The slot was taken for this PUT (one upload per slot), so it
    is removed with the partial bytes, as after any failed upload; the client asks for a
    new one (XEP-0363 section 6)."""
    client, slot = await slot_for(fast, 100)
    before = await fast.limit_reached("http.body_timeout")
    try:
        reader, writer = await open_from("127.0.0.14", fast.http_port)
        writer.write(put_head(fast, slot, 100))

        async def trickle():
            for _ in range(100):
                writer.write(b"x")
                await asyncio.sleep(0.2)

        trickling = asyncio.ensure_future(trickle())
        started = time.monotonic()
        answer = await until_closed(reader, timeout=15.0)
        elapsed = time.monotonic() - started
        trickling.cancel()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b"min_body_rate" in answer
        assert elapsed < 5.0, f"cut after {elapsed:.1f} s with body_timeout = 1 s"
        assert await fast.limit_reached("http.body_timeout") - before == 1

        async with http() as session:
            assert (await put(session, slot, b"y" * 100)).status == 404  # the slot is gone
            assert (await download(session, slot.get_url))[0].status == 404  # and nothing stored
            second = await upload(client, SERVICE, session, b"z" * 100, "slow.bin")
            assert (await download(session, second.get_url))[1] == b"z" * 100
    finally:
        await client.logout()


async def test_a_slow_upload_above_the_minimum_rate_is_taken(fast):
    """4000 bytes, 1000 every 0.5 s: twice the minimum rate, so kept, though it takes
    longer than body_timeout."""
    client, slot = await slot_for(fast, 4000)
    try:
        reader, writer = await open_from("127.0.0.15", fast.http_port)
        writer.write(put_head(fast, slot, 4000))
        for _ in range(4):
            writer.write(b"s" * 1000)
            await asyncio.sleep(0.5)
        status = await asyncio.wait_for(reader.readline(), TIMEOUT)
        writer.close()
        assert status.startswith(b"HTTP/1.1 201"), status
    finally:
        await client.logout()


async def like_go(address: str, port: int, request: bytes) -> bytes:
    """`request` over HTTPS the way Go's HTTP client sends a PUT: the TLS Finished and the
    whole request, head and body, in one write, before reading anything. Returns the
    response head, or what came before the server closed."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    reader, writer = await open_from(address, port)
    received = b""

    async def receive() -> bool:
        try:
            data = await asyncio.wait_for(reader.read(65536), TIMEOUT)
        except ConnectionResetError:  # closed while the body was still coming
            data = b""
        if data:
            incoming.write(data)
        else:
            incoming.write_eof()
        return bool(data)

    try:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                writer.write(outgoing.read())
                assert await receive(), "closed during the handshake"
        tls.write(request)
        writer.write(outgoing.read())
        while b"\r\n\r\n" not in received:
            try:
                received += tls.read(65536)
            except ssl.SSLWantReadError:
                if not await receive():
                    break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break
        return received
    finally:
        writer.close()


@pytest.mark.parametrize("size", [70_000, 4 * 1024 * 1024], ids=["go-sendxmpp", "4MiB"])
async def test_a_put_sent_with_the_tls_finished_is_answered(fast, size):
    """go-sendxmpp's upload: the request reaches the server with the end of the handshake,
    before aiohttp has the connection. Past 64 KiB it was cut, after the body was stored,
    so the client saw EOF (and aiohttp's client retried its PUT into a 409). Now reading
    pauses until the hand-over and resumes after it (4 MiB: most of the body comes after)."""
    client, slot = await slot_for(fast, size)
    try:
        data = payload(size, seed=size)
        answer = await like_go("127.0.0.16", fast.https_port, put_head(fast, slot, size) + data)
        assert answer.startswith(b"HTTP/1.1 201 "), answer
        async with http() as session:
            assert (await download(session, slot.get_url))[1] == data
    finally:
        await client.logout()


# ------------------------------------------------------------------ connection caps


async def test_connections_past_the_per_address_cap_are_refused(capped):
    before = await capped.limit_reached("http.max_connections_per_ip")
    held = [await open_from("127.0.0.21", capped.https_port) for _ in range(2)]  # counted before TLS
    held += [await hold("127.0.0.21", capped.http_port) for _ in range(3)]
    try:
        answer = await get_health("127.0.0.21", capped.http_port)
        assert answer.startswith(b"HTTP/1.1 429 ") and b"max_connections_per_ip" in answer, answer
        with pytest.raises((ConnectionError, ssl.SSLError)):
            await get_health("127.0.0.21", capped.https_port, tls=True)
        # Another address is served, on both ports.
        assert (await get_health("127.0.0.22", capped.http_port)).startswith(b"HTTP/1.1 200")
        assert (await get_health("127.0.0.22", capped.https_port, tls=True)).startswith(b"HTTP/1.1 200")
    finally:
        close_all(held)
    assert await capped.limit_reached("http.max_connections_per_ip") - before == 2
    assert await served("127.0.0.21", capped.http_port)  # the count went down again


async def test_connections_past_the_total_cap_are_refused(capped):
    before = await capped.limit_reached("http.max_connections")
    held = [await hold(f"127.0.0.{31 + n % 2}", capped.http_port) for n in range(8)]
    try:
        answer = await get_health("127.0.0.33", capped.http_port)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"max_connections" in answer, answer
    finally:
        close_all(held)
    assert await served("127.0.0.33", capped.http_port)
    # At least that one (hold() may have met the cap too, while earlier connections closed).
    assert await capped.limit_reached("http.max_connections") - before >= 1


# ------------------------------------------------------------------ Server header


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        b"GET /no/such/page HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n",  # aiohttp's own 400
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # TLS on the plain port
    ],
    ids=["health", "not-found", "bad-header", "not-http"],
)
async def test_the_server_header_names_no_versions(fast, request_bytes):
    reader, writer = await open_from("127.0.0.41", fast.http_port)
    writer.write(request_bytes)
    answer = await until_closed(reader)
    writer.close()
    head = answer.partition(b"\r\n\r\n")[0].decode("latin-1")
    assert "\r\nServer: xmppd\r\n" in head, head
    assert "aiohttp" not in answer.decode("latin-1") and "Python" not in answer.decode("latin-1")
