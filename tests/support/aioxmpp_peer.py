"""An aioxmpp client, run in its own virtual environment (aioxmpp 0.13 pins lxml 4).

    python aioxmpp_peer.py JID PASSWORD PORT PEER_JID

Logs in over STARTTLS (certificate not verified: the test server's is self-signed),
sends initial presence, prints {"event": "online", "jid": ...}, sends one chat message to
PEER_JID, waits for one chat message from PEER_JID and prints it, and logs out. Every
line printed is one JSON object.
"""

import asyncio
import json
import sys

import aioxmpp
import aioxmpp.connector
import aioxmpp.im  # noqa: F401 (registers message dispatching)


def emit(**fields):
    print(json.dumps(fields), flush=True)


async def main(jid, password, port, peer):
    client = aioxmpp.PresenceManagedClient(
        aioxmpp.JID.fromstr(jid),
        aioxmpp.make_security_layer(password, no_verify=True),
        override_peer=[("127.0.0.1", int(port), aioxmpp.connector.STARTTLSConnector())],
    )
    peer_jid = aioxmpp.JID.fromstr(peer)
    received = asyncio.get_running_loop().create_future()

    def on_message(message):
        if message.from_.bare() == peer_jid.bare() and message.body and not received.done():
            received.set_result(message.body.any())

    client.stream.register_message_callback(aioxmpp.MessageType.CHAT, None, on_message)
    async with client.connected() as stream:
        emit(event="online", jid=str(client.local_jid))
        message = aioxmpp.Message(to=peer_jid, type_=aioxmpp.MessageType.CHAT)
        message.body[None] = "hello from aioxmpp"
        await stream.send(message)
        emit(event="sent")
        body = await asyncio.wait_for(received, 30)
        emit(event="received", body=body)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
