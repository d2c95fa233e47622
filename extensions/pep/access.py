"""Who may use an account's PEP nodes: the access models of XEP-0060 section 4.5 as
XEP-0163 applies them (section 4, and section 5: presence by default), read against the
owner's roster: open (anyone), presence (contacts with a presence subscription from or
both), roster (contacts in one of the node's roster groups) and whitelist (the members
the owner names, xmppd/pubsub/affiliations.py). The owner may do everything; only the
owner publishes and configures.

Only the account and the contacts it shares presence with learn that it exists: to
anyone else a node that does not exist is answered as a non-existent account is
(service-unavailable, RFC 6121 8.5.1), as disco.py does for the account itself.
"""

from __future__ import annotations

from xmppd import pubsub
from xmppd.protocol.errors import Forbidden, ItemNotFound, ServiceUnavailable, StanzaError
from xmppd.protocol.jid import JID
from xmppd.pubsub import affiliations
from xmppd.storage.interfaces import RosterItem


def access_error(owner: JID, config: dict, requester: JID, item: RosterItem | None) -> StanzaError | None:
    """The error of the node's access model for `requester` (None: admitted); `item` is
    the requester in the owner's roster."""
    if requester.bare == owner:
        return None
    model = config.get("access_model", "presence")
    if model == "open":
        return None
    if model == "presence":
        admitted = item is not None and item.has_from
    elif model == "roster":
        admitted = item is not None and pubsub.in_allowed_group(config, item.groups)
    else:
        admitted = affiliations.affiliation_of(config, requester) in affiliations.WHITELISTED
    return None if admitted else pubsub.access_denied(model)


class NodeAccess:
    """The access checks that read the host's stores: the PubSubStore and the rosters."""

    def __init__(self, host):
        self.host = host
        self.store = host.storage.pubsub
        self.rosters = host.storage.rosters

    async def account_of(self, iq, *, owner_only: bool = False) -> JID:
        """The service (account) an iq is for; only its owner may publish or configure."""
        owner = iq.to.bare
        if owner != iq.from_.bare:
            if owner_only:
                raise Forbidden(text="only the account owner publishes and configures its nodes")
            if not await self.host.user_exists(owner.local):
                raise ServiceUnavailable()
        return owner

    async def contact(self, owner: JID, requester: JID) -> RosterItem | None:
        """The requester in the owner's roster (None for the owner itself)."""
        if requester.bare == owner:
            return None
        return await self.rosters.get_item(str(owner), str(requester.bare))

    async def readable_node(self, owner: JID, node: str, requester: JID) -> dict:
        """A node's configuration, when the requester may read it; the access model's
        error otherwise."""
        config = await self.store.get_node(str(owner), node)
        if config is None:
            raise await self.no_such_node(owner, requester)
        error = access_error(owner, config, requester, await self.contact(owner, requester))
        if error is not None:
            raise error
        return config

    async def visible_node(self, owner: JID, node: str, requester: JID) -> dict | None:
        """A node's configuration; None when there is no such node or the requester may
        not read it (disco.py then answers as for any unknown node of the account)."""
        config = await self.store.get_node(str(owner), node)
        if config is None:
            return None
        if access_error(owner, config, requester, await self.contact(owner, requester)) is not None:
            return None
        return config

    async def no_such_node(self, owner: JID, requester: JID) -> StanzaError:
        """XEP-0060's item-not-found for those who know that the account exists (itself and
        the contacts it shares presence with); for anyone else the answer of an account
        that does not exist (RFC 6121 8.5.1), so that nobody learns which accounts do."""
        if requester.bare != owner:
            item = await self.rosters.get_item(str(owner), str(requester.bare))
            if item is None or not item.has_from:
                return ServiceUnavailable()
        return ItemNotFound()
