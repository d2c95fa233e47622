"""XEP-0030 Service Discovery, with XEP-0128 forms, and the server's XEP-0115 entity
capabilities in the stream features (section 6.3).

The features and identities come from the extensions loaded on each host (and, for an
account's bare JID, their `account_features`); no extension edits a reply by hand.
Answers disco#info and disco#items sent to a host, a component and an account. Items of
a host are its components (conference.<domain>, upload.<domain>, ...). The host's caps
'ver' is the hash of its disco#info (XEP-0115 section 5.1), kept until an extension
loads; disco#info to the node '<CAPS_NODE>#<ver>' answers as disco#info to the host.

Hooks: extension-loaded (forgets the caps 'ver').
"""

from xmppd.caps import NS_CAPS, verification_string
from xmppd.extension import Extension, hook, iq_handler
from xmppd.protocol.errors import ItemNotFound, ServiceUnavailable
from xmppd.protocol.stanza import make_element, sub_element

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
CAPS_NODE = "https://pypi.org/project/xmppd"  # XEP-0115 section 4: a URI naming the software
CAPS_HASH = "sha-1"  # what every client verifies (XEP-0115 section 5.4)


def info_element(identities, features, forms=(), node=None):
    query = make_element(f"{{{NS_DISCO_INFO}}}query", {"node": node})
    for category, type_, name in sorted(identities):
        sub_element(query, f"{{{NS_DISCO_INFO}}}identity", {"category": category, "type": type_, "name": name or None})
    for feature in sorted(set(features)):
        sub_element(query, f"{{{NS_DISCO_INFO}}}feature", {"var": feature})
    for form in forms:
        query.append(form)
    return query


class Disco(Extension):
    xeps = {30: "2.5rc3", 128: "1.0"}
    features = [NS_DISCO_INFO, NS_DISCO_ITEMS]

    def __init__(self, host, options):
        super().__init__(host, options)
        self._caps_ver: str | None = None

    @property
    def _host_identities(self):
        if self.host.is_component:
            return self.host.identities
        return [("server", "im", "xmppd"), *self.host.identities]

    def _host_info(self, node=None):
        forms = [form for extension in self.host.extensions.values() for form in extension.disco_forms()]
        return info_element(self._host_identities, self.host.features, forms, node=node)

    @property
    def caps_ver(self) -> str:
        if self._caps_ver is None:
            self._caps_ver = verification_string(self._host_info(), CAPS_HASH)
        return self._caps_ver

    @hook("extension-loaded")
    async def forget_caps(self, extension) -> None:
        self._caps_ver = None

    def stream_features(self, authenticated: bool) -> list[bytes]:
        return [f"<c xmlns='{NS_CAPS}' hash='{CAPS_HASH}' node='{CAPS_NODE}' ver='{self.caps_ver}'/>".encode()]

    @iq_handler("get", NS_DISCO_INFO, "query", to=("host",), priority=-1)
    async def host_info(self, iq):
        node = iq.element[0].get("node")
        if node and node != f"{CAPS_NODE}#{self.caps_ver}":
            raise ItemNotFound()
        return self._host_info(node)

    @iq_handler("get", NS_DISCO_ITEMS, "query", to=("host",), priority=-1)
    async def host_items(self, iq):
        if iq.element[0].get("node"):
            raise ItemNotFound()
        query = make_element(f"{{{NS_DISCO_ITEMS}}}query")
        suffix = "." + self.host.domain
        for domain in sorted(host.domain for host in self.services.directory.hosts() if host.is_component):
            if domain.endswith(suffix):
                sub_element(query, f"{{{NS_DISCO_ITEMS}}}item", {"jid": domain})
        return query

    @iq_handler("get", NS_DISCO_INFO, "query", to=("self", "bare"), priority=-1)
    async def account_info(self, iq):
        await self._check_account_visible(iq)
        if iq.element[0].get("node"):
            raise ItemNotFound()
        extensions = self.host.extensions.values()
        identities = [("account", "registered", None)] + [i for e in extensions for i in e.account_identities]
        features = [NS_DISCO_INFO, NS_DISCO_ITEMS] + [f for e in extensions for f in e.account_features]
        return info_element(identities, features)

    @iq_handler("get", NS_DISCO_ITEMS, "query", to=("self", "bare"), priority=-1)
    async def account_items(self, iq):
        await self._check_account_visible(iq)
        return make_element(f"{{{NS_DISCO_ITEMS}}}query", {"node": iq.element[0].get("node")})

    async def _check_account_visible(self, iq):
        """Only the account itself and contacts it shares presence with learn that it exists."""
        owner, requester = iq.to.bare, iq.from_.bare
        if owner == requester:
            return
        if not await self.host.user_exists(owner.local):
            raise ServiceUnavailable()
        item = await self.host.storage.rosters.get_item(str(owner), str(requester))
        if item is None or item.subscription not in ("from", "both"):
            raise ServiceUnavailable()
