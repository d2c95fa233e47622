"""A real TURN server (coturn, Debian's package) for the tests, and a small STUN/TURN
client over UDP written from RFC 5389 (STUN: messages, long-term credentials,
MESSAGE-INTEGRITY) and RFC 5766 (TURN: Allocate).

`TurnServer(directory, secret)` runs `turnserver` on a free loopback port with the TURN
REST API scheme (`use-auth-secret`, `static-auth-secret`) and waits until it answers a
STUN Binding request. `allocate(host, port, username, password)` makes an Allocate
request the way a client does: unauthenticated first, then again with the realm and
nonce of the 401 and the long-term credential's MESSAGE-INTEGRITY; it returns the final
response's class (success or the error code).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import socket
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.server import free_port

MAGIC_COOKIE = 0x2112A442
BINDING_REQUEST, BINDING_SUCCESS = 0x0001, 0x0101
ALLOCATE_REQUEST, ALLOCATE_SUCCESS, ALLOCATE_ERROR = 0x0003, 0x0103, 0x0113
USERNAME, MESSAGE_INTEGRITY, ERROR_CODE, REALM, NONCE = 0x0006, 0x0008, 0x0009, 0x0014, 0x0015
REQUESTED_TRANSPORT, XOR_RELAYED_ADDRESS = 0x0019, 0x0016
UDP = 17
TIMEOUT = 2.0  # seconds one request waits for its response (UDP: then sent again)
ATTEMPTS = 5
START_TIMEOUT = 10.0


@dataclass
class Response:
    type: int
    attributes: dict[int, bytes] = field(default_factory=dict)
    integrity_ok: bool = False  # its MESSAGE-INTEGRITY matches the key it was checked with

    @property
    def error_code(self) -> int | None:
        value = self.attributes.get(ERROR_CODE)
        return None if value is None else (value[2] & 0x07) * 100 + value[3]


def _attribute(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)


def encode(kind: int, transaction: bytes, attributes: list[tuple[int, bytes]], key: bytes | None = None) -> bytes:
    """A STUN message; with `key`, MESSAGE-INTEGRITY last (RFC 5389 15.4: the HMAC covers
    the header, whose length already counts the MESSAGE-INTEGRITY attribute)."""
    body = b"".join(_attribute(k, v) for k, v in attributes)
    if key is not None:
        header = struct.pack("!HHI", kind, len(body) + 24, MAGIC_COOKIE) + transaction
        body += _attribute(MESSAGE_INTEGRITY, hmac.new(key, header + body, hashlib.sha1).digest())
    return struct.pack("!HHI", kind, len(body), MAGIC_COOKIE) + transaction + body


def decode(data: bytes, key: bytes | None = None) -> tuple[bytes, Response]:
    """(transaction id, response); `integrity_ok` checked with `key` when given."""
    kind, length, cookie = struct.unpack("!HHI", data[:8])
    assert cookie == MAGIC_COOKIE, "not a STUN message"
    response = Response(kind)
    offset = 20
    while offset < 20 + length:
        attribute, size = struct.unpack("!HH", data[offset : offset + 4])
        value = data[offset + 4 : offset + 4 + size]
        if attribute == MESSAGE_INTEGRITY and key is not None:
            header = struct.pack("!HHI", kind, offset - 20 + 24, MAGIC_COOKIE) + data[8:20]
            response.integrity_ok = hmac.compare_digest(
                value, hmac.new(key, header + data[20:offset], hashlib.sha1).digest()
            )
        response.attributes.setdefault(attribute, value)
        offset += 4 + size + (-size % 4)
    return data[8:20], response


def request(
    sock: socket.socket,
    address: tuple[str, int],
    kind: int,
    attributes: list[tuple[int, bytes]],
    key: bytes | None = None,
    *,
    attempts: int = ATTEMPTS,
    timeout: float = TIMEOUT,
) -> Response:
    """One transaction over UDP, sent again on silence (RFC 5389 7.2.1), bounded in attempts.
    A TURN server keeps its nonce per client address: one socket serves an allocation."""
    transaction = os.urandom(12)
    message = encode(kind, transaction, attributes, key)
    sock.settimeout(timeout)
    for _ in range(attempts):
        sock.sendto(message, address)
        try:
            while True:
                received, response = decode(sock.recv(2048), key)
                if received == transaction:
                    return response
        except TimeoutError:
            continue
    raise TimeoutError(f"no STUN response from {address} after {attempts} attempts")


def udp_socket() -> socket.socket:
    return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def long_term_key(username: str, realm: str, password: str) -> bytes:
    """RFC 5389 15.4: MD5(username ":" realm ":" SASLprep(password)) (our passwords are ASCII)."""
    return hashlib.md5(f"{username}:{realm}:{password}".encode()).digest()


def allocate(host: str, port: int, username: str, password: str) -> Response:
    """An Allocate of a UDP relay (RFC 5766 6.1) with the long-term credential mechanism
    (RFC 5389 10.2): the first request gets 401 with the realm and nonce to use."""
    transport = [(REQUESTED_TRANSPORT, bytes([UDP, 0, 0, 0]))]
    with udp_socket() as sock:
        challenge = request(sock, (host, port), ALLOCATE_REQUEST, transport)
        assert challenge.error_code == 401, f"expected a 401 challenge, got {challenge}"
        realm, nonce = challenge.attributes[REALM], challenge.attributes[NONCE]
        key = long_term_key(username, realm.decode(), password)
        return request(
            sock,
            (host, port),
            ALLOCATE_REQUEST,
            transport + [(USERNAME, username.encode()), (REALM, realm), (NONCE, nonce)],
            key,
        )


class TurnServer:
    """coturn on 127.0.0.1 with the TURN REST API shared secret; `stop()` ends it."""

    def __init__(self, directory: Path, secret: str, realm: str = "localhost"):
        binary = shutil.which("turnserver") or "/usr/bin/turnserver"
        if not os.path.exists(binary):
            raise RuntimeError("coturn is not installed (Debian package coturn: make debian-test-packages)")
        self.port = free_port()
        relay = free_port()
        self.log_path = directory / "turnserver.log"
        self.process = subprocess.Popen(
            [
                binary,
                "-n",
                "--listening-ip",
                "127.0.0.1",
                "--relay-ip",
                "127.0.0.1",
                "--listening-port",
                str(self.port),
                "--min-port",
                str(relay),
                "--max-port",
                str(relay + 10),
                "--use-auth-secret",
                "--static-auth-secret",
                secret,
                "--realm",
                realm,
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                "--no-tcp-relay",
                "--userdb",
                str(directory / "turndb"),
                "--pidfile",
                str(directory / "turnserver.pid"),
                "--log-file",
                str(self.log_path),
                "--simple-log",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"turnserver exited:\n{self.log}")
            try:
                with udp_socket() as sock:
                    if (
                        request(sock, ("127.0.0.1", self.port), BINDING_REQUEST, [], attempts=1, timeout=0.2).type
                        == BINDING_SUCCESS
                    ):
                        return
            except TimeoutError:
                pass
        raise RuntimeError(f"turnserver did not answer within {START_TIMEOUT}s:\n{self.log}")

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
