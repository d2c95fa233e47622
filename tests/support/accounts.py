"""Test accounts, created in this process through xmppd's own account and storage code.

`xmppctl adduser` (tested in test_ctl.py) costs a process start per account; this does
the same work for many accounts at once, on the (running or stopped) server's storage.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import types

from xmppd import accounts, config
from xmppd.storage import open_backend


async def _create(config_path, domain: str, names, password: str) -> None:
    cfg = config.load(config_path)
    storage = open_backend(cfg.storage.default, cfg.backend_options[cfg.storage.default], str(cfg.data_dir))
    await storage.start()
    try:
        host = types.SimpleNamespace(domain=domain, storage=storage)
        for name in names:
            if not await accounts.create_user(host, name, password):
                raise ValueError(f"{name}@{domain} exists already")
    finally:
        await storage.close()


def create_accounts(server, names, password: str = "secret") -> list[str]:
    """Create the accounts `names` on `server` (an XmppdProcess); their bare JIDs.

    Callable from synchronous fixtures and from coroutines alike: the work runs on a
    thread with its own event loop.
    """
    names = list(names)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _create(server.config_path, server.domain, names, password)).result(timeout=120)
    return [f"{name}@{server.domain}" for name in names]
