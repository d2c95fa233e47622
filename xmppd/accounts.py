"""Accounts: create, change password, delete; shared by xmppctl, XEP-0077 and XEP-0133.

Only SCRAM salted keys are stored (SHA-1 and SHA-256), never the password. Deleting an
account fires `user-deleted` so that every extension removes the data it keeps.
"""

from __future__ import annotations

import asyncio
import time

from xmppd.protocol.jid import JID
from xmppd.protocol.sasl import derive_scram_credentials
from xmppd.storage.interfaces import Account

HASHES = ("sha1", "sha256")


async def _secrets(password: str) -> dict:
    # PBKDF2 costs milliseconds: keep it off the event loop.
    return await asyncio.to_thread(lambda: {name: derive_scram_credentials(password, name) for name in HASHES})


async def create_user(host, local: str, password: str) -> bool:
    """False when the account exists already."""
    jid = JID(local, host.domain)
    return await host.storage.accounts.create(Account(str(jid), await _secrets(password), time.time()))


async def set_password(host, local: str, password: str) -> bool:
    """False when there is no such account."""
    return await host.storage.accounts.set_secrets(f"{local}@{host.domain}", await _secrets(password))


async def delete_user(host, local: str, *, reply=None) -> bool:
    """Close the user's sessions and remove the account with all its data.

    `reply` (a stanza, e.g. the result of a XEP-0077 <remove/>) is routed once the
    deletion is committed and before the sessions are closed.
    """
    jid = JID(local, host.domain)
    host.forget_user(local)
    if not await host.storage.accounts.delete(str(jid)):
        return False
    if reply is not None:
        await host.send(reply)
    for session in host.sessions_of(local):
        session.close("not-authorized", "account deleted")
        await host.end_session(session)
    await host.bus.notify("user-deleted", jid)
    return True
