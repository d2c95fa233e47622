"""The bundled client and bot library, on slixmpp, with the XEPs xmppd offers switched on."""
from __future__ import annotations

import asyncio
import ssl

import slixmpp

DEFAULT_PLUGINS = ("xep_0030", "xep_0092", "xep_0199", "xep_0202", "xep_0077", "xep_0050", "xep_0133")


class LoginFailed(Exception):
    pass


class Client(slixmpp.ClientXMPP):
    """A slixmpp client with xmppd's plugins; `await client.login(...)` to connect."""

    def __init__(self, jid: str, password: str, *, verify_tls: bool = True, plugins=DEFAULT_PLUGINS,
                 sasl_mech: str | None = None):
        super().__init__(jid, password, sasl_mech=sasl_mech)
        for plugin in plugins:
            self.register_plugin(plugin)
        if not verify_tls:
            self.ssl_context.check_hostname = False
            self.ssl_context.verify_mode = ssl.CERT_NONE

    async def login(self, host: str | None = None, port: int | None = None, *, direct_tls: bool = False,
                    timeout: float = 30.0) -> None:
        """Connect, authenticate and bind; raise LoginFailed on a refused authentication."""
        loop = asyncio.get_running_loop()
        outcome = loop.create_future()

        def settle(result):
            if not outcome.done():
                outcome.set_result(result)

        self.add_event_handler("session_start", lambda _: settle(None))
        self.add_event_handler("failed_all_auth", lambda _: settle(LoginFailed("authentication failed")))
        self.add_event_handler("disconnected", lambda reason: settle(LoginFailed(f"disconnected: {reason}")))
        self.enable_direct_tls = direct_tls
        self.connect(host, port)
        result = await asyncio.wait_for(outcome, timeout)
        if isinstance(result, Exception):
            raise result

    async def logout(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self.disconnect(), timeout)
