"""XEP-0163 Personal Eventing Protocol: every account a publish-subscribe service, over
the subset of XEP-0060 it needs, with XEP-0223 publish options as preconditions.

The service of an account is its bare JID. Nodes are created on first publish (or with
<create/>), configured by their owner (access models open, presence, roster and
whitelist), and kept in the PubSubStore. Notifications go, from the owner's bare JID,
to the owner's resources and to the resources of contacts with a presence subscription
that the access model admits and whose XEP-0115 caps carry '<node>+notify' (caps.py),
and to explicit subscribers (an open node lets anyone subscribe: OMEMO device lists).
A resource that comes online, or whose caps show a new interest, gets the last item of
each node it is interested in. The account's bare JID answers disco#info with the
pubsub/pep identity and the pubsub features OMEMO clients look for, and disco#items
with the nodes the requester may see. The owner names the members of a whitelist node
with <affiliations/> (XEP-0060 8.9, xmppd/pubsub/affiliations.py).

Other extensions publish and read through `publish`, `retract`, `items` and `delete`.

Quotas per account (each counted in xmppd_limit_reached_total): nodes (max_nodes), items
per node (max_items), bytes of one payload (max_item_bytes) and bytes of all the stored
payloads (max_bytes_per_account, kept per node in memory for recently active accounts).
Only the account and the contacts it shares presence with learn that it exists: to
anyone else a node that does not exist is answered as a non-existent account is
(service-unavailable, RFC 6121 8.5.1), as disco.py does for the account itself.

Hooks: iq-get/iq-set self|bare pubsub and pubsub#owner, disco#info and disco#items with
a node on an account, presence/broadcast (caps of the user's own resources), user-deleted.
Fires: pep-item-published (ItemPublished), pep-item-retracted (ItemRetracted),
pep-node-deleted (NodeDeleted), all notifications.
"""
from __future__ import annotations

import asyncio
import collections
import copy
import time
from dataclasses import dataclass

from lxml import etree

from xmppd import forms, pubsub
from xmppd.caps import verification_string
from xmppd.extension import PASS, Extension, hook, iq_handler
from xmppd.extensions.disco import NS_DISCO_INFO, NS_DISCO_ITEMS, info_element
from xmppd.extensions.presence import HAS_FROM, HAS_TO, parse_priority
from xmppd.ids import time_ordered_id
from xmppd.locks import KeyedLocks
from xmppd.protocol.errors import (BadRequest, Conflict, FeatureNotImplemented, Forbidden, ItemNotFound,
                                   NotAcceptable, NotAllowed, PolicyViolation, ServiceUnavailable, StanzaError)
from xmppd.protocol.jid import JID
from xmppd.protocol.stanza import IQ, make_element, sub_element, to_storage
from xmppd.pubsub import (ITEM, NS_PUBSUB, NS_PUBSUB_EVENT, NS_PUBSUB_OWNER, OWNER, PUBSUB, affiliations, nodes,
                          pubsub_error)
from xmppd.storage.interfaces import PubSubItem, RosterItem

from .caps import CapsCache, caps_of, features_of, interests

ACCOUNTS_COUNTED = 1000                # accounts whose stored bytes per node are kept in memory

# XEP-0060 section 10 features of the account's virtual service (XEP-0163 section 8).
PUBSUB_FEATURES = [f"{NS_PUBSUB}#{name}" for name in (
    "access-open", "access-presence", "access-roster", "access-whitelist", "auto-create", "auto-subscribe",
    "config-node", "config-node-max", "create-and-configure", "create-nodes", "delete-items", "delete-nodes",
    "filtered-notifications", "item-ids", "last-published", "meta-data", "modify-affiliations", "persistent-items",
    "presence-notifications", "presence-subscribe", "publish", "publish-options", "purge-nodes",
    "retract-items", "retrieve-default", "retrieve-items", "retrieve-subscriptions", "subscribe")]


@dataclass(frozen=True)
class ItemPublished:
    owner: JID                     # the service: the account's bare JID
    node: str
    item_id: str
    payload: etree._Element        # the item's payload (do not change it)
    publisher: JID                 # who published it (the owner's resource, or the owner for the server)


@dataclass(frozen=True)
class ItemRetracted:
    owner: JID
    node: str
    item_id: str


@dataclass(frozen=True)
class NodeDeleted:
    owner: JID
    node: str


@dataclass(frozen=True)
class SessionInterest:
    """What a resource's caps told: its 'ver' and the nodes it wants notifications of."""
    ver: str | None
    nodes: frozenset[str]


class PersonalEventing(Extension):
    xeps = {60: "1.26.0", 115: "1.6.0", 163: "1.2.2", 223: "1.1.1"}
    depends = ["disco"]
    # COMPAT: Smack looks for them on the server's domain too (OMEMO for pubsub, XEP-0373
    # secret key backups for access-whitelist), as ejabberd lists them.
    features = account_features = [NS_PUBSUB, *PUBSUB_FEATURES]
    account_identities = [("pubsub", "pep", None)]

    @dataclass(frozen=True)
    class Options:
        max_items: int = 256               # what "max" means, and the most a node keeps
        max_item_bytes: int = 250_000      # serialized payload of one item (payload-too-big beyond)
        max_nodes: int = 250               # nodes per account
        max_bytes_per_account: int = 16 * 1024 * 1024   # stored payloads of all the account's nodes
        max_subscribers: int = 1000        # explicit subscriptions per node
        caps_cache_size: int = 1000        # verified XEP-0115 'ver' strings kept
        caps_timeout: float = 20.0         # seconds a client has to answer disco#info about its caps

        def validate(self, where):
            for name in ("max_items", "max_item_bytes", "max_nodes", "max_bytes_per_account", "max_subscribers",
                         "caps_cache_size"):
                where.check(name, getattr(self, name) > 0, "must be positive")
            where.check("caps_timeout", self.caps_timeout > 0, "must be positive")

    def __init__(self, host, options):
        super().__init__(host, options)
        self.lock = KeyedLocks()           # per service: read-modify-write of its nodes
        self.caps_lock = KeyedLocks()      # per full JID: caps updates in presence order
        self.caps = CapsCache(options.caps_cache_size)
        # Recently active accounts -> node -> bytes of its stored payloads.
        self.stored_bytes: collections.OrderedDict[str, dict[str, int]] = collections.OrderedDict()

    async def start(self) -> None:
        self.store = self.host.storage.pubsub
        self.rosters = self.host.storage.rosters

    # ------------------------------------------------------------- API for other extensions

    async def publish(self, owner: JID, node: str, payload: etree._Element, item_id: str | None = None, *,
                      preconditions: dict | None = None, defaults: dict | None = None,
                      publisher: JID | None = None) -> str:
        """Publish `payload` as item `item_id` (a new id when None) of the owner's
        `node`, creating it with `defaults` and `preconditions` when it does not exist,
        and notify. Returns the item id. Raises the XEP-0060 errors."""
        stored = to_storage(payload)
        if len(stored) > self.options.max_item_bytes:
            raise pubsub_error(NotAcceptable, "payload-too-big", f"an item's payload is at most "
                               f"{self.options.max_item_bytes} bytes ({self.limit_reached('max_item_bytes')})")
        item_id = item_id or time_ordered_id()
        if len(item_id) > 1023:
            raise BadRequest(text="the item id is too long")
        publisher = publisher or owner
        async with self.lock(str(owner)):
            config = await self.store.get_node(str(owner), node)
            if config is None:
                config = nodes.configure(nodes.new_config(defaults), preconditions or {})
                await self._create(owner, node, config, preconditions or {})
            elif preconditions:
                nodes.check_preconditions(config, preconditions, self.options.max_items)
            if config.get("persist_items", True):
                keep = nodes.max_items(config, self.options.max_items)
                counted = await self._counted(owner)
                node_bytes = await self._bytes_after_publish(counted, owner, node, item_id, len(stored), keep)
                await self.store.publish(str(owner), node, PubSubItem(item_id, stored, str(publisher), time.time()),
                                         keep)
                counted[node] = node_bytes
        await self.host.bus.notify("pep-item-published", ItemPublished(owner, node, item_id, payload, publisher))
        if config.get("deliver_notifications", True):
            item = make_element(f"{{{NS_PUBSUB_EVENT}}}item", {"id": item_id})
            if config.get("deliver_payloads", True):
                item.append(copy.deepcopy(payload))
            await self._notify(owner, node, config, pubsub.items_event(node, item))
        return item_id

    async def retract(self, owner: JID, node: str, item_id: str, notify: bool | None = None) -> bool:
        """Remove an item; False when there was no such node or item."""
        async with self.lock(str(owner)):
            config = await self.store.get_node(str(owner), node)
            if config is None or not await self.store.retract(str(owner), node, item_id):
                return False
            await self._recount(owner, node)
        await self.host.bus.notify("pep-item-retracted", ItemRetracted(owner, node, item_id))
        if config.get("notify_retract", True) if notify is None else notify:
            retracted = make_element(f"{{{NS_PUBSUB_EVENT}}}retract", {"id": item_id})
            await self._notify(owner, node, config, pubsub.items_event(node, retracted))
        return True

    async def items(self, owner: JID, node: str, ids: list[str] | None = None,
                    max_items: int | None = None) -> list[PubSubItem]:
        """Stored items, newest first (empty for an unknown node)."""
        return await self.store.get_items(str(owner), node, ids, max_items)

    async def delete(self, owner: JID, node: str) -> bool:
        async with self.lock(str(owner)):
            config = await self.store.get_node(str(owner), node)
            if config is None:
                return False
            recipients = await self._recipients(owner, node, config) if config.get("notify_delete", True) else []
            await self.store.delete_node(str(owner), node)
            self.stored_bytes.get(str(owner), {}).pop(node, None)
        await self.host.bus.notify("pep-node-deleted", NodeDeleted(owner, node))
        for to in recipients:
            await self._send_event(owner, to, config, make_element(f"{{{NS_PUBSUB_EVENT}}}delete", {"node": node}))
        return True

    async def _create(self, owner: JID, node: str, config: dict, options: dict) -> None:
        if any(value is None for value in options.values()):
            raise pubsub_error(Conflict, "precondition-not-met")      # an option we do not know
        if len(await self.store.list_nodes(str(owner))) >= self.options.max_nodes:
            raise pubsub_error(NotAllowed, "max-nodes-exceeded", f"an account has at most "
                               f"{self.options.max_nodes} nodes ({self.limit_reached('max_nodes')})")
        await self.store.set_node(str(owner), node, config)

    async def _bytes_after_publish(self, counted: dict[str, int], owner: JID, node: str, item_id: str, size: int,
                                   keep: int) -> int:
        """The bytes `node` will hold once the item is in (replacing its namesake, the
        oldest beyond `keep` dropped); PolicyViolation when the account (`counted`)
        would hold more than max_bytes_per_account. The caller holds the account's lock."""
        others = sum(counted.values()) - counted.get(node, 0)
        kept = [item for item in await self.store.get_items(str(owner), node) if item.id != item_id][:keep - 1]
        node_bytes = size + sum(len(item.payload) for item in kept)
        if others + node_bytes > self.options.max_bytes_per_account:
            raise PolicyViolation(text=f"an account stores at most {self.options.max_bytes_per_account} bytes of "
                                       f"items ({self.limit_reached('max_bytes_per_account')}); retract some first")
        return node_bytes

    async def _counted(self, owner: JID) -> dict[str, int]:
        """Bytes per node of the account's stored payloads, read once while it is active."""
        counted = self.stored_bytes.get(str(owner))
        if counted is None:
            counted = {node: await self._node_bytes(owner, node) for node in await self.store.list_nodes(str(owner))}
            self.stored_bytes[str(owner)] = counted
            if len(self.stored_bytes) > ACCOUNTS_COUNTED:
                self.stored_bytes.popitem(last=False)
        self.stored_bytes.move_to_end(str(owner))
        return counted

    async def _node_bytes(self, owner: JID, node: str) -> int:
        return sum(len(item.payload) for item in await self.store.get_items(str(owner), node))

    async def _recount(self, owner: JID, node: str) -> None:
        """Items of `node` went away: count it again if the account is counted."""
        counted = self.stored_bytes.get(str(owner))
        if counted is not None:
            counted[node] = await self._node_bytes(owner, node)


    # ------------------------------------------------------------- pubsub: publisher and subscriber

    @iq_handler("set", NS_PUBSUB, "pubsub", to=("self", "bare"))
    async def pubsub_set(self, iq):
        actions, names = pubsub.actions(iq)
        if names and names[0] == "publish" and set(names[1:]) <= {"publish-options"} and len(names) <= 2:
            return await self._publish_request(iq, actions[0], actions[1] if len(actions) == 2 else None)
        if names and names[0] == "create" and set(names[1:]) <= {"configure"} and len(names) <= 2:
            return await self._create_request(iq, actions[0], actions[1] if len(actions) == 2 else None)
        if len(names) == 1 and names[0] in ("retract", "subscribe", "unsubscribe"):
            return await getattr(self, f"_{names[0]}_request")(iq, actions[0])
        raise pubsub.unsupported(names)

    @iq_handler("get", NS_PUBSUB, "pubsub", to=("self", "bare"))
    async def pubsub_get(self, iq):
        actions, names = pubsub.actions(iq)
        if names == ["items"]:
            return await self._items_request(iq, actions[0])
        if names == ["subscriptions"]:
            return await self._subscriptions_request(iq, actions[0])
        raise pubsub.unsupported(names)

    async def _publish_request(self, iq, publish, publish_options):
        owner = await self._service(iq, owner_only=True)
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
        item_id = await self.publish(owner, node, payloads[0], items[0].get("id"), preconditions=preconditions,
                                     publisher=iq.from_)
        answer = make_element(PUBSUB)
        sub_element(sub_element(answer, f"{{{NS_PUBSUB}}}publish", {"node": node}), ITEM, {"id": item_id})
        return answer

    async def _create_request(self, iq, create, configure):
        owner = await self._service(iq, owner_only=True)
        node = create.get("node")
        if not node:
            raise pubsub_error(NotAcceptable, "nodeid-required")     # no instant nodes
        options = nodes.form_options(configure, nodes.NODE_CONFIG, self.options.max_items) or {}
        async with self.lock(str(owner)):
            if await self.store.get_node(str(owner), node) is not None:
                raise Conflict(text="the node exists")
            known = {key: value for key, value in options.items() if value is not None}
            await self._create(owner, node, nodes.configure(nodes.new_config(), known), known)
        return None

    async def _retract_request(self, iq, retract):
        owner = await self._service(iq, owner_only=True)
        node = pubsub.node_of(retract)
        item = retract.find(ITEM)
        if item is None or not item.get("id"):
            raise pubsub_error(BadRequest, "item-required")
        notify = retract.get("notify")
        if not await self.retract(owner, node, item.get("id"),
                                  None if notify is None else notify in forms.TRUE):
            raise ItemNotFound()
        return None

    async def _items_request(self, iq, request):
        owner = await self._service(iq)
        node = pubsub.node_of(request)
        config = await self._readable_node(owner, node, iq.from_)
        ids, limit = pubsub.items_wanted(request)
        found = []
        if config.get("persist_items", True):
            found = await self.store.get_items(str(owner), node, ids, limit)
        return pubsub.items_answer(node, found)

    async def _subscribe_request(self, iq, request):
        owner = await self._service(iq)
        node = pubsub.node_of(request)
        subscriber = pubsub.subscriber_of(iq, request)
        async with self.lock(str(owner)):
            config = await self._readable_node(owner, node, iq.from_)
            subscribers = config.setdefault("subscribers", [])
            if str(subscriber) not in subscribers:
                if len(subscribers) >= self.options.max_subscribers:
                    raise NotAllowed(text=f"a node has at most {self.options.max_subscribers} subscribers "
                                          f"({self.limit_reached('max_subscribers')})")
                subscribers.append(str(subscriber))
                await self.store.set_node(str(owner), node, config)
        if config.get("send_last_published_item") in ("on_sub", "on_sub_and_presence"):
            self.server.spawn(self._send_last_item(owner, node, config, subscriber))
        return pubsub.subscribed_answer(node, subscriber)

    async def _unsubscribe_request(self, iq, request):
        owner = await self._service(iq)
        node = pubsub.node_of(request)
        subscriber = pubsub.subscriber_of(iq, request)
        async with self.lock(str(owner)):
            config = await self.store.get_node(str(owner), node)
            if config is None:
                raise await self._no_such_node(owner, iq.from_)
            pubsub.unsubscribe(config, subscriber)
            await self.store.set_node(str(owner), node, config)
        return None

    async def _subscriptions_request(self, iq, request):
        owner = await self._service(iq)
        wanted = [request.get("node")] if request.get("node") else await self.store.list_nodes(str(owner))
        configs = []
        for node in wanted:
            config = await self.store.get_node(str(owner), node)
            if config is None:
                if request.get("node"):
                    raise await self._no_such_node(owner, iq.from_)
                continue
            configs.append((node, config))
        return pubsub.subscriptions_answer(iq.from_, request.get("node"), configs)

    # ------------------------------------------------------------- pubsub#owner

    @iq_handler("get", NS_PUBSUB_OWNER, "pubsub", to=("self", "bare"))
    async def owner_get(self, iq):
        owner = await self._service(iq, owner_only=True)
        action = self._owner_action(iq, ("configure", "default", "affiliations"))
        answer = make_element(OWNER)
        if etree.QName(action).localname == "default":
            form = nodes.config_form(nodes.new_config(), self.options.max_items)
            sub_element(answer, f"{{{NS_PUBSUB_OWNER}}}default").append(form)
            return answer
        node = pubsub.node_of(action)
        config = await self.store.get_node(str(owner), node)
        if config is None:
            raise ItemNotFound()
        if etree.QName(action).localname == "affiliations":
            return affiliations.listing(node, {str(owner): "owner", **config.get("affiliations", {})})
        form = nodes.config_form(config, self.options.max_items)
        sub_element(answer, f"{{{NS_PUBSUB_OWNER}}}configure", {"node": node}).append(form)
        return answer

    @iq_handler("set", NS_PUBSUB_OWNER, "pubsub", to=("self", "bare"))
    async def owner_set(self, iq):
        owner = await self._service(iq, owner_only=True)
        action = self._owner_action(iq, ("configure", "delete", "purge", "affiliations"))
        node = pubsub.node_of(action)
        name = etree.QName(action).localname
        if name == "delete":
            if not await self.delete(owner, node):
                raise ItemNotFound()
        elif name == "purge":
            await self._purge(owner, node)
        elif name == "affiliations":
            await self._set_affiliations(owner, node, affiliations.read_changes(action, ("member", "none")))
        else:
            await self._configure(owner, node, action)
        return None

    def _owner_action(self, iq, allowed: tuple[str, ...]):
        actions = [child for child in iq.element[0] if isinstance(child.tag, str)]
        if len(actions) != 1:
            raise BadRequest(text="one pubsub#owner action is expected")
        if etree.QName(actions[0]).localname not in allowed:
            raise pubsub_error(FeatureNotImplemented, "unsupported", feature=etree.QName(actions[0]).localname)
        return actions[0]

    async def _configure(self, owner: JID, node: str, configure) -> None:
        options = nodes.submitted_config(configure, self.options.max_items)
        if options is None:
            return
        async with self.lock(str(owner)):
            config = await self.store.get_node(str(owner), node)
            if config is None:
                raise ItemNotFound()
            config = nodes.configure(config, options)
            await self.store.set_node(str(owner), node, config)
            await nodes.drop_excess_items(self.store, str(owner), node, config, self.options.max_items)
            await self._recount(owner, node)

    async def _set_affiliations(self, owner: JID, node: str, changes: dict[str, str]) -> None:
        """The whitelist of a node (XEP-0060 8.9): its members."""
        async with self.lock(str(owner)):
            config = await self.store.get_node(str(owner), node)
            if config is None:
                raise ItemNotFound()
            config["affiliations"] = affiliations.changed(config, changes)
            await self.store.set_node(str(owner), node, config)

    async def _purge(self, owner: JID, node: str) -> None:
        async with self.lock(str(owner)):
            config = await self.store.get_node(str(owner), node)
            if config is None:
                raise ItemNotFound()
            for stored in await self.store.get_items(str(owner), node):
                await self.store.retract(str(owner), node, stored.id)
            await self._recount(owner, node)
        await self._notify(owner, node, config, make_element(f"{{{NS_PUBSUB_EVENT}}}purge", {"node": node}))

    # ------------------------------------------------------------- access

    async def _service(self, iq, *, owner_only: bool = False) -> JID:
        """The service (account) an iq is for; only its owner may publish or configure."""
        owner = iq.to.bare
        if owner != iq.from_.bare:
            if owner_only:
                raise Forbidden(text="only the account owner publishes and configures its nodes")
            if not await self.host.user_exists(owner.local):
                raise ServiceUnavailable()
        return owner

    async def _readable_node(self, owner: JID, node: str, requester: JID) -> dict:
        config = await self.store.get_node(str(owner), node)
        if config is None:
            raise await self._no_such_node(owner, requester)
        item = None if requester.bare == owner else await self.rosters.get_item(str(owner), str(requester.bare))
        error = self._access_error(owner, config, requester, item)
        if error is not None:
            raise error
        return config

    async def _no_such_node(self, owner: JID, requester: JID) -> StanzaError:
        """XEP-0060's item-not-found for those who know that the account exists (itself and
        the contacts it shares presence with); for anyone else the answer of an account
        that does not exist (RFC 6121 8.5.1), so that nobody learns which accounts do."""
        if requester.bare != owner:
            item = await self.rosters.get_item(str(owner), str(requester.bare))
            if item is None or item.subscription not in HAS_FROM:
                return ServiceUnavailable()
        return ItemNotFound()

    @staticmethod
    def _access_error(owner: JID, config: dict, requester: JID, item: RosterItem | None) -> StanzaError | None:
        """XEP-0060 section 4.5 access models; `item` is the requester in the owner's roster."""
        if requester.bare == owner:
            return None
        model = config.get("access_model", "presence")
        if model == "open":
            return None
        if model == "presence":
            admitted = item is not None and item.subscription in HAS_FROM
        elif model == "roster":
            admitted = item is not None and pubsub.in_allowed_group(config, item.groups)
        else:
            admitted = affiliations.affiliation_of(config, requester) in affiliations.WHITELISTED
        return None if admitted else pubsub.access_denied(model)

    # ------------------------------------------------------------- notifications

    def _available(self, jid: JID) -> list:
        """The available resources of a local account (none for other domains)."""
        host = self.server.hosts.get(jid.domain)
        if host is None or host.is_component:
            return []
        return host.available_sessions(jid.local)

    def _wants(self, session, node: str) -> bool:
        interest = session.meta.get(self.name)
        return interest is not None and node in interest.nodes and session.priority >= 0

    async def _recipients(self, owner: JID, node: str, config: dict) -> list[JID]:
        """Who is notified about `node` (XEP-0163 section 4): addresses in order, once each."""
        targets: dict[JID, None] = {}
        for session in self._available(owner):
            if self._wants(session, node):
                targets[session.jid] = None
        _, roster = await self.rosters.get(str(owner))
        for contact, item in roster.items():
            if item.subscription in HAS_FROM and self._access_error(owner, config, JID.parse(contact), item) is None:
                for session in self._available(JID.parse(contact)):
                    if self._wants(session, node):
                        targets[session.jid] = None
        for subscriber in config.get("subscribers", []):
            jid = JID.parse(subscriber)
            if self._access_error(owner, config, jid, roster.get(str(jid.bare))) is not None:
                continue                        # XEP-0163 section 8: access lost, so is the subscription
            if jid.is_bare and self.server.hosts.get(jid.domain) is not None:
                for session in self._available(jid):
                    if session.priority >= 0:
                        targets[session.jid] = None
            else:
                targets[jid] = None
        return [jid for jid in targets if jid.bare == owner or not await self._is_blocked(owner, jid)]

    async def _is_blocked(self, owner: JID, jid: JID) -> bool:
        """XEP-0163 4.3.3: nothing goes to those the owner blocks (XEP-0191, when loaded)."""
        blocking = self.host.extensions.get("blocking")
        return blocking is not None and await blocking.is_blocked(owner, jid)

    async def _notify(self, owner: JID, node: str, config: dict, event_child) -> None:
        for to in await self._recipients(owner, node, config):
            await self._send_event(owner, to, config, copy.deepcopy(event_child))

    async def _send_event(self, owner: JID, to: JID, config: dict, event_child, when: float | None = None) -> None:
        await self.host.send(pubsub.event_message(str(owner), to, config, event_child, when))

    async def _send_last_item(self, owner: JID, node: str, config: dict, to: JID) -> None:
        if not config.get("deliver_notifications", True) or not config.get("persist_items", True):
            return
        last = await self.store.get_items(str(owner), node, max_items=1)
        if last:
            await self._send_event(owner, to, config, pubsub.stored_item_event(node, config, last[0]), when=last[0].when)

    # ------------------------------------------------------------- caps and presence

    @hook("presence/broadcast", priority=1)          # before presence.py, which handles it
    async def track_caps(self, stanza) -> bool:
        """A resource's presence: learn its interests, then send it the last items it
        did not know of (XEP-0163 section 4.3.2)."""
        session = stanza.origin
        if session is None:
            return False
        if stanza.type == "unavailable":
            session.meta.pop(self.name, None)
        elif stanza.type is None:
            self.server.spawn(self._update_interest(session, caps_of(stanza.element), not session.available,
                                                    parse_priority(stanza.element)))
        return False

    async def _update_interest(self, session, caps, initial: bool, priority: int) -> None:
        async with self.caps_lock(str(session.jid)):
            old = session.meta.get(self.name)
            if caps is None:
                interest = SessionInterest(None, frozenset())
            elif old is not None and old.ver == caps[1]:
                interest = old
            else:
                interest = SessionInterest(caps[1], interests(await self._features(session, caps)))
            if session.closed:
                return
            session.meta[self.name] = interest
            new = interest.nodes if initial or old is None else interest.nodes - old.nodes
            if priority >= 0 and new:
                await self._send_last_items(session, new)

    async def _features(self, session, caps) -> frozenset[str]:
        """The disco#info features behind a resource's caps, cached when verified."""
        node, ver, hash_name = caps
        cached = self.caps.get(ver) if hash_name else None
        if cached is not None:
            return cached
        iq = make_element(IQ, {"type": "get", "to": str(session.jid), "from": str(session.jid.bare)})
        sub_element(iq, f"{{{NS_DISCO_INFO}}}query", {"node": f"{node}#{ver}"})
        try:
            result = await self.host.request(iq, timeout=self.options.caps_timeout)
        except asyncio.TimeoutError:
            return frozenset()
        query = result.find(f"{{{NS_DISCO_INFO}}}query")
        if result.get("type") != "result" or query is None:
            return frozenset()
        features = features_of(query)
        if hash_name and verification_string(query, hash_name) == ver:
            self.caps.put(ver, features)
        return features

    async def _send_last_items(self, session, wanted: frozenset[str]) -> None:
        """The last item of each wanted node of the user and of the contacts whose
        presence the user receives, as far as their access models allow."""
        user = session.jid.bare
        _, roster = await self.rosters.get(str(user))
        owners = [user] + [JID.parse(contact) for contact, item in roster.items() if item.subscription in HAS_TO]
        for owner in owners:
            if self.server.hosts.get(owner.domain) is None or (owner != user and await self._is_blocked(owner, user)):
                continue
            present = sorted(set(await self.store.list_nodes(str(owner))) & wanted)
            item = None
            if present and owner != user:
                item = await self.rosters.get_item(str(owner), str(user))
                if item is None or item.subscription not in HAS_FROM:
                    continue
            for node in present:
                config = await self.store.get_node(str(owner), node)
                if (config is None or config.get("send_last_published_item") != "on_sub_and_presence"
                        or self._access_error(owner, config, session.jid, item) is not None):
                    continue
                if session.closed:
                    return
                await self._send_last_item(owner, node, config, session.jid)

    # ------------------------------------------------------------- disco of nodes

    @iq_handler("get", NS_DISCO_INFO, "query", to=("self", "bare"))
    async def node_info(self, iq):
        node = iq.element[0].get("node")
        if not node:
            return PASS                         # the account itself: disco.py answers
        owner = iq.to.bare
        config = await self._visible_node(owner, node, iq.from_)
        if config is None:
            return PASS                         # not a PEP node: another extension's, or none
        meta = nodes.meta_data(config, (str(owner),), "presence")
        return info_element([("pubsub", "leaf", None)], [NS_PUBSUB], [meta], node=node)

    @iq_handler("get", NS_DISCO_ITEMS, "query", to=("self", "bare"))
    async def node_items(self, iq):
        """XEP-0163 section 8.2: the nodes the requester may see; a node's item ids."""
        owner = iq.to.bare
        node = iq.element[0].get("node")
        answer = make_element(f"{{{NS_DISCO_ITEMS}}}query", {"node": node})
        if node:
            config = await self._visible_node(owner, node, iq.from_)
            if config is None:
                return PASS
            if config.get("persist_items", True):
                for stored in await self.store.get_items(str(owner), node):
                    sub_element(answer, f"{{{NS_DISCO_ITEMS}}}item", {"jid": str(owner), "name": stored.id})
            return answer
        item = None if owner == iq.from_.bare else await self.rosters.get_item(str(owner), str(iq.from_.bare))
        for name in await self.store.list_nodes(str(owner)):
            config = await self.store.get_node(str(owner), name)
            if config is not None and self._access_error(owner, config, iq.from_, item) is None:
                sub_element(answer, f"{{{NS_DISCO_ITEMS}}}item", {"jid": str(owner), "node": name})
        if not len(answer):
            return PASS                         # disco.py: an empty list, or the answer of no account
        return answer

    async def _visible_node(self, owner: JID, node: str, requester: JID) -> dict | None:
        """A node's configuration; None when there is no such node or the requester may
        not read it (disco.py then answers as for any unknown node of the account)."""
        config = await self.store.get_node(str(owner), node)
        if config is None:
            return None
        item = None if requester.bare == owner else await self.rosters.get_item(str(owner), str(requester.bare))
        if self._access_error(owner, config, requester, item) is not None:
            return None
        return config

    # ------------------------------------------------------------- account removal

    @hook("user-deleted")
    async def delete_nodes(self, jid: JID) -> None:
        async with self.lock(str(jid)):
            for node in await self.store.list_nodes(str(jid)):
                await self.store.delete_node(str(jid), node)
            self.stored_bytes.pop(str(jid), None)
