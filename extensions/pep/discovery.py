"""Service discovery (XEP-0030) of an account's PEP nodes, as XEP-0163 section 6.2 asks:
disco#items of the account lists the nodes the requester may read (access.py), disco#items
of a node its item ids, disco#info of a node its pubsub/leaf identity and its
pubsub#meta-data form (XEP-0060 section 5.4). The account itself, and a node the
requester may not see, are left to disco.py (which answers as for any unknown node of
the account, or as for an account that does not exist).

Hooks: iq-get self|bare disco#info and disco#items with a node (before disco.py).
"""

from __future__ import annotations

from xmppd.extension import PASS, Extension, iq_handler
from xmppd.extensions.disco import NS_DISCO_INFO, NS_DISCO_ITEMS, info_element
from xmppd.protocol.stanza import make_element, sub_element
from xmppd.pubsub import NS_PUBSUB, nodes

from .access import access_error


class PepDiscovery(Extension):
    depends = ["disco", "pep.service"]

    def __init__(self, host, options):
        super().__init__(host, options)
        service = host.extensions["pep.service"]
        self.store = service.store
        self.access = service.access

    @iq_handler("get", NS_DISCO_INFO, "query", to=("self", "bare"))
    async def node_info(self, iq):
        node = iq.element[0].get("node")
        if not node:
            return PASS  # the account itself: disco.py answers
        owner = iq.to.bare
        config = await self.access.visible_node(owner, node, iq.from_)
        if config is None:
            return PASS  # not a PEP node: another extension's, or none
        meta = nodes.meta_data(config, (str(owner),), "presence")
        return info_element([("pubsub", "leaf", None)], [NS_PUBSUB], [meta], node=node)

    @iq_handler("get", NS_DISCO_ITEMS, "query", to=("self", "bare"))
    async def node_items(self, iq):
        """XEP-0163 section 6.2: the nodes the requester may see; a node's item ids."""
        owner = iq.to.bare
        node = iq.element[0].get("node")
        answer = make_element(f"{{{NS_DISCO_ITEMS}}}query", {"node": node})
        if node:
            config = await self.access.visible_node(owner, node, iq.from_)
            if config is None:
                return PASS
            if config.get("persist_items", True):
                for stored in await self.store.get_items(str(owner), node):
                    sub_element(answer, f"{{{NS_DISCO_ITEMS}}}item", {"jid": str(owner), "name": stored.id})
            return answer
        item = await self.access.contact(owner, iq.from_)
        for name in await self.store.list_nodes(str(owner)):
            config = await self.store.get_node(str(owner), name)
            if config is not None and access_error(owner, config, iq.from_, item) is None:
                sub_element(answer, f"{{{NS_DISCO_ITEMS}}}item", {"jid": str(owner), "node": name})
        if not len(answer):
            return PASS  # disco.py: an empty list, or the answer of no account
        return answer
