"""XEP-0163 Personal Eventing Protocol: the nodes of each account's service (its bare
JID), kept in the PubSubStore: publishing (a node created on first publish, XEP-0163
section 3, with XEP-0223 publish options as its configuration and preconditions),
retracting, reading and deleting, each under the account's lock, within the account's
quotas (quotas.py), and notified (notifications.py).

This is the API other extensions use through the `pep` extension (publish, retract,
items, delete); requests.py and owner.py serve the same to clients. Other parts find
this one as `host.extensions["pep.service"]`.

Hooks: user-deleted. Fires: pep-item-published, pep-item-retracted, pep-node-deleted
(events.py).
"""

from __future__ import annotations

import copy
import time

from lxml import etree

from xmppd import pubsub
from xmppd.extension import Extension, hook
from xmppd.locks import KeyedLocks
from xmppd.protocol.errors import Conflict
from xmppd.protocol.jid import JID
from xmppd.protocol.stanza import make_element, to_storage
from xmppd.pubsub import NS_PUBSUB_EVENT, nodes, pubsub_error
from xmppd.storage.interfaces import PubSubItem

from .access import NodeAccess
from .events import ItemPublished, ItemRetracted, NodeDeleted
from .quotas import Quotas


class PepService(Extension):
    depends = ["pep.notifications"]

    def __init__(self, host, options):
        super().__init__(host, options)
        self.pep = host.extensions["pep"]
        self.options = self.pep.options
        self.notifications = host.extensions["pep.notifications"]
        self.lock = KeyedLocks()  # per account: read-modify-write of its nodes

    async def start(self) -> None:
        self.store = self.host.storage.pubsub
        self.quotas = Quotas(self.pep, self.store)
        self.access = NodeAccess(self.host)

    async def publish(
        self,
        owner: JID,
        node: str,
        payload: etree._Element,
        item_id: str | None = None,
        *,
        preconditions: dict | None = None,
        defaults: dict | None = None,
        publisher: JID | None = None,
    ) -> str:
        """Publish `payload` as item `item_id` (a new id when None) of the owner's
        `node`, creating it with `defaults` and `preconditions` when it does not exist,
        and notify. Returns the item id. Raises the XEP-0060 errors."""
        stored = to_storage(payload)
        self.quotas.check_payload(stored)
        item_id = pubsub.item_id_of(item_id)
        publisher = publisher or owner
        async with self.lock(str(owner)):
            config = await self.store.get_node(str(owner), node)
            if config is None:
                config = nodes.configure(nodes.new_config(defaults), preconditions or {})
                await self.create(owner, node, config, preconditions or {})
            elif preconditions:
                nodes.check_preconditions(config, preconditions, self.options.max_items)
            if config.get("persist_items", True):
                keep = nodes.max_items(config, self.options.max_items)
                counted = await self.quotas.counted(owner)
                node_bytes = await self.quotas.bytes_after_publish(counted, owner, node, item_id, len(stored), keep)
                await self.store.publish(
                    str(owner), node, PubSubItem(item_id, stored, str(publisher), time.time()), keep
                )
                counted[node] = node_bytes
        await self.host.bus.notify("pep-item-published", ItemPublished(owner, node, item_id, payload, publisher))
        if config.get("deliver_notifications", True):
            item = make_element(f"{{{NS_PUBSUB_EVENT}}}item", {"id": item_id})
            if config.get("deliver_payloads", True):
                item.append(copy.deepcopy(payload))
            await self.notifications.notify(owner, node, config, pubsub.items_event(node, item))
        return item_id

    async def retract(self, owner: JID, node: str, item_id: str, notify: bool | None = None) -> bool:
        """Remove an item; False when there was no such node or item."""
        async with self.lock(str(owner)):
            config = await self.store.get_node(str(owner), node)
            if config is None or not await self.store.retract(str(owner), node, item_id):
                return False
            await self.quotas.recount(owner, node)
        await self.host.bus.notify("pep-item-retracted", ItemRetracted(owner, node, item_id))
        if config.get("notify_retract", True) if notify is None else notify:
            retracted = make_element(f"{{{NS_PUBSUB_EVENT}}}retract", {"id": item_id})
            await self.notifications.notify(owner, node, config, pubsub.items_event(node, retracted))
        return True

    async def items(
        self, owner: JID, node: str, ids: list[str] | None = None, max_items: int | None = None
    ) -> list[PubSubItem]:
        """Stored items, newest first (empty for an unknown node)."""
        return await self.store.get_items(str(owner), node, ids, max_items)

    async def delete(self, owner: JID, node: str) -> bool:
        """Delete a node and its items; False when there was no such node."""
        async with self.lock(str(owner)):
            config = await self.store.get_node(str(owner), node)
            if config is None:
                return False
            notified = config.get("notify_delete", True)
            recipients = await self.notifications.recipients(owner, node, config) if notified else []
            await self.store.delete_node(str(owner), node)
            self.quotas.forget_node(owner, node)
        await self.host.bus.notify("pep-node-deleted", NodeDeleted(owner, node))
        for to in recipients:
            deleted = make_element(f"{{{NS_PUBSUB_EVENT}}}delete", {"node": node})
            await self.notifications.send_event(owner, to, config, deleted)
        return True

    async def create(self, owner: JID, node: str, config: dict, options: dict) -> None:
        """Store a new node configured with `options` (as `config`); the caller holds the
        account's lock and knows that the node does not exist."""
        if any(value is None for value in options.values()):
            raise pubsub_error(Conflict, "precondition-not-met")  # an option we do not know
        await self.quotas.check_nodes(owner)
        await self.store.set_node(str(owner), node, config)

    @hook("user-deleted")
    async def delete_nodes(self, jid: JID) -> None:
        async with self.lock(str(jid)):
            for node in await self.store.list_nodes(str(jid)):
                await self.store.delete_node(str(jid), node)
            self.quotas.forget_account(jid)
