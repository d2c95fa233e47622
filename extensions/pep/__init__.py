"""XEP-0163 Personal Eventing Protocol: every account a publish-subscribe service, over
the subset of XEP-0060 it needs, with XEP-0223 publish options as preconditions.

The service of an account is its bare JID. Nodes are created on first publish (or with
<create/>), configured by their owner (access models open, presence, roster and
whitelist), and kept in the PubSubStore. Notifications go, from the owner's bare JID,
to the owner's resources and to the resources of contacts with a presence subscription
that the access model admits and whose XEP-0115 caps carry '<node>+notify', and to
explicit subscribers (an open node lets anyone subscribe: OMEMO device lists). The
account's bare JID answers disco#info with the pubsub/pep identity and the pubsub
features OMEMO clients look for.

This extension holds the options and loads the service's parts, each a small extension
of this package on the same host (as muc/ does), finding the others in
`host.extensions`:

    service.py        the accounts' nodes: publish, retract, items, delete (XEP-0163, XEP-0223)
    notifications.py  who is notified, and last published items    (XEP-0163 section 4)
    requests.py       publisher and subscriber requests            (XEP-0060 sections 5-7)
    owner.py          pubsub#owner requests                        (XEP-0060 section 8)
    interests.py      '+notify' interests, from caps               (XEP-0115, XEP-0163 4.2)
    discovery.py      disco#info and disco#items of nodes          (XEP-0030, XEP-0163 6.2)

and, beside them, modules that are not extensions: access.py (the access models,
XEP-0060 section 4.5), quotas.py (the limits of an account), caps.py (reading XEP-0115
caps), events.py (what it fires for other extensions), and what it shares with the
pubsub service in xmppd/pubsub/ (requests, node configuration, affiliations).

Other extensions publish and read through `publish`, `retract`, `items` and `delete`,
and hook pep-item-published, pep-item-retracted and pep-node-deleted (events.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from xmppd.extension import Extension
from xmppd.protocol.jid import JID
from xmppd.pubsub import NS_PUBSUB
from xmppd.storage.interfaces import PubSubItem

PARTS = ("pep.notifications", "pep.service", "pep.requests", "pep.owner", "pep.interests", "pep.discovery")

# XEP-0060 section 10 features of the account's virtual service (XEP-0163 section 6.1).
PUBSUB_FEATURES = [
    f"{NS_PUBSUB}#{name}"
    for name in (
        "access-open",
        "access-presence",
        "access-roster",
        "access-whitelist",
        "auto-create",
        "auto-subscribe",
        "config-node",
        "config-node-max",
        "create-and-configure",
        "create-nodes",
        "delete-items",
        "delete-nodes",
        "filtered-notifications",
        "item-ids",
        "last-published",
        "meta-data",
        "modify-affiliations",
        "persistent-items",
        "presence-notifications",
        "presence-subscribe",
        "publish",
        "publish-options",
        "purge-nodes",
        "retract-items",
        "retrieve-default",
        "retrieve-items",
        "retrieve-subscriptions",
        "subscribe",
    )
]


class PersonalEventing(Extension):
    xeps = {60: "1.26.0", 115: "1.6.0", 163: "1.2.2", 223: "1.1.1"}
    depends = ["disco"]
    # COMPAT: Smack looks for them on the server's domain too (OMEMO for pubsub, XEP-0373
    # secret key backups for access-whitelist), as ejabberd lists them.
    features = account_features = [NS_PUBSUB, *PUBSUB_FEATURES]
    account_identities = [("pubsub", "pep", None)]

    @dataclass(frozen=True)
    class Options:
        max_items: int = 256  # what "max" means, and the most a node keeps
        max_item_bytes: int = 250_000  # serialized payload of one item (payload-too-big beyond)
        max_nodes: int = 250  # nodes per account
        max_bytes_per_account: int = 16 * 1024 * 1024  # stored payloads of all the account's nodes
        max_subscribers: int = 1000  # explicit subscriptions per node
        caps_cache_size: int = 1000  # verified XEP-0115 'ver' strings kept
        caps_timeout: float = 20.0  # seconds a client has to answer disco#info about its caps

        def validate(self, where):
            for name in (
                "max_items",
                "max_item_bytes",
                "max_nodes",
                "max_bytes_per_account",
                "max_subscribers",
                "caps_cache_size",
            ):
                where.check(name, getattr(self, name) > 0, "must be positive")
            where.check("caps_timeout", self.caps_timeout > 0, "must be positive")

    async def start(self) -> None:
        self.store = self.host.storage.pubsub  # the nodes, for those who read them directly
        for part in PARTS:
            await self.host.load(part)
        self.service = self.host.extensions["pep.service"]

    # ------------------------------------------------------------- API for other extensions: service.py's

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
        return await self.service.publish(
            owner, node, payload, item_id, preconditions=preconditions, defaults=defaults, publisher=publisher
        )

    async def retract(self, owner: JID, node: str, item_id: str, notify: bool | None = None) -> bool:
        return await self.service.retract(owner, node, item_id, notify)

    async def items(
        self, owner: JID, node: str, ids: list[str] | None = None, max_items: int | None = None
    ) -> list[PubSubItem]:
        return await self.service.items(owner, node, ids, max_items)

    async def delete(self, owner: JID, node: str) -> bool:
        return await self.service.delete(owner, node)
