"""XEP-0049 Private XML Storage: an account keeps XML fragments on its server, one per
element name and namespace, that only its own resources read and write.

Fragments live in the key-value store "private", keyed by their Clark name
('{exodus:prefs}exodus'). bookmarks.py answers for 'storage:bookmarks' (XEP-0411) and
reuses `check_request`, `load` and `save`.

Hooks: iq-get and iq-set self|bare jabber:iq:private:query, user-deleted.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from xmppd.extension import Extension, hook, iq_handler
from xmppd.protocol.errors import BadRequest, Forbidden, NotAcceptable
from xmppd.protocol.jid import JID
from xmppd.protocol.namespaces import NS_CLIENT, NS_SERVER
from xmppd.protocol.stanza import from_storage, make_element, to_storage

NS_PRIVATE = "jabber:iq:private"
QUERY = f"{{{NS_PRIVATE}}}query"
# Namespaces that cannot root a fragment (XEP-0049 section 2.2 lets servers refuse reserved ones).
RESERVED = frozenset((NS_PRIVATE, NS_CLIENT, NS_SERVER))


class PrivateStorage(Extension):
    xeps = {49: "1.2"}
    features = [NS_PRIVATE]

    @dataclass(frozen=True)
    class Options:
        max_fragment_bytes: int = 128 * 1024  # one stored fragment, serialized
        max_fragments: int = 100  # fragments per account

        def validate(self, where):
            where.check("max_fragment_bytes", self.max_fragment_bytes > 0, "must be positive")
            where.check("max_fragments", self.max_fragments > 0, "must be positive")

    async def start(self) -> None:
        self.store = self.host.open_keyvalue("private")

    def check_request(self, iq) -> list[etree._Element]:
        """The fragments of a jabber:iq:private request, after XEP-0049's checks."""
        if iq.to.bare != iq.from_.bare:
            raise Forbidden(text="private XML belongs to its owner only")
        fragments = [child for child in iq.element[0] if isinstance(child.tag, str)]
        if not fragments:
            raise NotAcceptable(text="name the fragment: one child element in its own namespace")
        for fragment in fragments:
            namespace = etree.QName(fragment).namespace
            if namespace is None or namespace in RESERVED:
                raise NotAcceptable(text=f"the namespace {namespace} is reserved")
        if iq.type == "get" and len(fragments) > 1:
            raise BadRequest(text="one fragment per get")
        return fragments

    async def load(self, owner: JID, tag: str) -> etree._Element | None:
        data = await self.store.get(str(owner), tag)
        return from_storage(data) if data is not None else None

    async def save(self, owner: JID, fragments: list[etree._Element]) -> None:
        """Store fragments, all or none (limits checked first)."""
        serialized = {fragment.tag: to_storage(fragment) for fragment in fragments}
        if any(len(data) > self.options.max_fragment_bytes for data in serialized.values()):
            raise NotAcceptable(text="the fragment is too large")
        known = set(await self.store.keys(str(owner)))
        if len(known | set(serialized)) > self.options.max_fragments:
            raise NotAcceptable(text="too many private XML fragments")
        for tag, data in serialized.items():
            await self.store.set(str(owner), tag, data)

    @iq_handler("get", NS_PRIVATE, "query", to=("self", "bare"))
    async def get_fragment(self, iq):
        fragment = self.check_request(iq)[0]
        stored = await self.load(iq.to.bare, fragment.tag)
        query = make_element(QUERY)
        query.append(stored if stored is not None else make_element(fragment.tag))
        return query

    @iq_handler("set", NS_PRIVATE, "query", to=("self", "bare"))
    async def set_fragments(self, iq):
        await self.save(iq.to.bare, self.check_request(iq))
        return None

    @hook("user-deleted")
    async def delete_fragments(self, jid: JID) -> None:
        await self.store.delete(str(jid))
