"""Real cluster engines for the tests and the bench (issue 15): redis-server and
nats-server with JetStream, on 127.0.0.1.

Both come from Debian's packages (``redis-server``, ``nats-server``), which
``make debian-test-packages`` installs. `EngineProcess` starts one in a directory of
its own on a free port (Redis with its append-only file, JetStream with its file
store), waits until it answers (Redis: ``PING``; NATS: the ``INFO`` greeting with
JetStream on, then ``PING``), and stops it; it can be killed and started again on the
same port, as a cluster test of an engine restart needs.

``engine("redis"|"nats", directory)`` is what the session fixtures of tests/conftest.py
use: it yields the engine's URL (``redis://127.0.0.1:port``, ``nats://127.0.0.1:port``),
or, when ``XMPPD_TEST_REDIS`` / ``XMPPD_TEST_NATS`` names a running one, that URL and
starts nothing. An engine that cannot be had raises `EngineUnavailable` with the
reason: the tests that need it fail with it, they are not skipped.

Knob: ``XMPPD_ENGINE_START_TIMEOUT`` (seconds, default 20).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.s3 import _die_with_parent, _stop, _tail
from tests.support.server import free_port

LOOPBACK = "127.0.0.1"
START_TIMEOUT = float(os.environ.get("XMPPD_ENGINE_START_TIMEOUT", "20"))
ENV_EXTERNAL = {"redis": "XMPPD_TEST_REDIS", "nats": "XMPPD_TEST_NATS"}
PACKAGES = {"redis": "redis-server", "nats": "nats-server"}
# A test engine on a shared machine: JetStream's defaults would reserve most of the
# machine's memory and disk.
NATS_CONFIG = """\
listen: {host}:{port}
jetstream {{
  store_dir: "{store}"
  max_memory_store: 256MB
  max_file_store: 1GB
}}
"""


class EngineUnavailable(RuntimeError):
    """The engine cannot be had on this machine (the reason is the message)."""


def binary(kind: str) -> str:
    """The engine's executable; Debian puts nats-server in /usr/sbin, outside a user's PATH."""
    name = PACKAGES[kind]
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found is None:
        raise EngineUnavailable(
            f"no {name} (Debian package {name}: `make debian-test-packages` "
            f"installs it), and {ENV_EXTERNAL[kind]} is not set"
        )
    return found


class EngineProcess:
    """One redis-server or nats-server in `directory` on a free port of 127.0.0.1 (kept
    across `stop`/`start`, so a restarted engine is found at the same URL)."""

    def __init__(self, kind: str, directory: Path):
        if kind not in PACKAGES:
            raise ValueError(f"unknown engine {kind!r}")
        self.kind = kind
        self.directory = Path(directory)
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{self.kind}://{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / f"{self.kind}.log"

    def start(self) -> EngineProcess:
        """Start the engine and wait until it answers. Call it from a thread that lives as
        long as the engine should: the engine gets SIGTERM when the thread that started
        it ends (PR_SET_PDEATHSIG, so that no engine outlives a killed test run)."""
        executable = binary(self.kind)
        self.directory.mkdir(parents=True, exist_ok=True)
        fixed = bool(self.port)
        for _ in range(1 if fixed else 3):  # a free port may be taken before the engine binds it
            self.port = self.port if fixed else free_port()
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    self._command(executable),
                    cwd=self.directory,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            if self._wait_until_answering():
                return self
            running = self.process.poll() is None
            self.stop()
            if running:
                raise EngineUnavailable(
                    f"{PACKAGES[self.kind]} did not answer within {START_TIMEOUT:.0f} s:\n{_tail(self.log_path)}"
                )
        raise EngineUnavailable(f"{PACKAGES[self.kind]} exited at start-up:\n{_tail(self.log_path)}")

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self.process = None

    def kill(self) -> None:
        """SIGKILL: the engine dies as in a crash, without writing anything more."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None

    def _command(self, executable: str) -> list[str]:
        if self.kind == "redis":
            # The append-only file, as a cluster runs it: what Redis acknowledged
            # survives a SIGKILL of redis-server (written before the reply, fsync each second).
            return [
                executable,
                "--bind",
                LOOPBACK,
                "--port",
                str(self.port),
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--protected-mode",
                "no",
            ]
        config = self.directory / "nats.conf"
        config.write_text(NATS_CONFIG.format(host=LOOPBACK, port=self.port, store=self.directory / "jetstream"))
        return [executable, "--config", str(config)]

    def _wait_until_answering(self) -> bool:
        """True once the engine answers; False if it exited or never answered."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            with contextlib.suppress(OSError):
                if answers(self.kind, LOOPBACK, self.port):
                    return True
            time.sleep(0.02)
        return False


def answers(kind: str, host: str, port: int, timeout: float = 2.0) -> bool:
    """One probe over a fresh connection: does the engine serve requests?"""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        reader = sock.makefile("rb")
        if kind == "redis":
            sock.sendall(b"PING\r\n")
            return reader.readline().startswith(b"+PONG")  # not -LOADING
        greeting = reader.readline()
        if not greeting.startswith(b"INFO ") or not json.loads(greeting[5:]).get("jetstream"):
            return False
        sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
        return reader.readline().startswith(b"PONG")


@contextlib.contextmanager
def engine(kind: str, directory: Path) -> Iterator[str]:
    """The URL of a running engine of `kind` for the duration of the block: the one that
    XMPPD_TEST_REDIS / XMPPD_TEST_NATS names, else one started in `directory`."""
    external = os.environ.get(ENV_EXTERNAL[kind])
    if external:
        yield external
        return
    process = EngineProcess(kind, directory).start()
    try:
        yield process.url
    finally:
        process.stop()
