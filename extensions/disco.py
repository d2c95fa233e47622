"""XEP-0030 Service Discovery, with XEP-0128 forms.

The features and identities come from the extensions loaded on each host (and, for an
account's bare JID, their `account_features`); no extension edits a reply by hand.
Answers disco#info and disco#items sent to a host, a component and an account. Items of
a host are its components (conference.<domain>, upload.<domain>, ...).
"""
from xmppd.extension import Extension, iq_handler
from xmppd.protocol.errors import ItemNotFound, ServiceUnavailable
from xmppd.protocol.stanza import make_element, sub_element

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"


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

    @property
    def _host_identities(self):
        if self.host.is_component:
            return self.host.identities
        return [("server", "im", "xmppd"), *self.host.identities]

    @iq_handler("get", NS_DISCO_INFO, "query", to=("host",), priority=-1)
    async def host_info(self, iq):
        if iq.element[0].get("node"):
            raise ItemNotFound()
        forms = [form for extension in self.host.extensions.values() for form in extension.disco_forms()]
        return info_element(self._host_identities, self.host.features, forms)

    @iq_handler("get", NS_DISCO_ITEMS, "query", to=("host",), priority=-1)
    async def host_items(self, iq):
        if iq.element[0].get("node"):
            raise ItemNotFound()
        query = make_element(f"{{{NS_DISCO_ITEMS}}}query")
        suffix = "." + self.host.domain
        for domain, host in sorted(self.server.hosts.items()):
            if host.is_component and domain.endswith(suffix):
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
