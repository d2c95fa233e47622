"""XEP-0054 vcard-temp, kept in step with XEP-0084 User Avatar by XEP-0398, and the
avatar hash of XEP-0153 put into the user's available presence.

A vCard is public: anyone may read it, only its owner sets it. It is kept in the
key-value store "vcard". When a client publishes avatar metadata over PEP, the image it
points to (the info without a URL, read from the avatar data node and checked against
its SHA-1 id) becomes the vCard's PHOTO; when a client sets a vCard with a PHOTO, the
image is published to the avatar data and metadata nodes (an empty metadata item when
the PHOTO goes). Each conversion stops when the other side already holds that image, so
the two never chase each other. Every available presence of the user, broadcast or
directed, gets <x xmlns='vcard-temp:x:update'><photo>hash</photo></x> unless the client
put an empty <photo/> there itself (XEP-0398 section 4). vCard4 over PEP (XEP-0292) is a
plain PEP node; the account advertises it.

Hooks: iq-get self|bare vcard-temp:vCard, iq-set self|bare vcard-temp:vCard,
pep-item-published and pep-node-deleted (the avatar metadata node),
pre-presence/broadcast|bare|full|host, session-closed, user-deleted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from lxml import etree

from xmppd.extension import Extension, hook, iq_handler
from xmppd.extensions.pep.events import ItemPublished, NodeDeleted
from xmppd.protocol.errors import BadRequest, Forbidden, ItemNotFound, NotAcceptable
from xmppd.protocol.jid import JID
from xmppd.protocol.stanza import from_storage, make_element, sub_element, to_storage

NS_VCARD = "vcard-temp"
NS_VCARD_UPDATE = "vcard-temp:x:update"
NS_VCARD4 = "urn:ietf:params:xml:ns:vcard-4.0"
NS_AVATAR_DATA = "urn:xmpp:avatar:data"
NS_AVATAR_METADATA = "urn:xmpp:avatar:metadata"
NS_CONVERSION = "urn:xmpp:pep-vcard-conversion:0"

VCARD = f"{{{NS_VCARD}}}vCard"
PHOTO = f"{{{NS_VCARD}}}PHOTO"
UPDATE = f"{{{NS_VCARD_UPDATE}}}x"
UPDATE_PHOTO = f"{{{NS_VCARD_UPDATE}}}photo"
INFO = f"{{{NS_AVATAR_METADATA}}}info"
KEY = "vcard-temp"


def photo_of(vcard: etree._Element) -> tuple[str, bytes] | None:
    """(media type, image) of a vCard's embedded PHOTO; None without one (or with an
    external one); BadRequest when BINVAL is not base64."""
    photo = vcard.find(PHOTO)
    binval = photo.findtext(f"{{{NS_VCARD}}}BINVAL") if photo is not None else None
    if not binval or not binval.strip():
        return None
    try:
        image = base64.b64decode("".join(binval.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(text="PHOTO/BINVAL is not base64") from None
    return (photo.findtext(f"{{{NS_VCARD}}}TYPE") or "image/png").strip(), image


def avatar_hash_of(metadata: etree._Element, item_id: str) -> str:
    """The hash of the avatar a metadata item announces, "" when it disables the avatar."""
    return item_id if metadata.find(INFO) is not None else ""


class VCards(Extension):
    xeps = {54: "1.2", 84: "1.1.4", 153: "1.1.1", 292: "1.1.0", 398: "1.0.0"}
    features = [NS_VCARD]
    account_features = [NS_VCARD, NS_CONVERSION, NS_VCARD4]
    depends = ["pep"]

    @dataclass(frozen=True)
    class Options:
        max_vcard_bytes: int = 200_000  # a vCard with its photo, serialized

        def validate(self, where):
            where.check("max_vcard_bytes", self.max_vcard_bytes > 0, "must be positive")

    def __init__(self, host, options):
        super().__init__(host, options)
        self.hashes: dict[str, str] = {}  # bare JID -> avatar hash ("" none), for users online

    async def start(self) -> None:
        self.store = self.host.open_keyvalue("vcard")
        self.pep = self.host.extensions["pep"]

    # ------------------------------------------------------------- vcard-temp

    @iq_handler("get", NS_VCARD, "vCard", to=("self", "bare"))
    async def get_vcard(self, iq):
        data = await self.store.get(str(iq.to.bare), KEY)
        if data is not None:
            return from_storage(data)
        if iq.to.bare == iq.from_.bare:
            return make_element(VCARD)  # XEP-0054 3.1: an empty vCard for oneself
        raise ItemNotFound()

    @iq_handler("set", NS_VCARD, "vCard", to=("self", "bare"))
    async def set_vcard(self, iq):
        owner = iq.to.bare
        if owner != iq.from_.bare:
            raise Forbidden(text="a vCard is set by its owner only")
        vcard = iq.element[0]
        data = to_storage(vcard)
        if len(data) > self.options.max_vcard_bytes:
            raise NotAcceptable(text=f"a vCard may take {self.options.max_vcard_bytes} bytes")
        photo = photo_of(vcard)
        await self.store.set(str(owner), KEY, data)
        await self._publish_avatar(owner, photo)
        return None

    # ------------------------------------------------------------- XEP-0398 conversion

    async def _publish_avatar(self, owner: JID, photo: tuple[str, bytes] | None) -> None:
        """vCard to PEP (XEP-0398 3.2): data first, then metadata."""
        current = await self.avatar_hash(owner)
        if photo is None:
            if current:
                await self.pep.publish(
                    owner, NS_AVATAR_METADATA, make_element(f"{{{NS_AVATAR_METADATA}}}metadata"), "current"
                )
            return
        media_type, image = photo
        digest = hashlib.sha1(image).hexdigest()
        if digest == current:
            return
        data = make_element(f"{{{NS_AVATAR_DATA}}}data", text=base64.b64encode(image).decode("ascii"))
        await self.pep.publish(owner, NS_AVATAR_DATA, data, digest)
        metadata = make_element(f"{{{NS_AVATAR_METADATA}}}metadata")
        sub_element(metadata, INFO, {"id": digest, "bytes": str(len(image)), "type": media_type})
        await self.pep.publish(owner, NS_AVATAR_METADATA, metadata, digest)

    @hook("pep-item-published")
    async def avatar_published(self, event: ItemPublished) -> None:
        """PEP to vCard (XEP-0398 3.1)."""
        if event.node != NS_AVATAR_METADATA:
            return
        owner = event.owner
        digest = avatar_hash_of(event.payload, event.item_id)
        if self.host.sessions_of(owner.local):
            self.hashes[str(owner)] = digest
        vcard = await self._vcard(owner)
        if not digest:
            photo = vcard.find(PHOTO)
            if photo is not None:
                vcard.remove(photo)
                await self.store.set(str(owner), KEY, to_storage(vcard))
            return
        info = next((i for i in event.payload.iterfind(INFO) if not i.get("url")), None)
        if info is None or info.get("id") != digest:
            return
        shown = photo_of(vcard)
        if shown is not None and hashlib.sha1(shown[1]).hexdigest() == digest:
            return
        stored = await self.pep.items(owner, NS_AVATAR_DATA, ids=[digest])
        if not stored:
            return
        try:
            image = base64.b64decode("".join((from_storage(stored[0].payload).text or "").split()), validate=True)
        except (binascii.Error, ValueError):
            return
        if hashlib.sha1(image).hexdigest() != digest:
            self.log.info("event=avatar-hash-mismatch owner=%s id=%s", owner, digest)
            return
        for old in vcard.findall(PHOTO):
            vcard.remove(old)
        photo = sub_element(vcard, PHOTO)
        sub_element(photo, f"{{{NS_VCARD}}}TYPE", text=info.get("type") or "image/png")
        sub_element(photo, f"{{{NS_VCARD}}}BINVAL", text=base64.b64encode(image).decode("ascii"))
        await self.store.set(str(owner), KEY, to_storage(vcard))

    @hook("pep-node-deleted")
    async def avatar_deleted(self, event: NodeDeleted) -> None:
        if event.node == NS_AVATAR_METADATA:
            self.hashes.pop(str(event.owner), None)

    async def _vcard(self, owner: JID) -> etree._Element:
        data = await self.store.get(str(owner), KEY)
        return from_storage(data) if data is not None else make_element(VCARD)

    async def avatar_hash(self, owner: JID) -> str:
        """The SHA-1 of the user's avatar, "" when there is none."""
        cached = self.hashes.get(str(owner))
        if cached is not None:
            return cached
        items = await self.pep.items(owner, NS_AVATAR_METADATA, max_items=1)
        digest = avatar_hash_of(from_storage(items[0].payload), items[0].id) if items else ""
        if self.host.sessions_of(owner.local):
            self.hashes[str(owner)] = digest
        return digest

    # ------------------------------------------------------------- XEP-0153 hash in presence

    @hook("pre-presence/broadcast", priority=10)
    @hook("pre-presence/bare", priority=10)
    @hook("pre-presence/full", priority=10)
    @hook("pre-presence/host", priority=10)
    async def add_avatar_hash(self, stanza) -> bool:
        if stanza.type is not None or stanza.origin is None:
            return False
        element = stanza.element
        update = element.find(UPDATE)
        if update is not None:
            photo = update.find(UPDATE_PHOTO)
            if photo is not None and not (photo.text or "").strip():
                return False  # the client says: no avatar, leave it so
        digest = await self.avatar_hash(stanza.origin.jid.bare)
        if not digest:
            return False
        if update is None:
            update = sub_element(element, UPDATE)
        for child in list(update):
            update.remove(child)
        sub_element(update, UPDATE_PHOTO, text=digest)
        return False

    @hook("session-closed")
    async def forget_hash(self, session) -> None:
        if not self.host.sessions_of(session.jid.local):
            self.hashes.pop(str(session.jid.bare), None)

    @hook("user-deleted")
    async def delete_vcard(self, jid: JID) -> None:
        self.hashes.pop(str(jid), None)
        await self.store.delete(str(jid))
