"""XEP-0484 Fast Authentication Streamlining Tokens: a client that logged in once over
SASL2 logs in again in one round trip with a token, by an HT-* mechanism
(draft-schmaus-kitten-sasl-ht, in xmppd/protocol/sasl.py).

A token belongs to an account and a client (its XEP-0388 <user-agent/> id) and is
bound to the mechanism it was asked for. Each client has two slots (XEP-0484 section
7.1): 'new', the token last issued, and 'current', the one last used. Logging in with
the new token makes it current, so the one before it stops working; a token issued
replaces an unused new one. A used token older than `rotate_after` is replaced (the new
one comes in <success/>, the used one keeps working until the new one is used); an
expired one gets credentials-expired, and <fast invalidate='true'/> ends the one used.

The store keeps no token: a token is the HMAC, under the server's signing key
([http] secret, xmppd/http.py), of the account, the client and a random id, and only
the id is stored: a copy of the store cannot log in.

`xmppctl tokens` lists an account's clients with tokens, `xmppctl revoke-tokens` ends
them (`clients`, `revoke`).

Hooks: fast-token-lookup (TokenLookup), fast-token-grant (TokenGrant), fired by
xmppd/c2s.py during a SASL2 login.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from xmppd.extension import Extension, hook
from xmppd.locks import KeyedLocks
from xmppd.protocol.namespaces import NS_FAST
from xmppd.protocol.stanza import make_element
from xmppd.protocol.stream import serialize

_TOKEN_CONTEXT = b"xmppd XEP-0484 token\0"


class Fast(Extension):
    xeps = {484: "0.2.0"}

    @dataclass(frozen=True)
    class Options:
        token_lifetime: int = 21 * 86400  # seconds a token may be used after it was issued
        rotate_after: int = 86400  # seconds after which a used token is replaced
        max_clients: int = 32  # clients with tokens per account; past it, the oldest loses them

        def validate(self, where):
            where.check("token_lifetime", self.token_lifetime > 0, "must be positive")
            where.check(
                "rotate_after", 0 <= self.rotate_after < self.token_lifetime, "must be between 0 and token_lifetime"
            )
            where.check("max_clients", self.max_clients > 0, "must be positive")

    def __init__(self, host, options):
        super().__init__(host, options)
        self.locks = KeyedLocks()  # per account: read-modify-write of its clients' slots

    async def start(self) -> None:
        self.store = self.host.open_keyvalue("fast-tokens")  # account -> client -> slots (JSON)

    def token(self, owner: str, client: str, token_id: str) -> bytes:
        mac = hmac.new(
            self.services.http.signing_key, _TOKEN_CONTEXT + f"{owner}\0{client}\0{token_id}".encode(), hashlib.sha256
        )
        return mac.hexdigest().encode()

    async def _slots(self, owner: str, client: str) -> dict:
        value = await self.store.get(owner, client)
        return json.loads(value) if value else {"current": None, "new": None}

    @hook("fast-token-lookup")
    async def lookup(self, lookup) -> bool:
        owner = str(lookup.jid.bare)
        now = time.time()
        for slot in (await self._slots(owner, lookup.user_agent)).values():
            if slot and slot["mechanism"] == lookup.mechanism:
                found = lookup.tokens if slot["expiry"] > now else lookup.expired
                found.append(self.token(owner, lookup.user_agent, slot["id"]))
        return True

    @hook("fast-token-grant")
    async def grant(self, grant) -> bool:
        owner, client = str(grant.jid.bare), grant.user_agent
        now = time.time()
        async with self.locks(owner):
            slots = await self._slots(owner, client)
            original = dict(slots)
            mechanism = grant.requested
            if grant.used is not None:
                used = next(
                    (
                        name
                        for name, slot in slots.items()
                        if slot and hmac.compare_digest(self.token(owner, client, slot["id"]), grant.used)
                    ),
                    None,
                )
                if used is None:  # replaced meanwhile by a login in parallel
                    return True
                if grant.invalidate:
                    slots[used] = None
                else:
                    slots["current"] = slots[used]
                    if used == "new":
                        slots["new"] = None
                    if mechanism is None and now - slots["current"]["issued"] >= self.options.rotate_after:
                        mechanism = grant.mechanism
            if mechanism is not None:
                token_id = secrets.token_urlsafe(18)
                slots["new"] = {
                    "id": token_id,
                    "mechanism": mechanism,
                    "issued": now,
                    "expiry": now + self.options.token_lifetime,
                }
                grant.token = serialize(
                    make_element(
                        f"{{{NS_FAST}}}token",
                        {
                            "expiry": time.strftime(
                                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + self.options.token_lifetime)
                            ),
                            "token": self.token(owner, client, token_id).decode(),
                        },
                    )
                )
                await self._make_room(owner, client)
            if slots == original:  # the current token used again: no write
                return True
            if any(slots.values()):
                await self.store.set(owner, client, json.dumps(slots).encode())
            else:
                await self.store.delete(owner, client)
        return True

    async def clients(self, owner: str) -> dict[str, dict]:
        """The clients of account `owner` that have tokens, and their slots."""
        return {client: await self._slots(owner, client) for client in await self.store.keys(owner)}

    async def revoke(self, owner: str, client: str | None = None) -> int:
        """End the tokens of one client of `owner`, or of all; how many clients had some."""
        async with self.locks(owner):
            clients = await self.store.keys(owner)
            revoked = [key for key in clients if client in (None, key)]
            for key in revoked:
                await self.store.delete(owner, key)
        return len(revoked)

    async def _make_room(self, owner: str, client: str) -> None:
        """At most max_clients clients of an account keep tokens: the one whose tokens
        were issued the longest ago loses them (an abandoned device, most likely)."""
        others = [key for key in await self.store.keys(owner) if key != client]
        if len(others) < self.options.max_clients:
            return
        issued = {}
        for key in others:
            slots = await self._slots(owner, key)
            issued[key] = max((slot["issued"] for slot in slots.values() if slot), default=0)
        for key in sorted(issued, key=issued.get)[: len(others) - self.options.max_clients + 1]:
            self.limit_reached("max_clients")
            await self.store.delete(owner, key)
