"""XEP-0060 Publish-Subscribe: a pubsub service of its own on a component domain of each
user host (pubsub.<domain>), beside the per-account services of PEP (XEP-0163).

This extension, loaded on a user host, holds the options and creates the component; the
service itself is service.py, on the component:

    service.py       the service: nodes, items, subscriptions, notifications, owner use cases

Nodes, items, subscriptions and affiliations live in the PubSubStore (the service is its
domain); what the service shares with PEP is in xmppd/pubsub/ (the pubsub#node_config
form, publish options as preconditions, the owner's <affiliations/> requests), with the
service's own defaults: open access, items kept up to `max_items`, the last item sent on
subscription.

Decisions:

- **Who creates nodes** (`node_creation`): the users of the host by default ("local"),
  or "anyone" (other domains too) or "admins" (the host's admins). The creator is the
  node's owner. Publishing to a node that does not exist creates it (auto-create), for
  whoever may create nodes.
- **One subscription per JID** and node, always "subscribed" (no authorize access model,
  no subscription options), so no subid. An owner cancels subscriptions but subscribes no
  one: that would send the node's notifications, unasked and from the service, to anyone.
- **Nodes one creates** count against `max_nodes_per_user`, not those others made one an
  owner of (which would let them use up one's allowance).
- **Limits** (each counted in xmppd_limit_reached_total): nodes on the service (what
  bounds the requests that go through every node: one's subscriptions and affiliations,
  the service's disco#items, the count of one's nodes), nodes one account creates,
  subscriptions of a node, items a node keeps, bytes of an item's payload.
- **A deleted account** takes its subscriptions and affiliations with it, and the nodes
  it was the last owner of.

Hooks: user-deleted.
"""

from __future__ import annotations

from dataclasses import dataclass

from xmppd.extension import Extension, hook

NODE_CREATION = ("anyone", "local", "admins")


class PubSub(Extension):
    xeps = {60: "1.26.0"}
    depends = ["disco"]

    @dataclass(frozen=True)
    class Options:
        domain: str = "pubsub.{host}"  # {host} is the user host's domain
        name: str = "Publish-Subscribe"  # the service's disco identity name
        node_creation: str = "local"  # who creates nodes: anyone | local | admins
        max_nodes: int = 10_000  # nodes on the service
        max_nodes_per_user: int = 100  # nodes one account creates
        max_items: int = 256  # what "max" means, and the most a node keeps
        max_item_bytes: int = 250_000  # serialized payload of one item (payload-too-big beyond)
        max_subscribers: int = 1000  # subscriptions of one node

        def validate(self, where):
            where.component_domain("domain", self.domain)
            where.one_of("node_creation", self.node_creation, NODE_CREATION)
            for name in ("max_nodes", "max_nodes_per_user", "max_items", "max_item_bytes", "max_subscribers"):
                where.check(name, getattr(self, name) > 0, "must be positive")

    async def start(self) -> None:
        self.component = self.services.directory.add_component(
            self.options.domain.format(host=self.host.domain), parent=self.host
        )
        await self.component.load("disco")
        await self.component.load("ping")
        await self.component.load("pubsub.service")

    @hook("user-deleted")
    async def forget_user(self, jid) -> None:
        await self.component.extensions["pubsub.service"].forget(jid)
