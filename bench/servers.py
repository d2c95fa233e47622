"""Start, watch and stop the servers under test: xmppd, and Prosody and ejabberd
(Debian's packages).

Each server runs as its own process pinned to CPU 0 (`taskset -c 0`), with a
raised open-files limit, a config written into a temporary run directory, and
a data directory kept between runs under the bench state directory (so that
accounts and rosters are created once and reused).
"""

import asyncio
import glob
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .xmpp import stream_header

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
SERVER_NOFILE = 65536
SERVER_CPU = "0"


class ServerStartError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_certificate(directory: Path, domain: str, muc_domain: str):
    """A self-signed certificate for both servers (openssl command line)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    if cert.exists() and key.exists():
        return cert, key
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "3650",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            f"/CN={domain}",
            "-addext",
            f"subjectAltName=DNS:{domain},DNS:{muc_domain}",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.chmod(key, 0o640)
    return cert, key


def _raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = SERVER_NOFILE
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _children(pid: int) -> list:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def _tree(pid: int) -> list:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += _children(p)
    return pids


def rss_kib(pid: int) -> int:
    """VmRSS of the server process and its descendants, in KiB."""
    total = 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def cpu_seconds(pid: int) -> float:
    """utime + stime of the server process tree, in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


def runqueue_seconds(pid: int) -> float:
    """Time the server's threads spent runnable but waiting for a CPU (/proc/<pid>/schedstat)."""
    total = 0
    for p in _tree(pid):
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return total / 1e9


class Server:
    """One server under test. Subclasses write the config and name the command."""

    name = "?"
    log_files = ()  # logs the server writes into its run dir, besides stdout

    def __init__(self, state_dir: Path, domain="localhost", muc_domain="conference.localhost"):
        self.state_dir = state_dir / self.name
        self.data_dir = self.state_dir / "data"
        self.domain = domain
        self.muc_domain = muc_domain
        self.host = "127.0.0.1"
        self.port = None
        self.direct_tls_port = None
        self.proc = None
        self.run_dir = None
        self.log_path = None

    # to be provided by subclasses
    def command(self, config_path: Path) -> list:
        raise NotImplementedError

    def write_config(self, run_dir: Path, cert: Path, key: Path) -> Path:
        raise NotImplementedError

    def version(self) -> str:
        return "?"

    def environment(self) -> dict:
        """Variables added to the server's environment."""
        return {}

    def missing(self) -> list:
        """What bench/setup.sh must install before this server can run."""
        return []

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    async def start(self, ready_timeout=30.0, muc=True, smacks=False):
        self.muc = muc
        self.smacks = smacks
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cert, key = make_certificate(self.state_dir.parent / "tls", self.domain, self.muc_domain)
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        self.port, self.direct_tls_port = free_port(), free_port()
        config = self.write_config(self.run_dir, cert, key)
        argv = self.command(config)
        if shutil.which(argv[0]) is None and not os.path.exists(argv[0]):
            raise ServerStartError(f"{argv[0]} not found")
        if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
            argv = ["taskset", "-c", SERVER_CPU] + argv
        self.log_path = self.run_dir / "stdout.log"
        log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.run_dir,
                env={**os.environ, **self.environment()},
                preexec_fn=_raise_nofile,
                start_new_session=True,
            )
        except OSError as e:
            raise ServerStartError(f"cannot start {argv[0]}: {e}") from e
        finally:
            log.close()
        try:
            await self._wait_ready(ready_timeout)
        except ServerStartError:
            await self.stop()
            raise

    async def _wait_ready(self, timeout):
        """Ready = the c2s port accepts a connection and answers a stream header."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(f"{self.name} exited with code {self.proc.returncode}: {self.log_tail()}")
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 2)
                try:
                    w.write(stream_header(self.domain))
                    data = await asyncio.wait_for(r.read(4096), 3)
                    if b"<stream:stream" in data or b"<stream:features" in data:
                        w.write(b"</stream:stream>")
                        return
                    last = f"answered {data[:200]!r}"
                finally:
                    w.close()
            except (TimeoutError, OSError) as e:
                last = repr(e)
            await asyncio.sleep(0.1)
        raise ServerStartError(f"{self.name} not ready after {timeout:.0f}s ({last}): {self.log_tail()}")

    def log_tail(self, lines=15) -> str:
        chunks = []
        logs = [self.run_dir / name for name in self.log_files] if self.run_dir else []
        for p in [self.log_path] + logs:
            if p and p.exists():
                text = p.read_text(errors="replace").strip().splitlines()[-lines:]
                if text:
                    chunks.append(" | ".join(text))
        return " || ".join(chunks) or "(no output)"

    async def stop(self, timeout=10.0):
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def runqueue_seconds(self) -> float:
        return runqueue_seconds(self.pid)


def dpkg_version(package: str) -> str:
    try:
        return subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def fill_template(template: Path, values: dict) -> str:
    text = template.read_text()
    for k, v in values.items():
        text = text.replace(f"@{k}@", str(v))
    return text


class Prosody(Server):
    name = "prosody"
    template = BENCH_DIR / "prosody.cfg.lua"
    log_files = ("prosody.log",)

    def command(self, config_path):
        return ["prosody", "-F", "--config", str(config_path)]

    def write_config(self, run_dir, cert, key):
        path = run_dir / "prosody.cfg.lua"
        path.write_text(
            fill_template(
                self.template,
                {
                    "RUN_DIR": run_dir,
                    "DATA_DIR": self.data_dir,
                    "C2S_PORT": self.port,
                    "DIRECT_TLS_PORT": self.direct_tls_port,
                    "CERT": cert,
                    "KEY": key,
                    "CERT_DIR": Path(cert).parent,
                    "DOMAIN": self.domain,
                    "MUC_DOMAIN": self.muc_domain,
                    "EXTRA_MODULES": '"smacks";' if self.smacks else "",
                },
            )
        )
        return path

    def version(self):
        out = dpkg_version("prosody")
        return f"Prosody {out} (Debian)" if out else "Prosody"

    def missing(self):
        return [] if shutil.which("prosody") else ["prosody"]


class Ejabberd(Server):
    """Debian's ejabberd, started as `erl ... -s ejabberd` in the foreground.

    Debian's ejabberdctl switches to the `ejabberd` user when run as root and
    refuses any other user, so the bench starts the Erlang VM itself with what
    ejabberdctl would pass: the config path, the log path and the code path in
    the environment, the Mnesia directory on the command line. One scheduler
    (+S 1:1, +SDcpu 1:1) for one core. The node name is fixed (Mnesia's schema
    in the data dir is bound to it); the node needs no epmd (-start_epmd false,
    its distribution port on 127.0.0.1), so the bench never starts or stops
    one, and a random cookie on the command line keeps ~/.erlang.cookie unwritten.
    """

    name = "ejabberd"
    template = BENCH_DIR / "ejabberd.yml"
    node = "xmppd-bench-ejabberd@localhost"
    log_files = ("ejabberd.log", "error.log")

    def write_config(self, run_dir, cert, key):
        path = run_dir / "ejabberd.yml"
        path.write_text(
            fill_template(
                self.template,
                {
                    "C2S_PORT": self.port,
                    "DIRECT_TLS_PORT": self.direct_tls_port,
                    "CERT": cert,
                    "KEY": key,
                    "DOMAIN": self.domain,
                    "MUC_DOMAIN": self.muc_domain,
                    "EXTRA_MODULES": "  mod_stream_mgmt: {}" if self.smacks else "",
                },
            )
        )
        return path

    def command(self, config_path):
        return [
            "erl",
            "-sname",
            self.node,
            "-setcookie",
            secrets.token_hex(16),
            "-start_epmd",
            "false",
            "-erl_epmd_port",
            str(free_port()),
            "-kernel",
            "inet_dist_use_interface",
            "{127,0,0,1}",
            "+S",
            "1:1",
            "+SDcpu",
            "1:1",
            "+Q",
            str(SERVER_NOFILE),
            "-noinput",
            "-mnesia",
            "dir",
            f'"{self.data_dir}"',
            "-s",
            "ejabberd",
        ]

    def environment(self):
        return {
            "EJABBERD_CONFIG_PATH": str(self.run_dir / "ejabberd.yml"),
            "EJABBERD_LOG_PATH": str(self.run_dir / "ejabberd.log"),
            "ERL_LIBS": self.erl_libs() or "",
            "CONTRIB_MODULES_PATH": str(self.run_dir / "modules"),
            "CONTRIB_MODULES_CONF_DIR": str(self.run_dir / "modules"),
            "ERL_CRASH_DUMP_BYTES": "0",
        }

    @staticmethod
    def erl_libs():
        """The directory holding Debian's ejabberd-<version>/ebin (ejabberdctl's ERL_LIBS)."""
        found = glob.glob("/usr/lib/*/ejabberd-*/ebin/ejabberd.app")
        return str(Path(found[0]).parents[2]) if found else None

    def version(self):
        out = dpkg_version("ejabberd")
        return f"ejabberd {out} (Debian)" if out else "ejabberd"

    def missing(self):
        return [] if shutil.which("erl") and self.erl_libs() else ["ejabberd"]


# The features the three servers run with, so that they do the same work: Prosody's
# modules_enabled in prosody.cfg.lua (roster, saslauth, tls, disco, ping, register,
# offline, plus its always-on presence/message/iq and the MUC component), ejabberd's
# modules in ejabberd.yml (the same list) and these xmppd extensions (SASL, TLS, bind,
# message and iq routing are in xmppd's core).
XMPPD_EXTENSIONS = ["disco", "ping", "presence", "roster", "register", "offline"]


def xmppd_config(
    data_dir, port, direct_tls_port, cert, key, domain, muc_domain, http_port, https_port, muc=True, smacks=False
) -> str:
    """The TOML the bench hands to xmppd. Kept in one place: adjust it here when
    xmppd's config settles. Unknown keys stop xmppd at start-up, so only keys that
    xmppd/config.py knows belong here. MUC and stream management (XEP-0198, with the
    backlog it depends on) are loaded only for the runs that use them, so that the
    other scenarios do not depend on them."""
    extensions = XMPPD_EXTENSIONS + (["muc"] if muc else []) + (["smacks"] if smacks else [])
    text = f'''\
[server]
data_dir = "{data_dir}"
log_level = "warning"
extensions = [{", ".join(f'"{e}"' for e in extensions)}]

[c2s]
interfaces = ["127.0.0.1"]
port = {port}
direct_tls_port = {direct_tls_port}
require_encryption = false
max_unauthenticated_per_ip = 100000
max_unauthenticated = 100000

[http]
port = {http_port}
tls_port = {https_port}

[tls]
certificate = "{cert}"
key = "{key}"

[[hosts]]
domain = "{domain}"

[extensions.register]
allow_registration = true
registration_throttle_seconds = 0

[extensions.offline]
max_messages_per_user = 100000
max_messages_per_stranger = 100000
'''
    if muc:
        # Prosody's MUC here keeps no archive (no mod_muc_mam): neither does xmppd's.
        text += f'''
[extensions.muc]
domain = "{muc_domain}"
default_archiving = false
'''
    return text


class Xmppd(Server):
    name = "xmppd"

    def __init__(self, state_dir, binary=None, **kw):
        super().__init__(state_dir, **kw)
        self.binary = binary or str(REPO_DIR / ".venv" / "bin" / "xmppd")

    def command(self, config_path):
        return [self.binary, "--config", str(config_path)]

    def write_config(self, run_dir, cert, key):
        path = run_dir / "xmppd.toml"
        path.write_text(
            xmppd_config(
                self.data_dir,
                self.port,
                self.direct_tls_port,
                cert,
                key,
                self.domain,
                self.muc_domain,
                free_port(),
                free_port(),
                muc=self.muc,
                smacks=self.smacks,
            )
        )
        return path

    def version(self):
        try:
            out = subprocess.run(
                ["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
            dirty = subprocess.run(
                [
                    "git",
                    "-C",
                    str(REPO_DIR),
                    "status",
                    "--porcelain",
                    "--untracked-files=no",
                    "--",
                    "xmppd",
                    "extensions",
                    "storage",
                ],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            if not out:
                return "xmppd"
            return f"xmppd {out}" + (" with uncommitted changes" if dirty else "")
        except (OSError, subprocess.SubprocessError):
            return "xmppd"


def ensure_tools(servers: list) -> dict:
    """Install Debian's prosody and ejabberd (and openssl, taskset) if missing, with
    bench/setup.sh, which also stops system instances the packages started.

    Returns {server name: what is missing} for the servers that cannot run."""

    def missing(s):
        return s.missing() + [t for t in ("openssl", "taskset") if shutil.which(t) is None]

    if not any(missing(s) for s in servers):
        return {}
    script = BENCH_DIR / "setup.sh"
    try:
        subprocess.run(["bash", str(script)], check=True, timeout=900)
    except (OSError, subprocess.SubprocessError) as e:
        return {s.name: f"cannot install {', '.join(missing(s))} with {script}: {e}" for s in servers if missing(s)}
    return {s.name: f"{', '.join(missing(s))} still missing after bench/setup.sh" for s in servers if missing(s)}
