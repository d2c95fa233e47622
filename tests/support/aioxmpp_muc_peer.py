"""An aioxmpp client in a room, run in aioxmpp's own virtual environment (see
aioxmpp_peer.py).

    python aioxmpp_muc_peer.py JID PASSWORD PORT ROOM NICK

Logs in over STARTTLS, enters ROOM as NICK with aioxmpp's MUCClient and prints
{"event": "joined"}; then, for each line "leave" read on stdin, leaves the room with
Room.leave() (unavailable presence to the bare room JID), prints {"event": "left"} once
it completed, and logs out. Every line printed is one JSON object.
"""

import asyncio
import json
import sys

import aioxmpp
import aioxmpp.connector
import aioxmpp.muc


def emit(**fields):
    print(json.dumps(fields), flush=True)


async def main(jid, password, port, room_jid, nick):
    client = aioxmpp.PresenceManagedClient(
        aioxmpp.JID.fromstr(jid),
        aioxmpp.make_security_layer(password, no_verify=True),
        override_peer=[("127.0.0.1", int(port), aioxmpp.connector.STARTTLSConnector())],
    )
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    async with client.connected():
        room, joined = client.summon(aioxmpp.muc.MUCClient).join(aioxmpp.JID.fromstr(room_jid), nick)
        await asyncio.wait_for(joined, 30)
        emit(event="joined")
        assert (await stdin.readline()).strip() == b"leave"
        await asyncio.wait_for(room.leave(), 30)
        emit(event="left")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
