"""The count of refusals by a configured limit, xmppd_limit_reached_total{limit=...}, read
from a running server's /metrics."""
from __future__ import annotations

import aiohttp

from xmppd.metrics import LIMIT_REACHED


async def limit_reached(server, limit: str) -> float:
    """How often `limit` (its config key, e.g. "extensions.pep.max_nodes") was reached."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{server.http_port}/metrics") as response:
            assert response.status == 200
            text = await response.text()
    prefix = f'{LIMIT_REACHED}{{limit="{limit}"}} '
    return next((float(line[len(prefix):]) for line in text.splitlines() if line.startswith(prefix)), 0.0)
