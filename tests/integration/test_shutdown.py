"""Graceful shutdown (RFC 6120 4.4, 4.9.3.20): on SIGTERM every client stream gets
<system-shutdown/> and is closed, and the server exits cleanly."""

import asyncio

from tests.conftest import unique
from tests.support.raw import RawClient


async def test_sigterm_closes_every_stream_with_system_shutdown(make_xmppd):
    server = make_xmppd().start()
    users = [unique("shut") for _ in range(3)]
    for user in users:
        server.adduser(user, "pencil")
    clients = [await RawClient().login(server.port, user, "pencil") for user in users]
    unauthenticated = RawClient()
    await unauthenticated.connect(server.port)
    await unauthenticated.open_stream()

    stopping = asyncio.get_running_loop().run_in_executor(None, server.stop)
    for raw in [*clients, unauthenticated]:
        text = await raw.closed(timeout=30)
        assert "<system-shutdown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in text
        assert text.rstrip().endswith("</stream:stream>")
    assert await stopping == 0
