"""The command line: xmppctl's account commands (offline, on storage) and live commands
(through the running server's admin socket), `xmppd --check-config`, and the example
configuration and systemd unit in conf/."""

import dataclasses
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import unique
from tests.support.raw import RawClient
from tests.support.server import XmppdProcess, can_log_in
from xmppd.client import Client
from xmppd.config import SECTIONS, HostOptions, StorageOptions, Where, build
from xmppd.extension import extension_class
from xmppd.server import bundled_extensions
from xmppd.storage import backend_module

CONF = Path(__file__).resolve().parents[2] / "conf"
EXAMPLE = CONF / "xmppd.toml"
UNIT = CONF / "xmppd.service"
BACKENDS = {
    "memory": "memory",
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "cassandra": "cassandra",
    "filesystem": "media.filesystem",
    "s3": "media.s3",
}


def xmppd(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "xmppd.cli", *args], capture_output=True, text=True, timeout=60, **kwargs
    )


# ------------------------------------------------------------------ xmppctl, offline


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Accounts are made with xmppctl before the server first starts."""
    process = XmppdProcess(tmp_path_factory.mktemp("ctl"), c2s_section="auth_failure_delay = 0")
    created = process.ctl("adduser", "early@localhost", "--password", "made offline")
    assert created.stdout.strip() == "created early@localhost"
    process.start()
    yield process
    process.stop()


async def test_account_made_before_start_logs_in(server):
    assert await can_log_in(server, "early@localhost", "made offline")


async def test_adduser_passwd_deluser_users(server):
    jid = f"{unique('ctl')}@localhost"
    assert server.ctl("adduser", jid, "--password", "first").stdout.strip() == f"created {jid}"
    assert jid in server.ctl("users").stdout.split()
    assert jid in server.ctl("users", "localhost").stdout.split()
    assert await can_log_in(server, jid, "first")

    assert server.ctl("passwd", jid, "--password", "second").returncode == 0
    assert await can_log_in(server, jid, "second")
    assert not await can_log_in(server, jid, "first")

    assert server.ctl("deluser", jid).stdout.strip() == f"deleted {jid}"
    assert jid not in server.ctl("users").stdout.split()
    assert not await can_log_in(server, jid, "second")


@pytest.mark.parametrize(
    "args,code,message",
    [
        (("adduser", "early@localhost", "--password", "x"), 1, "early@localhost exists already"),
        (("passwd", "ghost@localhost", "--password", "x"), 1, "no account ghost@localhost"),
        (("deluser", "ghost@localhost"), 1, "no account ghost@localhost"),
        (("adduser", "someone@elsewhere.example", "--password", "x"), 2, "elsewhere.example is not a host"),
        (("adduser", "someone@localhost/resource", "--password", "x"), 2, "not an account's bare JID"),
        (("adduser", "a@b@localhost", "--password", "x"), 2, "is not a valid JID"),
        (("adduser", "empty@localhost", "--password", ""), 2, "the password must not be empty"),
    ],
)
def test_account_command_errors(server, args, code, message):
    result = server.ctl(*args, check=False)
    assert result.returncode == code
    assert message in result.stderr


def test_adduser_prompts_for_the_password_twice(server, tmp_path):
    """Without --password, xmppctl asks on the terminal, twice (getpass). With no
    terminal (a new session has none), getpass falls back to standard input."""
    jid = f"{unique('prompted')}@localhost"

    def adduser(answers: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "xmppd.ctl", "--config", str(server.config_path), "adduser", jid],
            input=answers,
            capture_output=True,
            text=True,
            timeout=60,
            start_new_session=True,
        )

    differing = adduser("one password\nanother\n")
    assert differing.returncode == 2 and "the passwords differ" in differing.stderr
    empty = adduser("\n\n")
    assert empty.returncode == 2 and "the password must not be empty" in empty.stderr
    assert jid not in server.ctl("users").stdout.split()
    same = adduser("typed twice\ntyped twice\n")
    assert same.returncode == 0, same.stderr
    assert "Password: " in same.stderr and "Again: " in same.stderr
    assert jid in server.ctl("users").stdout.split()


# ------------------------------------------------------------------ xmppctl, live


async def test_status_and_sessions(server):
    jid = server.adduser(unique("live"), "pencil12")
    client = await RawClient().login(server.port, jid.split("@")[0], "pencil12", resource="phone")
    status = json.loads(server.ctl("status").stdout)
    assert status["sessions"] >= 1 and status["hosts"] == ["localhost"]
    assert f"127.0.0.1:{server.port}" in status["listening"]
    lines = [line.split("\t") for line in server.ctl("sessions").stdout.splitlines()]
    mine = [line for line in lines if line[0] == f"{jid}/phone"]
    assert mine and mine[0][1] == "127.0.0.1"
    await client.close()


async def test_kick_closes_the_stream(server):
    user = unique("kicked")
    jid = server.adduser(user, "pencil12")
    phone = await RawClient().login(server.port, user, "pencil12", resource="phone")
    laptop = await RawClient().login(server.port, user, "pencil12", resource="laptop")
    assert server.ctl("kick", f"{jid}/phone").stdout.split() == [f"{jid}/phone"]
    assert "<policy-violation" in await phone.closed()
    assert f"{jid}/laptop" in server.ctl("sessions").stdout
    assert server.ctl("kick", jid).stdout.split() == [f"{jid}/laptop"]  # a bare JID: every session
    assert "<policy-violation" in await laptop.closed()
    assert jid not in server.ctl("sessions").stdout
    assert server.ctl("kick", jid).stdout.strip() == "no such session"


def test_offline_commands_refuse_memory_storage(tmp_path):
    """An account made by xmppctl in memory storage would be gone when it exits."""
    memory = XmppdProcess(tmp_path, '[storage]\ndefault = "memory"\n')
    result = memory.ctl("adduser", "nobody@localhost", "--password", "x", check=False)
    assert result.returncode == 2 and "lives in the server process only" in result.stderr
    assert "created" not in result.stdout


def test_live_commands_need_a_running_server(tmp_path):
    stopped = XmppdProcess(tmp_path)
    result = stopped.ctl("status", check=False)
    assert result.returncode == 1 and "the server is not running" in result.stderr


# ------------------------------------------------------------------ xmppd --check-config


def test_check_config_accepts_a_good_file(server):
    result = xmppd("--check-config", "--config", str(server.config_path))
    assert result.returncode == 0 and result.stdout.strip() == f"{server.config_path}: OK"


@pytest.mark.parametrize(
    "toml,expected",
    [
        ("[server]\ndata_dri = '/tmp/x'\n", "server.data_dri: unknown key; did you mean 'data_dir'?"),
        ("[c2s]\nmax_stanza_byte = 100000\n", "c2s.max_stanza_byte: unknown key; did you mean 'max_stanza_bytes'?"),
        ("[c2s]\nrequire_encryption = 'yes'\n", "c2s.require_encryption: must be bool, not str"),
        ("[c2s]\ninterfaces = '0.0.0.0'\n", "c2s.interfaces: must be an array, not str"),
        ("[server]\nlog_level = 'loud'\n", "server.log_level: must be one of 'debug', 'info', 'warning', 'error'"),
        ("[c2s]\nmax_stanza_bytes = 10\n", "c2s.max_stanza_bytes: must be at least 10000"),
        ("[websocket]\npath = 'xmpp'\n", 'websocket.path: must be a path such as "/xmpp-websocket"'),
        (
            "[websocket]\nallowed_origins = ['https://chat.example.org/app']\n",
            "websocket.allowed_origins[0]: 'https://chat.example.org/app' is not an origin",
        ),
        ("[bosh]\npath = 'http-bind'\n", 'bosh.path: must be a path such as "/http-bind"'),
        ("[bosh]\ninactivity = 60\nmax_pause = 30\n", "bosh.max_pause: must be inactivity to 86400 seconds"),
        ("[[hosts]]\ndomain = 'a'\nadmin = ['x@a']\n", "hosts[0].admin: unknown key; did you mean 'admins'?"),
        (
            "[extensions.register]\nallow_registraton = true\n",
            "extensions.register.allow_registraton: unknown key; did you mean 'allow_registration'?",
        ),
        (
            "[extensions.register]\nmin_password_length = 'eight'\n",
            "extensions.register.min_password_length: must be int",
        ),
        (
            "[extensions.register]\nmin_password_length = 0\n",
            "extensions.register.min_password_length: must be at least 1",
        ),
        ("[extensions.adhoc]\nannouncement_type = 'shout'\n", "extensions.adhoc.announcement_type: must be one of"),
        (
            "[extensions.registr]\n",
            "extensions.registr: options for an extension that is not enabled; did you mean 'register'?",
        ),
        ("[server]\nextensions = ['nosuch']\n", "server.extensions: unknown extension 'nosuch'"),
        ("[storage.sqlite]\nbatch = 1\n", "storage.sqlite.batch: unknown key; did you mean 'batch_max'?"),
        (
            "[components.secrets]\n'gw.localhost' = 'short'\n",
            "components.secrets.'gw.localhost': must be a string of at least 16 characters",
        ),
        (
            "[components.secrets]\n'not a domain' = '0123456789abcdef'\n",
            "components.secrets.'not a domain': must be a domain name",
        ),
        (
            "[[extensions.external_services.services]]\ntype = 'turn'\nhost = 'turn.example.org'\nrestricted = true\n",
            "extensions.external_services.services[0].restricted: needs the shared secret",
        ),
        (
            "[[extensions.external_services.services]]\ntype = 'tun'\nhost = 'turn.example.org'\n",
            "extensions.external_services.services[0].type: must be one of 'stun', 'stuns', 'turn', 'turns'",
        ),
        ("[storage.postgresql]\npool = 4\n", "storage.postgresql.pool: unknown key; did you mean 'pool_size'?"),
        ("[storage.postgresql]\ndsn = 'mysql://x@y/z'\n", "storage.postgresql.dsn: must be a postgresql:// URI"),
        ("[storage.postgresql]\npool_size = 0\n", "storage.postgresql.pool_size: must be at least 1"),
    ],
)
def test_check_config_refuses_a_bad_file_naming_the_key(tmp_path, toml, expected):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    result = xmppd("--check-config", "--config", str(path))
    assert result.returncode == 2, result.stdout
    assert str(path) in result.stderr and expected in result.stderr


# ------------------------------------------------------------------ conf/xmppd.toml


def uncommented(text: str) -> str:
    """The example with every option shown at its default switched on: the convention
    is "#key = value" (no space) for an option, "# text" for an explanation."""
    return re.sub(r"(?m)^#(?=[\[A-Za-z_])", "", text)


def option_classes() -> dict[str, type]:
    """Table path in the config file -> the Options dataclass read from it."""
    classes = {name: cls for name, cls in SECTIONS.items()}
    classes["hosts"] = HostOptions
    classes["storage"] = StorageOptions
    classes.update({f"storage.{kind}": backend_module(module).Options for kind, module in BACKENDS.items()})
    for name in bundled_extensions():
        options = extension_class(name).Options
        if options is not None:
            classes[f"extensions.{name}"] = options
    return classes


def table(data: dict, path: str) -> dict | None:
    for part in path.split("."):
        data = data.get(part) if isinstance(data, dict) else None
        if isinstance(data, list):  # [[hosts]]
            data = data[0]
    return data


def test_example_config_is_valid():
    result = xmppd("--check-config", "--config", str(EXAMPLE))
    assert result.returncode == 0, result.stderr


def test_example_with_every_option_switched_on_is_valid(tmp_path):
    full = tmp_path / "full.toml"
    full.write_text(uncommented(EXAMPLE.read_text()))
    result = xmppd("--check-config", "--config", str(full))
    assert result.returncode == 0, result.stderr


def test_example_documents_every_option():
    data = tomllib.loads(uncommented(EXAMPLE.read_text()))
    missing = []
    for path, cls in option_classes().items():
        keys = table(data, path) or {}
        missing += [f"{path}.{f.name}" for f in dataclasses.fields(cls) if f.name not in keys]
    assert not missing, f"options not documented in {EXAMPLE}: {', '.join(missing)}"


def test_example_shows_the_real_defaults():
    """A commented option shows the default (options whose default is "not set" show an
    example instead, and options without a default, like an S3 bucket, are required)."""
    active = tomllib.loads(EXAMPLE.read_text())
    full = tomllib.loads(uncommented(EXAMPLE.read_text()))
    wrong = []
    for path, cls in option_classes().items():
        names = {f.name for f in dataclasses.fields(cls)}  # (not the sub-tables of [storage])
        shown = {
            key: value
            for key, value in (table(full, path) or {}).items()
            if key in names and key not in (table(active, path) or {})
        }
        built = build(cls, shown, Where(str(EXAMPLE), path))
        for f in dataclasses.fields(cls):
            if f.name not in shown or (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING):
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if default is not None and getattr(built, f.name) != default:
                wrong.append(f"{path}.{f.name} shows {shown[f.name]!r}, default {default!r}")
    assert not wrong, "; ".join(wrong)


async def test_example_config_starts(tmp_path):
    """The example as deployed, but with a scratch data dir and free loopback ports."""
    process = XmppdProcess(tmp_path).use_example_config()
    process.start()
    try:
        jid = process.adduser(unique("example"), "pencil12")
        client = Client(jid, "pencil12", verify_tls=False)
        await client.login("127.0.0.1", process.port)
        await client.logout()
    finally:
        process.stop()


# ------------------------------------------------------------------ conf/xmppd.service


def test_systemd_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify wants ExecStart to exist: point it at this installation's xmppd.
    unit = tmp_path / "xmppd.service"
    program = Path(sys.executable).with_name("xmppd")
    unit.write_text(UNIT.read_text().replace("/opt/xmppd/bin/xmppd", str(program)))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    ours = [line for line in (result.stdout + result.stderr).splitlines() if "xmppd.service" in line]
    assert result.returncode == 0 and not ours, result.stdout + result.stderr


def test_systemd_unit_is_hardened():
    settings = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    assert settings["User"] == ["xmppd"]
    assert settings["ExecStart"][0].endswith("xmppd --config /etc/xmppd/xmppd.toml")
    for key, value in (
        ("ProtectSystem", "strict"),
        ("ProtectHome", "true"),
        ("PrivateTmp", "true"),
        ("NoNewPrivileges", "true"),
        ("Restart", "on-failure"),
        ("ReadWritePaths", "/var/lib/xmppd"),
        ("CapabilityBoundingSet", ""),
    ):
        assert settings[key] == [value], key
    assert "AmbientCapabilities" not in settings
    assert int(settings["LimitNOFILE"][0]) >= 65536
