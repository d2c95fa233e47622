"""Bookmarks: XEP-0402 PEP native bookmarks as the one source, and XEP-0048 bookmarks for
older clients, in private XML storage (XEP-0049) and in the legacy PEP node, converted
both ways (XEP-0402 section 5.3, XEP-0411).

The 'urn:xmpp:bookmarks:1' node holds one item per room, its id the room's JID. A
private XML get of <storage xmlns='storage:bookmarks'/> is built from those items (and
the URL bookmarks XEP-0402 has no place for, kept aside); a private XML set, or a publish
to the legacy 'storage:bookmarks' PEP node, is compared with them: new and changed rooms
are published, missing ones retracted, unchanged ones left alone (no notification), and
the <extensions/> of a kept room survive. When the XEP-0402 items change and the legacy
PEP node exists, it is published again with the whole list.

Hooks: iq-get and iq-set self|bare jabber:iq:private:query (storage:bookmarks only,
before private.py), pep-item-published, pep-item-retracted.
"""

from __future__ import annotations

import copy

from lxml import etree

from xmppd.extension import PASS, Extension, hook, iq_handler
from xmppd.extensions.pep.events import ItemPublished, ItemRetracted
from xmppd.extensions.private import NS_PRIVATE, QUERY
from xmppd.protocol.errors import BadRequest
from xmppd.protocol.jid import JID, InvalidJID
from xmppd.protocol.stanza import from_storage, make_element, sub_element, to_storage

NS_BOOKMARKS = "urn:xmpp:bookmarks:1"
NS_LEGACY = "storage:bookmarks"
NS_CONVERSION = "urn:xmpp:bookmarks-conversion:0"
STORAGE = f"{{{NS_LEGACY}}}storage"
LEGACY_CONFERENCE = f"{{{NS_LEGACY}}}conference"
LEGACY_URL = f"{{{NS_LEGACY}}}url"
CONFERENCE = f"{{{NS_BOOKMARKS}}}conference"
TRUE = ("1", "true")
URLS_KEY = "urls"

# XEP-0402 section 3 / XEP-0223: private, every item kept, nothing pushed on presence.
NODE_DEFAULTS = {
    "access_model": "whitelist",
    "persist_items": True,
    "max_items": "max",
    "send_last_published_item": "never",
}
LEGACY_DEFAULTS = {"access_model": "whitelist", "persist_items": True}


def legacy_conference(room: str, conference: etree._Element) -> etree._Element:
    """A XEP-0402 <conference/> as a XEP-0048 one."""
    legacy = make_element(
        LEGACY_CONFERENCE,
        {
            "jid": room,
            "name": conference.get("name"),
            "autojoin": "true" if conference.get("autojoin") in TRUE else "false",
        },
    )
    for name in ("nick", "password"):
        text = conference.findtext(f"{{{NS_BOOKMARKS}}}{name}")
        if text is not None:
            sub_element(legacy, f"{{{NS_LEGACY}}}{name}", text=text)
    return legacy


def conferences_of(storage: etree._Element) -> dict[str, etree._Element]:
    """The rooms of a XEP-0048 <storage/> as XEP-0402 <conference/> elements by room JID."""
    rooms = {}
    for legacy in storage.iterfind(LEGACY_CONFERENCE):
        try:
            room = str(JID.parse(legacy.get("jid") or ""))
        except InvalidJID:
            raise BadRequest(text="a bookmark has no valid room JID") from None
        conference = make_element(
            CONFERENCE, {"name": legacy.get("name"), "autojoin": "true" if legacy.get("autojoin") in TRUE else "false"}
        )
        for name in ("nick", "password"):
            text = legacy.findtext(f"{{{NS_LEGACY}}}{name}")
            if text is not None:
                sub_element(conference, f"{{{NS_BOOKMARKS}}}{name}", text=text)
        rooms[room] = conference
    return rooms


def essence(conference: etree._Element) -> tuple:
    """What XEP-0048 can say about a room: two conferences equal in it are the same bookmark."""
    return (
        conference.get("name"),
        conference.get("autojoin") in TRUE,
        conference.findtext(f"{{{NS_BOOKMARKS}}}nick"),
        conference.findtext(f"{{{NS_BOOKMARKS}}}password"),
    )


class Bookmarks(Extension):
    xeps = {48: "1.2", 402: "1.2.0", 411: "1.1.0"}
    account_features = [NS_CONVERSION, f"{NS_BOOKMARKS}#compat", f"{NS_BOOKMARKS}#compat-pep"]
    depends = ["pep", "private"]

    def __init__(self, host, options):
        super().__init__(host, options)
        self.converting: set[str] = set()  # owners whose bookmarks this module is rewriting

    async def start(self) -> None:
        self.pep = self.host.extensions["pep"]
        self.private = self.host.extensions["private"]
        self.store = self.host.open_keyvalue("bookmarks")

    # ------------------------------------------------------------- private XML (XEP-0049)

    @iq_handler("get", NS_PRIVATE, "query", to=("self", "bare"), priority=1)
    async def get_legacy(self, iq):
        fragments = self.private.check_request(iq)
        if fragments[0].tag != STORAGE:
            return PASS
        query = make_element(QUERY)
        query.append(await self.legacy_storage(iq.to.bare))
        return query

    @iq_handler("set", NS_PRIVATE, "query", to=("self", "bare"), priority=1)
    async def set_legacy(self, iq):
        fragments = self.private.check_request(iq)
        storages = [fragment for fragment in fragments if fragment.tag == STORAGE]
        if not storages:
            return PASS
        if len(storages) > 1:
            raise BadRequest(text="one bookmarks storage per request")
        others = [fragment for fragment in fragments if fragment.tag != STORAGE]
        if others:
            await self.private.save(iq.to.bare, others)
        await self.apply_legacy(iq.to.bare, storages[0])
        return None

    # ------------------------------------------------------------- conversions

    async def legacy_storage(self, owner: JID) -> etree._Element:
        storage = make_element(STORAGE)
        for item in reversed(await self.pep.items(owner, NS_BOOKMARKS)):
            storage.append(legacy_conference(item.id, from_storage(item.payload)))
        urls = await self.store.get(str(owner), URLS_KEY)
        if urls is not None:
            for url in from_storage(urls).iterfind(LEGACY_URL):
                storage.append(copy.deepcopy(url))
        return storage

    async def apply_legacy(self, owner: JID, storage: etree._Element) -> None:
        """Make the XEP-0402 items say what a XEP-0048 list says (XEP-0402 5.3.2)."""
        wanted = conferences_of(storage)
        kept = make_element(STORAGE)
        for url in storage.iterfind(LEGACY_URL):
            kept.append(copy.deepcopy(url))
        await self.store.set(str(owner), URLS_KEY, to_storage(kept))
        current = {item.id: from_storage(item.payload) for item in await self.pep.items(owner, NS_BOOKMARKS)}
        self.converting.add(str(owner))
        try:
            for room, conference in wanted.items():
                old = current.get(room)
                if old is not None and essence(old) == essence(conference):
                    continue
                extensions = old.find(f"{{{NS_BOOKMARKS}}}extensions") if old is not None else None
                if extensions is not None:
                    conference.append(copy.deepcopy(extensions))
                await self.pep.publish(owner, NS_BOOKMARKS, conference, room, defaults=NODE_DEFAULTS)
            for room in current.keys() - wanted.keys():
                await self.pep.retract(owner, NS_BOOKMARKS, room, notify=True)
        finally:
            self.converting.discard(str(owner))
        await self._refresh_legacy_node(owner)

    async def _refresh_legacy_node(self, owner: JID) -> None:
        """Publish the whole list again to the legacy PEP node, if a client uses it."""
        if await self.pep.store.get_node(str(owner), NS_LEGACY) is None:
            return
        self.converting.add(str(owner))
        try:
            await self.pep.publish(
                owner, NS_LEGACY, await self.legacy_storage(owner), "current", defaults=LEGACY_DEFAULTS
            )
        finally:
            self.converting.discard(str(owner))

    @hook("pep-item-published")
    async def item_published(self, event: ItemPublished) -> None:
        if str(event.owner) in self.converting:
            return
        if event.node == NS_LEGACY and event.payload.tag == STORAGE:
            await self.apply_legacy(event.owner, event.payload)
        elif event.node == NS_BOOKMARKS:
            await self._refresh_legacy_node(event.owner)

    @hook("pep-item-retracted")
    async def item_retracted(self, event: ItemRetracted) -> None:
        if event.node == NS_BOOKMARKS and str(event.owner) not in self.converting:
            await self._refresh_legacy_node(event.owner)
