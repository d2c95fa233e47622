"""The XEP-0060 requests of publishers and subscribers to an account's PEP service, as
XEP-0163 keeps them: publish (with XEP-0223 publish options, section 7.1.5), create
(with a configuration, no instant nodes), retract (section 7.2), items (section 6.5),
subscribe and unsubscribe (sections 6.1 and 6.2: one subscribes only oneself) and one's
subscriptions (section 5.6). Only the owner publishes, creates and retracts.

Hooks: iq-set and iq-get self|bare pubsub.
"""

from __future__ import annotations

from xmppd import forms, pubsub
from xmppd.extension import iq_handler
from xmppd.protocol.errors import BadRequest, Conflict, ItemNotFound, NotAcceptable
from xmppd.protocol.stanza import make_element, sub_element
from xmppd.pubsub import ITEM, NS_PUBSUB, PUBSUB, nodes, pubsub_error

from .part import PepPart


class PepRequests(PepPart):
    @iq_handler("set", NS_PUBSUB, "pubsub", to=("self", "bare"))
    async def pubsub_set(self, iq):
        actions, names = pubsub.actions(iq)
        if names and names[0] == "publish" and set(names[1:]) <= {"publish-options"} and len(names) <= 2:
            return await self._publish(iq, actions[0], actions[1] if len(actions) == 2 else None)
        if names and names[0] == "create" and set(names[1:]) <= {"configure"} and len(names) <= 2:
            return await self._create(iq, actions[0], actions[1] if len(actions) == 2 else None)
        if len(names) == 1 and names[0] in ("retract", "subscribe", "unsubscribe"):
            return await getattr(self, f"_{names[0]}")(iq, actions[0])
        raise pubsub.unsupported(names)

    @iq_handler("get", NS_PUBSUB, "pubsub", to=("self", "bare"))
    async def pubsub_get(self, iq):
        actions, names = pubsub.actions(iq)
        if names == ["items"]:
            return await self._items(iq, actions[0])
        if names == ["subscriptions"]:
            return await self._subscriptions(iq, actions[0])
        raise pubsub.unsupported(names)

    # ------------------------------------------------------------- publisher

    async def _publish(self, iq, publish, publish_options):
        owner = await self.access.account_of(iq, owner_only=True)
        node = pubsub.node_of(publish)
        items = publish.findall(ITEM)
        if not items:
            raise pubsub_error(BadRequest, "item-required")
        if len(items) > 1:
            raise pubsub_error(BadRequest, "invalid-payload")
        payloads = [child for child in items[0] if isinstance(child.tag, str)]
        if not payloads:
            raise pubsub_error(BadRequest, "payload-required")
        if len(payloads) > 1:
            raise pubsub_error(BadRequest, "invalid-payload")
        preconditions = nodes.form_options(publish_options, nodes.PUBLISH_OPTIONS, self.options.max_items)
        item_id = await self.service.publish(
            owner, node, payloads[0], items[0].get("id"), preconditions=preconditions, publisher=iq.from_
        )
        answer = make_element(PUBSUB)
        sub_element(sub_element(answer, f"{{{NS_PUBSUB}}}publish", {"node": node}), ITEM, {"id": item_id})
        return answer

    async def _create(self, iq, create, configure):
        owner = await self.access.account_of(iq, owner_only=True)
        node = create.get("node")
        if not node:
            raise pubsub_error(NotAcceptable, "nodeid-required")  # no instant nodes
        options = nodes.form_options(configure, nodes.NODE_CONFIG, self.options.max_items) or {}
        async with self.service.lock(str(owner)):
            if await self.store.get_node(str(owner), node) is not None:
                raise Conflict(text="the node exists")
            known = {key: value for key, value in options.items() if value is not None}
            await self.service.create(owner, node, nodes.configure(nodes.new_config(), known), known)
        return None

    async def _retract(self, iq, retract):
        owner = await self.access.account_of(iq, owner_only=True)
        node = pubsub.node_of(retract)
        item = retract.find(ITEM)
        if item is None or not item.get("id"):
            raise pubsub_error(BadRequest, "item-required")
        notify = retract.get("notify")
        if not await self.service.retract(
            owner, node, item.get("id"), None if notify is None else notify in forms.TRUE
        ):
            raise ItemNotFound()
        return None

    # ------------------------------------------------------------- subscriber

    async def _items(self, iq, request):
        owner = await self.access.account_of(iq)
        node = pubsub.node_of(request)
        config = await self.access.readable_node(owner, node, iq.from_)
        ids, limit = pubsub.items_wanted(request)
        found = []
        if config.get("persist_items", True):
            found = await self.store.get_items(str(owner), node, ids, limit)
        return pubsub.items_answer(node, found)

    async def _subscribe(self, iq, request):
        owner = await self.access.account_of(iq)
        node = pubsub.node_of(request)
        subscriber = pubsub.subscriber_of(iq, request)
        async with self.service.lock(str(owner)):
            config = await self.access.readable_node(owner, node, iq.from_)
            subscribers = config.setdefault("subscribers", [])
            if str(subscriber) not in subscribers:
                self.service.quotas.check_subscribers(subscribers)
                subscribers.append(str(subscriber))
                await self.store.set_node(str(owner), node, config)
        if config.get("send_last_published_item") in ("on_sub", "on_sub_and_presence"):
            self.services.tasks.spawn(self.notifications.send_last_item(owner, node, config, subscriber))
        return pubsub.subscribed_answer(node, subscriber)

    async def _unsubscribe(self, iq, request):
        owner = await self.access.account_of(iq)
        node = pubsub.node_of(request)
        subscriber = pubsub.subscriber_of(iq, request)
        async with self.service.lock(str(owner)):
            config = await self.store.get_node(str(owner), node)
            if config is None:
                raise await self.access.no_such_node(owner, iq.from_)
            pubsub.unsubscribe(config, subscriber)
            await self.store.set_node(str(owner), node, config)
        return None

    async def _subscriptions(self, iq, request):
        owner = await self.access.account_of(iq)
        wanted = [request.get("node")] if request.get("node") else await self.store.list_nodes(str(owner))
        configs = []
        for node in wanted:
            config = await self.store.get_node(str(owner), node)
            if config is None:
                if request.get("node"):
                    raise await self.access.no_such_node(owner, iq.from_)
                continue
            configs.append((node, config))
        return pubsub.subscriptions_answer(iq.from_, request.get("node"), configs)
