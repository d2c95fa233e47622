"""Client libraries xmppd was not written against, each in its own virtual environment
under ~/.cache/xmppd (aioxmpp 0.13 pins lxml 4, which the server's venv must not get)."""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "xmppd"
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
