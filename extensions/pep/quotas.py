"""The limits of an account's PEP service (XEP-0163), each with the error XEP-0060 names
and a count in xmppd_limit_reached_total: bytes of one item's payload (max_item_bytes,
payload-too-big), nodes of the account (max_nodes, max-nodes-exceeded),
explicit subscriptions of a node (max_subscribers) and bytes of all the account's stored
payloads (max_bytes_per_account, policy-violation). Items per node (max_items) are
bounded by the node configuration (xmppd/pubsub/nodes.py).

The stored bytes of an account are read from the store once, when it becomes active, and
then kept per node in memory for the most recently active accounts (ACCOUNTS_COUNTED),
so that a publish does not read all the account's items again.
"""

from __future__ import annotations

import collections

from xmppd.protocol.errors import NotAcceptable, NotAllowed, PolicyViolation
from xmppd.protocol.jid import JID
from xmppd.pubsub import pubsub_error

ACCOUNTS_COUNTED = 1000  # accounts whose stored bytes per node are kept in memory


class Quotas:
    """The checks of the limits above, for the pep extension's options; the callers hold
    the account's lock where a check and the write it guards must not interleave."""

    def __init__(self, pep, store):
        self.pep = pep  # the extension: its options, and where limits are counted
        self.options = pep.options
        self.store = store
        # Recently active accounts -> node -> bytes of its stored payloads.
        self.stored_bytes: collections.OrderedDict[str, dict[str, int]] = collections.OrderedDict()

    def check_payload(self, stored: bytes) -> None:
        if len(stored) > self.options.max_item_bytes:
            raise pubsub_error(
                NotAcceptable,
                "payload-too-big",
                f"an item's payload is at most "
                f"{self.options.max_item_bytes} bytes ({self.pep.limit_reached('max_item_bytes')})",
            )

    async def check_nodes(self, owner: JID) -> None:
        if len(await self.store.list_nodes(str(owner))) >= self.options.max_nodes:
            raise pubsub_error(
                NotAllowed,
                "max-nodes-exceeded",
                f"an account has at most {self.options.max_nodes} nodes ({self.pep.limit_reached('max_nodes')})",
            )

    def check_subscribers(self, subscribers: list[str]) -> None:
        if len(subscribers) >= self.options.max_subscribers:
            raise NotAllowed(
                text=f"a node has at most {self.options.max_subscribers} subscribers "
                f"({self.pep.limit_reached('max_subscribers')})"
            )

    async def bytes_after_publish(
        self, counted: dict[str, int], owner: JID, node: str, item_id: str, size: int, keep: int
    ) -> int:
        """The bytes `node` will hold once the item is in (replacing its namesake, the
        oldest beyond `keep` dropped); PolicyViolation when the account (`counted`)
        would hold more than max_bytes_per_account. The caller holds the account's lock."""
        others = sum(counted.values()) - counted.get(node, 0)
        kept = [item for item in await self.store.get_items(str(owner), node) if item.id != item_id][: keep - 1]
        node_bytes = size + sum(len(item.payload) for item in kept)
        if others + node_bytes > self.options.max_bytes_per_account:
            raise PolicyViolation(
                text=f"an account stores at most {self.options.max_bytes_per_account} bytes of "
                f"items ({self.pep.limit_reached('max_bytes_per_account')}); retract some "
                "first"
            )
        return node_bytes

    async def counted(self, owner: JID) -> dict[str, int]:
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

    async def recount(self, owner: JID, node: str) -> None:
        """Items of `node` went away: count it again if the account is counted."""
        counted = self.stored_bytes.get(str(owner))
        if counted is not None:
            counted[node] = await self._node_bytes(owner, node)

    def forget_node(self, owner: JID, node: str) -> None:
        self.stored_bytes.get(str(owner), {}).pop(node, None)

    def forget_account(self, owner: JID) -> None:
        self.stored_bytes.pop(str(owner), None)
