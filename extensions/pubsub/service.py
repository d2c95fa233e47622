"""XEP-0060 Publish-Subscribe: the service on its component (pubsub.<domain>).

Entity use cases (disco#info and disco#items of the service and of its nodes, one's
subscriptions and affiliations), subscriber (subscribe, unsubscribe, retrieve items),
publisher (publish with publish options, retract) and owner (create, configure, default
configuration, delete, purge, manage subscriptions and affiliations) use cases; access
models open, presence, roster (the owners' rosters) and whitelist; notifications of
published and retracted items, purges and deletions to the subscribers.

Hooks: iq/host (routes iqs to the iq-<type>/host/... events), message/host|bare|full
(refused), iq-get|set/host pubsub and pubsub#owner, disco#info and disco#items with a node.
"""

from __future__ import annotations

import copy
import secrets
import time

from lxml import etree

from xmppd import forms, pubsub
from xmppd.extension import PASS, ComponentService, iq_handler
from xmppd.extensions.disco import NS_DISCO_INFO, NS_DISCO_ITEMS, info_element
from xmppd.ids import time_ordered_id
from xmppd.locks import KeyedLocks
from xmppd.protocol.errors import BadRequest, Conflict, Forbidden, ItemNotFound, NotAcceptable, NotAllowed, StanzaError
from xmppd.protocol.jid import JID
from xmppd.protocol.stanza import make_element, sub_element, to_storage
from xmppd.pubsub import (
    ITEM,
    NS_PUBSUB,
    NS_PUBSUB_EVENT,
    NS_PUBSUB_OWNER,
    OWNER,
    PUBSUB,
    affiliations,
    nodes,
    pubsub_error,
)
from xmppd.pubsub.affiliations import WHITELISTED, affiliation_of
from xmppd.storage.interfaces import PubSubItem

# The service's defaults where they differ from PEP's (XEP-0060 section 16.4.4).
DEFAULTS = {"access_model": "open", "max_items": nodes.MAX, "send_last_published_item": "on_sub"}
PUBLISHERS = frozenset(("owner", "publisher", "publish-only"))

# XEP-0060 section 10 features.
FEATURES = [
    NS_PUBSUB,
    *(
        f"{NS_PUBSUB}#{name}"
        for name in (
            "access-open",
            "access-presence",
            "access-roster",
            "access-whitelist",
            "auto-create",
            "config-node",
            "config-node-max",
            "create-and-configure",
            "create-nodes",
            "delete-items",
            "delete-nodes",
            "instant-nodes",
            "item-ids",
            "manage-subscriptions",
            "meta-data",
            "modify-affiliations",
            "persistent-items",
            "publish",
            "publish-options",
            "purge-nodes",
            "retract-items",
            "retrieve-affiliations",
            "retrieve-default",
            "retrieve-items",
            "retrieve-subscriptions",
            "subscribe",
        )
    ),
]


class PubSubService(ComponentService):
    features = FEATURES

    def __init__(self, host, options):
        super().__init__(host, options)
        self.pubsub = host.parent.extensions["pubsub"]
        self.options = self.pubsub.options
        self.identities = [("pubsub", "service", self.options.name)]
        self.service = host.domain
        self.lock = KeyedLocks()  # per node: read-modify-write of its configuration

    async def start(self) -> None:
        self.store = self.host.storage.pubsub
        self.rosters = self.host.storage.rosters

    @iq_handler("set", NS_PUBSUB, "pubsub", to=("host",))
    async def pubsub_set(self, iq):
        actions, names = pubsub.actions(iq)
        if names and names[0] == "publish" and set(names[1:]) <= {"publish-options"} and len(names) <= 2:
            return await self._publish(iq, actions[0], actions[1] if len(actions) == 2 else None)
        if names and names[0] == "create" and set(names[1:]) <= {"configure"} and len(names) <= 2:
            return await self._create(iq, actions[0], actions[1] if len(actions) == 2 else None)
        if names in (["subscribe"], ["subscribe", "options"]):
            return await self._subscribe(iq, actions[0])
        if names in (["retract"], ["unsubscribe"]):
            return await getattr(self, f"_{names[0]}")(iq, actions[0])
        raise pubsub.unsupported(names)

    @iq_handler("get", NS_PUBSUB, "pubsub", to=("host",))
    async def pubsub_get(self, iq):
        actions, names = pubsub.actions(iq)
        if names == ["items"]:
            return await self._items(iq, actions[0])
        if names == ["subscriptions"]:
            return await self._own_subscriptions(iq, actions[0])
        if names == ["affiliations"]:
            return await self._own_affiliations(iq, actions[0])
        raise pubsub.unsupported(names)

    @iq_handler("get", NS_PUBSUB_OWNER, "pubsub", to=("host",))
    async def owner_get(self, iq):
        actions, names = pubsub.actions(iq)
        if names == ["default"]:
            answer = make_element(OWNER)
            sub_element(answer, f"{{{NS_PUBSUB_OWNER}}}default").append(self._form(self._new_config()))
            return answer
        if names not in (["configure"], ["subscriptions"], ["affiliations"]):
            raise pubsub.unsupported(names)
        node = pubsub.node_of(actions[0])
        config = await self._owned_node(node, iq.from_)
        if names == ["affiliations"]:
            return affiliations.listing(node, config.get("affiliations", {}))
        answer = make_element(OWNER)
        if names == ["configure"]:
            sub_element(answer, f"{{{NS_PUBSUB_OWNER}}}configure", {"node": node}).append(self._form(config))
        else:
            listed = sub_element(answer, f"{{{NS_PUBSUB_OWNER}}}subscriptions", {"node": node})
            for jid in config.get("subscribers", []):
                sub_element(listed, f"{{{NS_PUBSUB_OWNER}}}subscription", {"jid": jid, "subscription": "subscribed"})
        return answer

    @iq_handler("set", NS_PUBSUB_OWNER, "pubsub", to=("host",))
    async def owner_set(self, iq):
        actions, names = pubsub.actions(iq)
        if names not in (["configure"], ["delete"], ["purge"], ["subscriptions"], ["affiliations"]):
            raise pubsub.unsupported(names)
        return await getattr(self, f"_owner_{names[0]}")(iq, pubsub.node_of(actions[0]), actions[0])

    # ------------------------------------------------------------- owner use cases

    async def _create(self, iq, create, configure):
        if not self._may_create(iq.from_):
            raise Forbidden(text="you may not create nodes on this service")
        node = create.get("node") or f"{time_ordered_id()}-{secrets.token_hex(4)}"  # an instant node
        options = {}
        form = forms.find(configure) if configure is not None else None
        if form is not None and form.get("type") != "cancel":
            options = nodes.read_options(forms.parse(form, form_type=nodes.NODE_CONFIG), self.options.max_items)
        async with self.lock(node):
            if await self.store.get_node(self.service, node) is not None:
                raise Conflict(text="the node exists")
            known = {key: value for key, value in options.items() if value is not None}
            await self._new_node(node, iq.from_, known)
        if create.get("node"):
            return None
        answer = make_element(PUBSUB)
        sub_element(answer, f"{{{NS_PUBSUB}}}create", {"node": node})
        return answer

    async def _new_node(self, node: str, creator: JID, options: dict) -> dict:
        """Store a new node owned by `creator` (the caller holds the node's lock)."""
        names = await self.store.list_nodes(self.service)
        if len(names) >= self.options.max_nodes:
            self.pubsub.limit_reached("max_nodes")
            raise NotAllowed(text=f"the service holds {len(names)} nodes, the most it may hold")
        created = 0
        for name in names:
            config = await self.store.get_node(self.service, name)
            created += config is not None and config.get("creator") == str(creator.bare)
        if created >= self.options.max_nodes_per_user:
            self.pubsub.limit_reached("max_nodes_per_user")
            raise NotAllowed(text=f"you created {created} nodes, the most an account may create here")
        config = nodes.configure(self._new_config(), options)
        config["creator"] = str(creator.bare)  # counted against max_nodes_per_user
        config["affiliations"] = {str(creator.bare): "owner"}
        await self.store.set_node(self.service, node, config)
        return config

    async def _owner_configure(self, iq, node: str, configure):
        options = nodes.submitted_config(configure, self.options.max_items)
        if options is None:
            return None
        async with self.lock(node):
            config = nodes.configure(await self._owned_node(node, iq.from_), options)
            await self.store.set_node(self.service, node, config)
            await nodes.drop_items(self.store, self.service, node, nodes.kept_items(config, self.options.max_items))
        return None

    async def _owner_delete(self, iq, node: str, delete):
        async with self.lock(node):
            config = await self._owned_node(node, iq.from_)
            await self.store.delete_node(self.service, node)
        await self._notify_deleted(node, config)
        return None

    async def _notify_deleted(self, node: str, config: dict) -> None:
        if config.get("notify_delete", True):
            await self._notify(node, config, make_element(f"{{{NS_PUBSUB_EVENT}}}delete", {"node": node}))

    async def _owner_purge(self, iq, node: str, purge):
        async with self.lock(node):
            config = await self._owned_node(node, iq.from_)
            await nodes.drop_items(self.store, self.service, node)
        if config.get("notify_retract", True):
            await self._notify(node, config, make_element(f"{{{NS_PUBSUB_EVENT}}}purge", {"node": node}))
        return None

    async def _owner_subscriptions(self, iq, node: str, request):
        """Section 8.8.2: an owner cancels subscriptions (state none). It does not subscribe
        others: they would get its notifications unasked, from the service."""
        changes = []
        for child in request.iterchildren(f"{{{NS_PUBSUB_OWNER}}}subscription"):
            if child.get("subscription") not in ("subscribed", "none"):
                raise NotAcceptable(text="the subscription must be subscribed or none")
            changes.append((pubsub.jid_of(child.get("jid")), child.get("subscription")))
        async with self.lock(node):
            config = await self._owned_node(node, iq.from_)
            subscribers = config.setdefault("subscribers", [])
            for jid, state in changes:
                if state == "none" and str(jid) in subscribers:
                    subscribers.remove(str(jid))
                elif state == "subscribed" and str(jid) not in subscribers:
                    raise NotAllowed(text="an entity subscribes itself")
            await self.store.set_node(self.service, node, config)
        return None

    async def _owner_affiliations(self, iq, node: str, request):
        changes = affiliations.read_changes(request, affiliations.AFFILIATIONS)
        async with self.lock(node):
            config = await self._owned_node(node, iq.from_)
            config["affiliations"] = affiliations.changed(config, changes)
            if "owner" not in config["affiliations"].values():
                raise NotAcceptable(text="a node keeps at least one owner")
            await self.store.set_node(self.service, node, config)
        return None

    # ------------------------------------------------------------- publisher use cases

    async def _publish(self, iq, publish, publish_options):
        node = pubsub.node_of(publish)
        items = publish.findall(ITEM)
        if len(items) > 1:
            raise pubsub_error(BadRequest, "invalid-payload")
        payloads = [child for child in items[0] if isinstance(child.tag, str)] if items else []
        if len(payloads) > 1:
            raise pubsub_error(BadRequest, "invalid-payload")
        if payloads and len(to_storage(payloads[0])) > self.options.max_item_bytes:
            self.pubsub.limit_reached("max_item_bytes")
            raise pubsub_error(NotAcceptable, "payload-too-big")
        preconditions = nodes.form_options(publish_options, nodes.PUBLISH_OPTIONS, self.options.max_items)
        item_id = pubsub.item_id_of(items[0].get("id") if items else None)
        async with self.lock(node):
            config = await self.store.get_node(self.service, node)
            if config is None:  # auto-create (section 7.1.4)
                if not self._may_create(iq.from_):
                    raise ItemNotFound()
                if any(value is None for value in (preconditions or {}).values()):
                    raise pubsub_error(Conflict, "precondition-not-met")
                config = await self._new_node(node, iq.from_, preconditions or {})
            elif preconditions:
                nodes.check_preconditions(config, preconditions, self.options.max_items)
            if affiliation_of(config, iq.from_) not in PUBLISHERS:
                raise Forbidden(text="only the node's publishers and owners publish")
            _check_item(config, items, payloads)
            if items and config.get("persist_items", True):
                item = PubSubItem(
                    item_id, to_storage(payloads[0]) if payloads else b"", str(iq.from_.bare), time.time()
                )
                await self.store.publish(self.service, node, item, nodes.max_items(config, self.options.max_items))
        if config.get("deliver_notifications", True):
            event = pubsub.items_event(node)
            if items:
                item = sub_element(event, f"{{{NS_PUBSUB_EVENT}}}item", {"id": item_id})
                if payloads and config.get("deliver_payloads", True):
                    item.append(copy.deepcopy(payloads[0]))
            await self._notify(node, config, event)
        answer = make_element(PUBSUB)
        published = sub_element(answer, f"{{{NS_PUBSUB}}}publish", {"node": node})
        if items:
            sub_element(published, ITEM, {"id": item_id})
        return answer

    async def _retract(self, iq, retract):
        node = pubsub.node_of(retract)
        item = retract.find(ITEM)
        if item is None or not item.get("id"):
            raise pubsub_error(BadRequest, "item-required")
        async with self.lock(node):
            config = await self._node(node)
            if affiliation_of(config, iq.from_) not in ("owner", "publisher"):
                raise Forbidden(text="only the node's publishers and owners retract items")
            if not await self.store.retract(self.service, node, item.get("id")):
                raise ItemNotFound()
        notify = retract.get("notify")
        if config.get("notify_retract", True) if notify is None else notify in forms.TRUE:
            retracted = make_element(f"{{{NS_PUBSUB_EVENT}}}retract", {"id": item.get("id")})
            await self._notify(node, config, pubsub.items_event(node, retracted))
        return None

    # ------------------------------------------------------------- subscriber use cases

    async def _subscribe(self, iq, request):
        node = pubsub.node_of(request)
        subscriber = pubsub.subscriber_of(iq, request)
        async with self.lock(node):
            config = await self._readable_node(node, iq.from_)
            subscribers = config.setdefault("subscribers", [])
            if str(subscriber) not in subscribers:
                self._check_subscribers(subscribers)
                subscribers.append(str(subscriber))
                await self.store.set_node(self.service, node, config)
        if config.get("send_last_published_item") in ("on_sub", "on_sub_and_presence"):
            self.services.tasks.spawn(self._send_last_item(node, config, subscriber))
        return pubsub.subscribed_answer(node, subscriber)

    async def _unsubscribe(self, iq, request):
        node = pubsub.node_of(request)
        subscriber = pubsub.subscriber_of(iq, request)
        async with self.lock(node):
            config = await self._node(node)
            pubsub.unsubscribe(config, subscriber)
            await self.store.set_node(self.service, node, config)
        return None

    async def _items(self, iq, request):
        node = pubsub.node_of(request)
        await self._readable_node(node, iq.from_)
        ids, limit = pubsub.items_wanted(request)
        return pubsub.items_answer(node, await self.store.get_items(self.service, node, ids, limit))

    async def _own_subscriptions(self, iq, request):
        """Section 5.6: the requester's subscriptions (on one node, or on all)."""
        return pubsub.subscriptions_answer(iq.from_, request.get("node"), await self._nodes(request.get("node")))

    async def _own_affiliations(self, iq, request):
        """Section 5.7: the requester's affiliations (on one node, or on all)."""
        answer = make_element(PUBSUB)
        listed = sub_element(answer, f"{{{NS_PUBSUB}}}affiliations", {"node": request.get("node")})
        for node, config in await self._nodes(request.get("node")):
            affiliation = affiliation_of(config, iq.from_)
            if affiliation != "none":
                sub_element(listed, f"{{{NS_PUBSUB}}}affiliation", {"node": node, "affiliation": affiliation})
        return answer

    async def forget(self, jid: JID) -> None:
        """An account is gone: so are its subscriptions and affiliations, and then the
        nodes it was the last owner of."""
        orphans = []
        for node in await self.store.list_nodes(self.service):
            async with self.lock(node):
                config = await self.store.get_node(self.service, node)
                if config is None:
                    continue
                subscribers = [s for s in config.get("subscribers", []) if JID.parse(s).bare != jid.bare]
                affiliated = affiliations.changed(config, {str(jid.bare): "none"})
                if subscribers == config.get("subscribers", []) and affiliated == config.get("affiliations", {}):
                    continue
                config.update(subscribers=subscribers, affiliations=affiliated)
                await self.store.set_node(self.service, node, config)
                if "owner" not in affiliated.values():
                    orphans.append(node)
        for node in orphans:
            async with self.lock(node):
                config = await self.store.get_node(self.service, node)
                if config is None or "owner" in config.get("affiliations", {}).values():
                    continue
                await self.store.delete_node(self.service, node)
            await self._notify_deleted(node, config)

    # ------------------------------------------------------------- disco of nodes

    @iq_handler("get", NS_DISCO_INFO, "query", to=("host",))
    async def node_info(self, iq):
        node = iq.element[0].get("node")
        config = await self.store.get_node(self.service, node) if node else None
        if config is None:
            return PASS  # the service itself (disco.py), or no such node
        owners = tuple(
            jid for jid, affiliation in sorted(config.get("affiliations", {}).items()) if affiliation == "owner"
        )
        meta = nodes.meta_data(config, owners, "open")
        return info_element([("pubsub", "leaf", None)], [NS_PUBSUB], [meta], node=node)

    @iq_handler("get", NS_DISCO_ITEMS, "query", to=("host",))
    async def node_items(self, iq):
        """Section 5.2: the nodes; section 5.5: the item ids of a node one may read."""
        node = iq.element[0].get("node")
        answer = make_element(f"{{{NS_DISCO_ITEMS}}}query", {"node": node})
        if node:
            await self._readable_node(node, iq.from_)
            for stored in await self.store.get_items(self.service, node):
                sub_element(answer, f"{{{NS_DISCO_ITEMS}}}item", {"jid": self.service, "name": stored.id})
            return answer
        for name, config in await self._nodes(None):
            sub_element(
                answer,
                f"{{{NS_DISCO_ITEMS}}}item",
                {"jid": self.service, "node": name, "name": config.get("title") or None},
            )
        return answer

    # ------------------------------------------------------------- access

    def _may_create(self, jid: JID) -> bool:
        parent = self.host.parent
        if self.options.node_creation == "admins":
            return parent.is_admin(jid)
        if self.options.node_creation == "local":
            return jid.domain == parent.domain and jid.local is not None
        return jid.local is not None

    async def _node(self, node: str) -> dict:
        config = await self.store.get_node(self.service, node)
        if config is None:
            raise ItemNotFound()
        return config

    async def _nodes(self, node: str | None) -> list[tuple[str, dict]]:
        """One node (ItemNotFound if missing) or every node, with their configurations."""
        if node:
            return [(node, await self._node(node))]
        found = []
        for name in await self.store.list_nodes(self.service):
            config = await self.store.get_node(self.service, name)
            if config is not None:
                found.append((name, config))
        return found

    async def _owned_node(self, node: str, requester: JID) -> dict:
        config = await self._node(node)
        if affiliation_of(config, requester) != "owner":
            raise Forbidden(text="only the node's owners manage it")
        return config

    async def _readable_node(self, node: str, requester: JID) -> dict:
        config = await self._node(node)
        error = await self._access_error(config, requester)
        if error is not None:
            raise error
        return config

    async def _access_error(self, config: dict, requester: JID) -> StanzaError | None:
        """XEP-0060 section 4.5 access models; presence and roster look at the owners' rosters."""
        affiliation = affiliation_of(config, requester)
        if affiliation == "outcast":
            return Forbidden(text="you are banned from this node")
        if affiliation in WHITELISTED:
            return None
        model = config.get("access_model", "open")
        if model == "open":
            return None
        if model == "whitelist":
            return pubsub.access_denied(model)
        owners = [jid for jid, value in config.get("affiliations", {}).items() if value == "owner"]
        for owner in owners:
            item = await self.rosters.get_item(owner, str(requester.bare))
            if item is None:
                continue
            if model == "presence" and item.has_from:
                return None
            if model == "roster" and pubsub.in_allowed_group(config, item.groups):
                return None
        return pubsub.access_denied(model)

    def _check_subscribers(self, subscribers: list[str]) -> None:
        if len(subscribers) >= self.options.max_subscribers:
            self.pubsub.limit_reached("max_subscribers")
            raise NotAllowed(text=f"this node has {len(subscribers)} subscriptions, the most it may have")

    # ------------------------------------------------------------- notifications

    async def _notify(self, node: str, config: dict, event_child) -> None:
        for subscriber in config.get("subscribers", []):
            jid = JID.parse(subscriber)
            if await self._access_error(config, jid) is None:  # access lost, so is the subscription
                await self._send_event(jid, config, copy.deepcopy(event_child))

    async def _send_event(self, to: JID, config: dict, event_child, when: float | None = None) -> None:
        await self.host.send(pubsub.event_message(self.service, to, config, event_child, when))

    async def _send_last_item(self, node: str, config: dict, to: JID) -> None:
        if not config.get("deliver_notifications", True):
            return
        last = await self.store.get_items(self.service, node, max_items=1)
        if last:
            await self._send_event(to, config, pubsub.stored_item_event(node, config, last[0]), when=last[0].when)

    # ------------------------------------------------------------- configuration

    def _new_config(self) -> dict:
        return nodes.new_config(DEFAULTS)

    def _form(self, config: dict) -> etree._Element:
        return nodes.config_form(config, self.options.max_items)


def _check_item(config: dict, items: list, payloads: list) -> None:
    """Section 7.1.3.6: what a publish request must carry for the node's event type."""
    persistent = config.get("persist_items", True)
    with_payloads = config.get("deliver_payloads", True)
    if not persistent and not with_payloads:
        if items:
            raise pubsub_error(BadRequest, "item-forbidden")
        return
    if not items:
        raise pubsub_error(BadRequest, "item-required")
    if with_payloads and not payloads:
        raise pubsub_error(BadRequest, "payload-required")
