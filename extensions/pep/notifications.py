"""XEP-0163 section 4: the notifications of an account's nodes, from the account's bare
JID, and who receives them.

A node's notification (published, retracted, purged, deleted) goes to the owner's
available resources whose caps show interest in the node ('<node>+notify', caps.py), to
the resources, interested in the same way, of the contacts with a presence subscription
(from or both) that the access model admits (section 4.1), and to explicit subscribers
(XEP-0060 section 6.1: an open node lets anyone subscribe, as OMEMO device lists need),
while the access model still admits them (section 7.1). Nothing goes to those the owner
blocks (section 4.3.3, XEP-0191 when loaded).

The last published item goes to a new subscriber (XEP-0060 section 6.1.7), and to a
resource that comes online or whose caps show a new interest, for each node it wants of
its own account and of the contacts whose presence it receives (sections 4.3.3 and 4.3.4).

Other parts find this one as `host.extensions["pep.notifications"]`.
"""

from __future__ import annotations

import copy

from xmppd import pubsub
from xmppd.extension import Extension
from xmppd.host import BlockQuery
from xmppd.protocol.jid import JID

from .access import access_error
from .caps import wants


class PepNotifications(Extension):
    async def start(self) -> None:
        self.store = self.host.storage.pubsub
        self.rosters = self.host.storage.rosters

    def _available(self, jid: JID) -> list:
        """The available resources of a local account (none for other domains)."""
        host = self.services.directory.host(jid.domain)
        if host is None or host.is_component:
            return []
        return host.available_sessions(jid.local)

    async def recipients(self, owner: JID, node: str, config: dict) -> list[JID]:
        """Who is notified about `node` (XEP-0163 section 4): addresses in order, once each."""
        targets: dict[JID, None] = {}
        for session in self._available(owner):
            if wants(session, node):
                targets[session.jid] = None
        _, roster = await self.rosters.get(str(owner))
        for contact, item in roster.items():
            if item.has_from and access_error(owner, config, JID.parse(contact), item) is None:
                for session in self._available(JID.parse(contact)):
                    if wants(session, node):
                        targets[session.jid] = None
        for subscriber in config.get("subscribers", []):
            jid = JID.parse(subscriber)
            if access_error(owner, config, jid, roster.get(str(jid.bare))) is not None:
                continue  # XEP-0163 section 7.1: access lost, so is the subscription
            if jid.is_bare and self.services.directory.host(jid.domain) is not None:
                for session in self._available(jid):
                    if session.priority >= 0:
                        targets[session.jid] = None
            else:
                targets[jid] = None
        return [jid for jid in targets if jid.bare == owner or not await self._is_blocked(owner, jid)]

    async def _is_blocked(self, owner: JID, jid: JID) -> bool:
        """XEP-0163 4.3.3: nothing goes to those the owner blocks (XEP-0191, when loaded)."""
        return await self.host.bus.fire("is-blocked", BlockQuery(owner, jid))

    async def notify(self, owner: JID, node: str, config: dict, event_child) -> None:
        for to in await self.recipients(owner, node, config):
            await self.send_event(owner, to, config, copy.deepcopy(event_child))

    async def send_event(self, owner: JID, to: JID, config: dict, event_child, when: float | None = None) -> None:
        await self.host.send(pubsub.event_message(str(owner), to, config, event_child, when))

    async def send_last_item(self, owner: JID, node: str, config: dict, to: JID) -> None:
        if not config.get("deliver_notifications", True) or not config.get("persist_items", True):
            return
        last = await self.store.get_items(str(owner), node, max_items=1)
        if last:
            await self.send_event(owner, to, config, pubsub.stored_item_event(node, config, last[0]), when=last[0].when)

    async def send_last_items(self, session, wanted: frozenset[str]) -> None:
        """The last item of each wanted node of the user and of the contacts whose
        presence the user receives, as far as their access models allow."""
        user = session.jid.bare
        _, roster = await self.rosters.get(str(user))
        owners = [user] + [JID.parse(contact) for contact, item in roster.items() if item.has_to]
        for owner in owners:
            if self.services.directory.host(owner.domain) is None or (
                owner != user and await self._is_blocked(owner, user)
            ):
                continue
            present = sorted(set(await self.store.list_nodes(str(owner))) & wanted)
            item = None
            if present and owner != user:
                item = await self.rosters.get_item(str(owner), str(user))
                if item is None or not item.has_from:
                    continue
            for node in present:
                config = await self.store.get_node(str(owner), node)
                if (
                    config is None
                    or config.get("send_last_published_item") != "on_sub_and_presence"
                    or access_error(owner, config, session.jid, item) is not None
                ):
                    continue
                if session.closed:
                    return
                await self.send_last_item(owner, node, config, session.jid)
