"""A legacy OMEMO client (XEP-0384 0.3, namespace eu.siacs.conversations.axolotl) on
python-axolotl, the Signal protocol port of libsignal's line that Conversations runs,
for the interop tests. It runs as its own process because python-axolotl's protobuf
code needs the pure-Python protobuf, chosen before protobuf is first imported:

    PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python python -m tests.support.axolotl_peer JID PASSWORD PORT

It logs in (xmppd.client for the XMPP side only), publishes one device: its bundle on
'eu.siacs.conversations.axolotl.bundles:<id>' and its device list, both open, and prints
{"event": "online", "device": ID}. Each line read on stdin is a JSON command:
{"to": JID, "body": TEXT} encrypts TEXT for every device of JID (a Signal session built
from their bundle when there is none) and prints {"event": "sent"}. Each OMEMO message
received is decrypted and printed (key transport messages, without a payload, only
move the session on) as {"event": "received", "from": ..., "body": ...,
"prekey": BOOL}. Every line printed is one JSON object.

Legacy OMEMO: the body is encrypted with AES-128-GCM (a 16-byte key, a 12-byte IV); the
key and the 16-byte tag are encrypted together for each device with its Signal session;
the payload is the ciphertext without the tag.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import sys
from itertools import count

from axolotl.ecc.curve import Curve
from axolotl.identitykey import IdentityKey
from axolotl.protocol.ciphertextmessage import CiphertextMessage
from axolotl.protocol.prekeywhispermessage import PreKeyWhisperMessage
from axolotl.protocol.whispermessage import WhisperMessage
from axolotl.sessionbuilder import SessionBuilder
from axolotl.sessioncipher import SessionCipher
from axolotl.state.prekeybundle import PreKeyBundle
from axolotl.tests.inmemoryaxolotlstore import InMemoryAxolotlStore
from axolotl.util.keyhelper import KeyHelper
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from lxml import etree

from tests.support.inbox import IQ, MESSAGE, Inbox
from xmppd.client import Client

NS = "eu.siacs.conversations.axolotl"
DEVICE_LIST_NODE = f"{NS}.devicelist"
BUNDLE_NODE = f"{NS}.bundles:"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
SIGNED_PRE_KEY_ID = 1
PRE_KEYS = 20

_ids = count()


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def b64(data: bytes) -> str:
    return base64.b64encode(bytes(data)).decode("ascii")


class LegacyOmemoPeer:
    def __init__(self, client: Client, inbox: Inbox):
        self.client = client
        self.inbox = inbox
        self.store = InMemoryAxolotlStore()
        self.device_id = secrets.randbelow(2**31 - 2) + 1
        identity = self.store.getIdentityKeyPair()
        self.signed_pre_key = KeyHelper.generateSignedPreKey(identity, SIGNED_PRE_KEY_ID)
        self.store.storeSignedPreKey(SIGNED_PRE_KEY_ID, self.signed_pre_key)
        self.pre_keys = KeyHelper.generatePreKeys(1, PRE_KEYS)
        for record in self.pre_keys:
            self.store.storePreKey(record.getId(), record)

    async def iq(self, type_: str, to: str | None, payload: str) -> etree._Element:
        iq_id = f"axolotl{next(_ids)}"
        address = f" to='{to}'" if to else ""
        self.client.send_raw(f"<iq type='{type_}' id='{iq_id}'{address}>{payload}</iq>")
        answer = await self.inbox.wait(lambda s: s.tag == IQ and s.get("id") == iq_id, timeout=20)
        if answer.get("type") != "result":
            raise RuntimeError(etree.tostring(answer).decode())
        return answer

    async def publish(self, node: str, item_id: str, payload: str) -> None:
        options = (
            "<publish-options><x xmlns='jabber:x:data' type='submit'>"
            "<field var='FORM_TYPE' type='hidden'><value>"
            "http://jabber.org/protocol/pubsub#publish-options</value></field>"
            "<field var='pubsub#access_model'><value>open</value></field></x></publish-options>"
        )
        await self.iq(
            "set",
            None,
            f"<pubsub xmlns='{NS_PUBSUB}'><publish node='{node}'>"
            f"<item id='{item_id}'>{payload}</item></publish>{options}</pubsub>",
        )

    async def announce(self) -> None:
        identity = self.store.getIdentityKeyPair()
        signed = self.signed_pre_key
        pre_keys = "".join(
            f"<preKeyPublic preKeyId='{r.getId()}'>{b64(r.getKeyPair().getPublicKey().serialize())}</preKeyPublic>"
            for r in self.pre_keys
        )
        bundle = (
            f"<bundle xmlns='{NS}'>"
            f"<signedPreKeyPublic signedPreKeyId='{signed.getId()}'>"
            f"{b64(signed.getKeyPair().getPublicKey().serialize())}</signedPreKeyPublic>"
            f"<signedPreKeySignature>{b64(signed.getSignature())}</signedPreKeySignature>"
            f"<identityKey>{b64(identity.getPublicKey().serialize())}</identityKey>"
            f"<prekeys>{pre_keys}</prekeys></bundle>"
        )
        await self.publish(f"{BUNDLE_NODE}{self.device_id}", "current", bundle)
        await self.publish(DEVICE_LIST_NODE, "current", f"<list xmlns='{NS}'><device id='{self.device_id}'/></list>")

    async def devices_of(self, jid: str) -> list[int]:
        answer = await self.iq(
            "get", jid, f"<pubsub xmlns='{NS_PUBSUB}'><items node='{DEVICE_LIST_NODE}' max_items='1'/></pubsub>"
        )
        return [int(device.get("id")) for device in answer.iter(f"{{{NS}}}device")]

    async def start_session(self, jid: str, device: int) -> None:
        answer = await self.iq(
            "get", jid, f"<pubsub xmlns='{NS_PUBSUB}'><items node='{BUNDLE_NODE}{device}' max_items='1'/></pubsub>"
        )
        bundle = answer.find(f".//{{{NS}}}bundle")
        decode = lambda text: base64.b64decode(text)  # noqa: E731
        signed = bundle.find(f"{{{NS}}}signedPreKeyPublic")
        pre_key = secrets.choice(bundle.findall(f"{{{NS}}}prekeys/{{{NS}}}preKeyPublic"))
        builder = SessionBuilder(self.store, self.store, self.store, self.store, jid, device)
        builder.processPreKeyBundle(
            PreKeyBundle(
                0,
                device,
                int(pre_key.get("preKeyId")),
                Curve.decodePoint(decode(pre_key.text), 0),
                int(signed.get("signedPreKeyId")),
                Curve.decodePoint(decode(signed.text), 0),
                decode(bundle.findtext(f"{{{NS}}}signedPreKeySignature")),
                IdentityKey(decode(bundle.findtext(f"{{{NS}}}identityKey")), 0),
            )
        )

    async def send(self, jid: str, body: str) -> None:
        key, iv = os.urandom(16), os.urandom(12)
        sealed = AESGCM(key).encrypt(iv, body.encode("utf-8"), None)
        ciphertext, tag = sealed[:-16], sealed[-16:]
        keys = []
        for device in await self.devices_of(jid):
            if not self.store.containsSession(jid, device):
                await self.start_session(jid, device)
            message = SessionCipher(self.store, self.store, self.store, self.store, jid, device).encrypt(key + tag)
            prekey = " prekey='true'" if message.getType() == CiphertextMessage.PREKEY_TYPE else ""
            keys.append(f"<key rid='{device}'{prekey}>{b64(message.serialize())}</key>")
        self.client.send_raw(
            f"<message to='{jid}' type='chat' id='axolotl{next(_ids)}'><body>I sent you an OMEMO encrypted message.</body>"
            f"<encrypted xmlns='{NS}'><header sid='{self.device_id}'>{''.join(keys)}<iv>{b64(iv)}</iv></header>"
            f"<payload>{b64(ciphertext)}</payload></encrypted>"
            "<store xmlns='urn:xmpp:hints'/><encryption xmlns='urn:xmpp:eme:0' namespace='eu.siacs.conversations.axolotl'/>"
            "</message>"
        )
        emit(event="sent")

    def receive(self, message: etree._Element) -> None:
        encrypted = message.find(f"{{{NS}}}encrypted")
        header = encrypted.find(f"{{{NS}}}header")
        sender, device = message.get("from").split("/")[0], int(header.get("sid"))
        key = next(k for k in header.iterfind(f"{{{NS}}}key") if int(k.get("rid")) == self.device_id)
        data = base64.b64decode(key.text)
        cipher = SessionCipher(self.store, self.store, self.store, self.store, sender, device)
        prekey = key.get("prekey") in ("true", "1")
        material = bytes(
            cipher.decryptPkmsg(PreKeyWhisperMessage(serialized=data))
            if prekey
            else cipher.decryptMsg(WhisperMessage(serialized=data))
        )
        if encrypted.find(f"{{{NS}}}payload") is None:
            return  # a key transport message (heartbeat): the session moved on
        payload = base64.b64decode(encrypted.findtext(f"{{{NS}}}payload"))
        body = AESGCM(material[:16]).decrypt(
            base64.b64decode(header.findtext(f"{{{NS}}}iv")), payload + material[16:], None
        )
        emit(event="received", body=body.decode("utf-8"), prekey=prekey, **{"from": message.get("from")})


async def main(jid: str, password: str, port: str) -> None:
    client = Client(jid, password, verify_tls=False)
    inbox = Inbox(client)
    peer = LegacyOmemoPeer(client, inbox)
    await client.login("127.0.0.1", int(port))
    client.send_raw("<presence/>")
    await peer.announce()
    emit(event="online", device=peer.device_id)

    async def receive_messages():
        while True:
            message = await inbox.wait(
                lambda s: s.tag == MESSAGE and s.find(f"{{{NS}}}encrypted") is not None, timeout=3600
            )
            try:
                peer.receive(message)
            except Exception as error:  # reported, so that the test sees why
                emit(event="error", error=repr(error))

    receiving = asyncio.create_task(receive_messages())
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = json.loads(line)
        try:
            await peer.send(command["to"], command["body"])
        except Exception as error:
            emit(event="error", error=repr(error))
    receiving.cancel()
    await client.logout()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
