"""A real xmppd process for end-to-end tests: free ports, a temporary data dir."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class XmppdProcess:
    """`xmppd --config <tmp>/xmppd.toml`; extra TOML is appended to the generated config.

    `port` fixes the client port (default: a free one).
    XMPPD_TEST_SERVER_SECTION adds lines to [server] (e.g. an `extensions` list) when
    `server_section` is not given: a knob for running a subset while debugging.
    """

    def __init__(
        self,
        directory: Path,
        extra_config: str = "",
        domain: str = "localhost",
        server_section: str = "",
        c2s_section: str = "",
        port: int = 0,
        memory_limit: int = 0,
    ):
        self.directory = Path(directory)
        self.domain = domain
        self.memory_limit = memory_limit  # bytes of address space (RLIMIT_AS); 0: none
        self._fixed_port = bool(port)
        self.port = port or free_port()
        self.tls_port = free_port()
        self.http_port = free_port()
        self.https_port = free_port()
        self.config_path = self.directory / "xmppd.toml"
        self.config_path.write_text(
            textwrap.dedent(f"""\
            [server]
            data_dir = "{self.directory / "data"}"
            log_level = "info"
            {server_section or os.environ.get("XMPPD_TEST_SERVER_SECTION", "")}

            [c2s]
            port = {self.port}
            direct_tls_port = {self.tls_port}
            {c2s_section}

            [http]
            port = {self.http_port}
            tls_port = {self.https_port}

            [[hosts]]
            domain = "{domain}"
            admins = ["admin@{domain}"]
            """)
            + textwrap.dedent(extra_config)
        )
        self.process: subprocess.Popen | None = None
        self.output: list[str] = []

    def use_example_config(self, edit=lambda text: text) -> XmppdProcess:
        """Run with conf/xmppd.toml as deployed (domain example.org), changed by `edit`,
        but with this process's data dir and free loopback ports."""
        example = Path(__file__).resolve().parents[2] / "conf" / "xmppd.toml"
        text = edit(example.read_text()).replace(
            'data_dir = "/var/lib/xmppd"', f'data_dir = "{self.directory / "data"}"'
        )
        text = text.replace('interfaces = ["0.0.0.0", "::"]', 'interfaces = ["127.0.0.1"]')
        text = text.replace("#port = 5222", f"port = {self.port}")
        text = text.replace("#direct_tls_port = 5223", f"direct_tls_port = {self.tls_port}")
        text = text.replace("#port = 5280", f"port = {self.http_port}")
        text = text.replace("#tls_port = 5443", f"tls_port = {self.https_port}")
        self.config_path.write_text(text)
        self.domain = "example.org"
        return self

    @property
    def log(self) -> str:
        return "".join(self.output)

    async def wait_for_log(self, text: str, timeout: float = 10.0, count: int = 1) -> None:
        """Return once `text` is in the log (`count` times): a server-side event a test waits for."""

        async def scan():
            while self.log.count(text) < count:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(scan(), timeout)

    def start(self, timeout: float = START_TIMEOUT) -> XmppdProcess:
        """Start and wait until it listens. A port picked by `free_port` can be taken by
        another test process before xmppd binds it: then the free ports are picked again."""
        for _ in range(3):
            try:
                return self._start(timeout)
            except RuntimeError:
                if "address already in use" not in self.log or self._fixed_port:
                    raise
                self._pick_ports_again()
        return self._start(timeout)

    def _pick_ports_again(self) -> None:
        text = self.config_path.read_text()
        for name in ("port", "tls_port", "http_port", "https_port"):
            new = free_port()
            text = text.replace(f"= {getattr(self, name)}\n", f"= {new}\n")
            setattr(self, name, new)
        self.config_path.write_text(text)

    def _start(self, timeout: float) -> XmppdProcess:
        self.output = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "xmppd.cli", "--config", str(self.config_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            preexec_fn=self._limit_memory if self.memory_limit else None,
        )
        ready = threading.Event()

        def pump():
            for line in self.process.stdout:
                self.output.append(line)
                if "listening on" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        # `ready` is set by the listening line, or by the end of the output of a server
        # that gave up (which may not have exited yet).
        if not ready.wait(timeout) or "listening on" not in self.log or self.process.poll() is not None:
            self.kill()
            raise RuntimeError(f"xmppd did not start:\n{self.log}")
        return self

    def _limit_memory(self) -> None:
        """In the child: an attack on memory ends this server, not the machine."""
        resource.setrlimit(resource.RLIMIT_AS, (self.memory_limit, self.memory_limit))

    def stop(self, timeout: float = 20.0) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"xmppd did not stop on SIGTERM:\n{self.log}") from None

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, for durability tests."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def ctl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "xmppd.ctl", "--config", str(self.config_path), *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"xmppctl {' '.join(args)} failed: {result.stdout}{result.stderr}")
        return result

    def adduser(self, local: str, password: str = "secret") -> str:
        from tests.support.accounts import create_accounts

        return create_accounts(self, [local], password)[0]

    async def limit_reached(self, limit: str) -> float:
        """The count of xmppd_limit_reached_total{limit=`limit`} (section.option) in /metrics."""
        return await self.metric(f'xmppd_limit_reached_total{{limit="{limit}"}}')

    async def metric(self, series: str) -> float:
        """The value of one series of /metrics, named as it is written there (0 if absent)."""
        import aiohttp

        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{self.http_port}/metrics") as response:
                text = await response.text()
        for line in text.splitlines():
            if line.startswith(f"{series} "):
                return float(line.split()[-1])
        return 0.0


async def can_log_in(server: XmppdProcess, account: str, password: str) -> bool:
    """Whether `account` (a bare JID, or a user name on `server`'s domain) logs in."""
    from xmppd.client import Client, LoginFailed

    jid = account if "@" in account else f"{account}@{server.domain}"
    client = Client(jid, password, verify_tls=False)
    try:
        await client.login("127.0.0.1", server.port)
    except LoginFailed:
        client.abort()
        return False
    await client.logout()
    return True
