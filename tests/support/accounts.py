"""Many test accounts at once: one process for all of them (`xmppctl adduser` costs a
process start per account)."""
from __future__ import annotations

import subprocess
import sys

_SCRIPT = """
import asyncio, sys, types
from xmppd import accounts, config
from xmppd.storage import open_backend

async def main(path, domain, password, names):
    cfg = config.load(path)
    storage = open_backend(cfg.storage.default, cfg.backend_options[cfg.storage.default], str(cfg.data_dir))
    await storage.start()
    try:
        host = types.SimpleNamespace(domain=domain, storage=storage)
        for name in names:
            if not await accounts.create_user(host, name, password):
                sys.exit(f"{name}@{domain} exists already")
    finally:
        await storage.close()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]))
"""


def create_accounts(server, names, password: str = "secret") -> list[str]:
    """Create the accounts `names` on the (running or stopped) `server`; their bare JIDs."""
    subprocess.run([sys.executable, "-c", _SCRIPT, str(server.config_path), server.domain, password, *names],
                   check=True, timeout=120)
    return [f"{name}@{server.domain}" for name in names]
