"""Client libraries xmppd was not written against, each installed on first use into a
place of its own under ~/.cache/xmppd (aioxmpp 0.13 pins lxml 4, which the server's venv
must not get; xmpp.js is a Node package). A file lock lets parallel test processes share
one install, and a marker records what was installed."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "xmppd"
XMPPJS = Path(__file__).parent / "xmppjs"  # package.json and package-lock.json (pinned), peer.mjs
STROPHE = Path(__file__).parent / "strophe"  # package.json and package-lock.json (pinned)
AIOXMPP_REQUIREMENTS = ("aioxmpp==0.13.3", "pytz")  # aioxmpp imports pytz without declaring it


def aioxmpp_python() -> Path:
    """The interpreter of a venv with aioxmpp, created on first use."""
    venv = CACHE / "aioxmpp-venv"
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "aioxmpp.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        wanted = " ".join(AIOXMPP_REQUIREMENTS)
        if not marker.exists() or marker.read_text() != wanted:
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", *AIOXMPP_REQUIREMENTS], check=True, timeout=900)
            marker.write_text(wanted)
    return python


def xmppjs_modules() -> Path:
    """The node_modules of tests/support/xmppjs/package-lock.json (xmpp.js)."""
    return _node_modules(XMPPJS, "xmppjs")


def strophe_modules() -> Path:
    """The node_modules of tests/support/strophe/package-lock.json (Strophe.js, whose
    browser build the BOSH browser test serves)."""
    return _node_modules(STROPHE, "strophe")


def _node_modules(source: Path, name: str) -> Path:
    """`npm ci` of `source`'s package-lock.json into the cache on first use and whenever
    the lock changes. Without Node and npm the tests that need it are skipped."""
    import pytest

    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip(f"{name} needs Node and npm")
    prefix = CACHE / name
    marker = prefix / ".installed"
    lock_text = (source / "package-lock.json").read_bytes()
    wanted = hashlib.sha256(lock_text).hexdigest()
    prefix.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists() or marker.read_text() != wanted:
            marker.unlink(missing_ok=True)
            for file in ("package.json", "package-lock.json"):
                shutil.copyfile(source / file, prefix / file)
            subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=prefix, check=True, timeout=900
            )
            marker.write_text(wanted)
    return prefix / "node_modules"


def go_sendxmpp() -> str:
    """The go-sendxmpp command. It comes as a Debian package only (the Go module proxy
    does not serve its module), which `make test` installs; without it the tests that
    need it are skipped."""
    import pytest

    command = shutil.which("go-sendxmpp")
    if command is None:
        pytest.skip("go-sendxmpp is not installed (make test installs the Debian package)")
    return command


def profanity() -> tuple[str, str]:
    """The profanity and tmux commands (Debian packages, which `make test` installs);
    without them the tests that need them are skipped."""
    import pytest

    commands = shutil.which("profanity"), shutil.which("tmux")
    if None in commands:
        pytest.skip("profanity or tmux is not installed (make test installs the Debian packages)")
    return commands
