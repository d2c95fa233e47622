"""Interop: aioxmpp's MUCClient enters and leaves a room (issue 13 item 1: aioxmpp 0.13
leaves with unavailable presence to the bare room JID, which xmppd used to ignore)."""

import asyncio
import json
from pathlib import Path

import pytest

from tests.support.foreign_clients import aioxmpp_python
from tests.support.muc import create_room, from_, item, new_account, new_user

PEER_SCRIPT = Path(__file__).parent.parent / "support" / "aioxmpp_muc_peer.py"


@pytest.fixture(scope="module")
def aioxmpp():
    return aioxmpp_python()


async def test_aioxmpp_enters_and_leaves_a_room(xmppd, aioxmpp):
    owner = await new_user(xmppd)
    room = await create_room(owner)
    peer = await asyncio.create_subprocess_exec(
        str(aioxmpp),
        str(PEER_SCRIPT),
        await new_account(xmppd),
        "secret",
        str(xmppd.port),
        room,
        "foreign",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )

    async def next_event():
        line = await asyncio.wait_for(peer.stdout.readline(), 60)
        assert line, (await peer.stderr.read()).decode()
        return json.loads(line)

    try:
        assert await next_event() == {"event": "joined"}
        entered = await owner.inbox.wait(from_(f"{room}/foreign", type_=None))
        assert item(entered).get("role") == "participant"
        peer.stdin.write(b"leave\n")
        await peer.stdin.drain()
        assert await next_event() == {"event": "left"}  # Room.leave() completed
        left = await owner.inbox.wait(from_(f"{room}/foreign", type_="unavailable"))
        assert item(left).get("role") == "none"
        assert await asyncio.wait_for(peer.wait(), 30) == 0
    finally:
        if peer.returncode is None:
            peer.kill()
            await peer.wait()
