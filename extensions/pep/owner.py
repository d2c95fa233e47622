"""The XEP-0060 pubsub#owner requests to an account's PEP service, from the account
itself (section 8): a node's configuration form and its changes (section 8.2, items
beyond the new max_items dropped), the default configuration (section 8.3), deleting a
node (section 8.4), purging its items (section 8.5), and the members of a whitelist node
(section 8.9, with member and none only: the owner is the account).

Hooks: iq-get and iq-set self|bare pubsub#owner.
"""

from __future__ import annotations

from xmppd import pubsub
from xmppd.extension import iq_handler
from xmppd.protocol.errors import BadRequest, ItemNotFound
from xmppd.protocol.jid import JID
from xmppd.protocol.stanza import make_element, sub_element
from xmppd.pubsub import NS_PUBSUB_EVENT, NS_PUBSUB_OWNER, OWNER, affiliations, nodes

from .part import PepPart


class PepOwner(PepPart):
    @iq_handler("get", NS_PUBSUB_OWNER, "pubsub", to=("self", "bare"))
    async def owner_get(self, iq):
        owner = await self.access.account_of(iq, owner_only=True)
        action, name = self._action(iq, ("configure", "default", "affiliations"))
        answer = make_element(OWNER)
        if name == "default":
            form = nodes.config_form(nodes.new_config(), self.options.max_items)
            sub_element(answer, f"{{{NS_PUBSUB_OWNER}}}default").append(form)
            return answer
        node = pubsub.node_of(action)
        config = await self.store.get_node(str(owner), node)
        if config is None:
            raise ItemNotFound()
        if name == "affiliations":
            return affiliations.listing(node, {str(owner): "owner", **config.get("affiliations", {})})
        form = nodes.config_form(config, self.options.max_items)
        sub_element(answer, f"{{{NS_PUBSUB_OWNER}}}configure", {"node": node}).append(form)
        return answer

    @iq_handler("set", NS_PUBSUB_OWNER, "pubsub", to=("self", "bare"))
    async def owner_set(self, iq):
        owner = await self.access.account_of(iq, owner_only=True)
        action, name = self._action(iq, ("configure", "delete", "purge", "affiliations"))
        node = pubsub.node_of(action)
        if name == "delete":
            if not await self.service.delete(owner, node):
                raise ItemNotFound()
        elif name == "purge":
            await self._purge(owner, node)
        elif name == "affiliations":
            await self._set_affiliations(owner, node, affiliations.read_changes(action, ("member", "none")))
        else:
            await self._configure(owner, node, action)
        return None

    @staticmethod
    def _action(iq, allowed: tuple[str, ...]):
        """The one pubsub#owner action of a request, and its name."""
        actions, names = pubsub.actions(iq)
        if len(actions) != 1:
            raise BadRequest(text="one pubsub#owner action is expected")
        if names[0] not in allowed:
            raise pubsub.unsupported(names)
        return actions[0], names[0]

    async def _configure(self, owner: JID, node: str, configure) -> None:
        options = nodes.submitted_config(configure, self.options.max_items)
        if options is None:
            return
        async with self.service.lock(str(owner)):
            config = await self.store.get_node(str(owner), node)
            if config is None:
                raise ItemNotFound()
            config = nodes.configure(config, options)
            await self.store.set_node(str(owner), node, config)
            await nodes.drop_items(self.store, str(owner), node, nodes.kept_items(config, self.options.max_items))
            await self.service.quotas.recount(owner, node)

    async def _set_affiliations(self, owner: JID, node: str, changes: dict[str, str]) -> None:
        """The whitelist of a node (XEP-0060 8.9): its members."""
        async with self.service.lock(str(owner)):
            config = await self.store.get_node(str(owner), node)
            if config is None:
                raise ItemNotFound()
            config["affiliations"] = affiliations.changed(config, changes)
            await self.store.set_node(str(owner), node, config)

    async def _purge(self, owner: JID, node: str) -> None:
        async with self.service.lock(str(owner)):
            config = await self.store.get_node(str(owner), node)
            if config is None:
                raise ItemNotFound()
            await nodes.drop_items(self.store, str(owner), node)
            await self.service.quotas.recount(owner, node)
        purged = make_element(f"{{{NS_PUBSUB_EVENT}}}purge", {"node": node})
        await self.notifications.notify(owner, node, config, purged)
