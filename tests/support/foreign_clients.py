"""Client libraries xmppd was not written against, each in its own virtual environment
under ~/.cache/xmppd (aioxmpp 0.13 pins lxml 4, which the server's venv must not get)."""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "xmppd"
AIOXMPP_REQUIREMENT = "aioxmpp==0.13.3"


def aioxmpp_python() -> Path:
    """The interpreter of a venv with aioxmpp, created on first use."""
    venv = CACHE / "aioxmpp-venv"
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "aioxmpp.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists() or marker.read_text() != AIOXMPP_REQUIREMENT:
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", AIOXMPP_REQUIREMENT], check=True, timeout=900)
            marker.write_text(AIOXMPP_REQUIREMENT)
    return python
