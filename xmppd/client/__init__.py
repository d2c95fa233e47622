"""The bundled client and bot library, on slixmpp, with the XEPs xmppd offers switched on.

`Client(jid, password)` is a slixmpp ClientXMPP: `await client.login(host, port)`, then
slixmpp's API (plugins by name: `client["xep_0060"]`). PEP and the profile data ride on
XEP-0060/0163 with entity capabilities (XEP-0115), so a client shows '+notify' interests
as soon as it registers a PEP payload. `client.enable_omemo(keys_path)` before login
switches OMEMO on (xmppd/client/omemo.py, needs the 'omemo' extra); then
`await client.send_encrypted(to, body)` sends, and the "omemo_message" event hands over
each decrypted message with the sending device.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import ssl

import slixmpp
from slixmpp.jid import JID

DEFAULT_PLUGINS = (
    "xep_0030",
    "xep_0092",
    "xep_0199",
    "xep_0202",
    "xep_0077",
    "xep_0050",
    "xep_0133",
    "xep_0004",
    "xep_0049",
    "xep_0054",
    "xep_0060",
    "xep_0084",
    "xep_0115",
    "xep_0163",
    "xep_0223",
    "xep_0402",
)

log = logging.getLogger(__name__)

# slixmpp's events on the way to a session: a login that times out says how far it got.
# (Not ssl_invalid_chain: a handler for it would make slixmpp accept a bad certificate.)
LOGIN_STEPS = (
    "connecting",
    "connection_failed",
    "reconnect_delay",
    "connected",
    "tls_success",
    "auth_success",
    "session_bind",
    "stream_error",
    "session_end",
)


class LoginFailed(Exception):
    pass


class Client(slixmpp.ClientXMPP):
    """A slixmpp client with xmppd's plugins; `await client.login(...)` to connect."""

    def __init__(
        self, jid: str, password: str, *, verify_tls: bool = True, plugins=DEFAULT_PLUGINS, sasl_mech: str | None = None
    ):
        super().__init__(jid, password, sasl_mech=sasl_mech)
        self.use_message_ids = True  # OMEMO and receipts need message ids
        for plugin in plugins:
            self.register_plugin(plugin)
        if not verify_tls:
            self.ssl_context.check_hostname = False
            self.ssl_context.verify_mode = ssl.CERT_NONE

    async def login(
        self, host: str | None = None, port: int | None = None, *, direct_tls: bool = False, timeout: float = 30.0
    ) -> None:
        """Connect, authenticate and bind; raise LoginFailed on a refused authentication,
        TimeoutError (naming the steps reached) when there is no session in time."""
        loop = asyncio.get_running_loop()
        outcome = loop.create_future()
        steps: list[str] = []

        def settle(result):
            if not outcome.done():
                outcome.set_result(result)

        for step in LOGIN_STEPS:
            self.add_event_handler(
                step,
                lambda detail=None, step=step: steps.append(
                    f"{step} ({detail})" if isinstance(detail, (str, int, float, OSError)) else step
                ),
            )
        self.add_event_handler("session_start", lambda _: settle(None))
        self.add_event_handler("failed_all_auth", lambda _: settle(LoginFailed("authentication failed")))
        self.add_event_handler("disconnected", lambda reason: settle(LoginFailed(f"disconnected: {reason}")))
        self.enable_direct_tls = direct_tls
        self.connect(host, port)
        try:
            result = await asyncio.wait_for(outcome, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"no session within {timeout:.0f} s; the login went through: {', '.join(steps) or 'nothing'}"
            ) from None
        if isinstance(result, Exception):
            raise result

    async def logout(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self.disconnect(), timeout)

    # ------------------------------------------------------------- OMEMO

    def enable_omemo(self, keys_path) -> None:
        """Switch OMEMO on, with the device's keys in the file `keys_path` (created if
        missing). Call before `login`; "omemo_ready" fires when the device list and
        bundles are published, "omemo_message" (message, device) for each decrypted one."""
        importlib.import_module("xmppd.client.omemo")  # registers the plugin; needs the omemo extra
        self.register_plugin("xep_0384", {"keys_path": str(keys_path)})
        self.add_event_handler("omemo_initialized", lambda _=None: self.event("omemo_ready"))
        self.add_event_handler("message", self._decrypt_incoming)

    async def omemo_ready(self, timeout: float = 30.0) -> None:
        """Wait until this device's OMEMO data is generated and published."""
        await asyncio.wait_for(self.plugin["xep_0384"].get_session_manager(), timeout)

    async def send_encrypted(self, to: str | JID, body: str, *, type_: str = "chat") -> None:
        """Send `body` encrypted for every trusted device of `to` (and our own others)."""
        from omemo.session_manager import NoEligibleDevices

        omemo = self.plugin["xep_0384"]
        message = self.make_message(mto=JID(to), mtype=type_)
        message["body"] = body
        try:
            encrypted, errors = await omemo.encrypt_message(message, JID(JID(to).bare))
        except NoEligibleDevices:
            # COMPAT: slixmpp-omemo 2.2 subscribes to a non-contact's device lists and
            # downloads them at once; the server's last-item notification for the new
            # subscription, handled at the same time, can leave the cached device
            # information inconsistent. Downloading the lists again settles it.
            await omemo.refresh_device_lists({JID(JID(to).bare)}, force_download=True)
            encrypted, errors = await omemo.encrypt_message(message, JID(JID(to).bare))
        for error in errors:
            log.warning("OMEMO: not encrypted for one device: %s", error)
        if encrypted is None:
            raise RuntimeError(f"OMEMO: no device of {to} to encrypt for")
        encrypted.send()

    async def _decrypt_incoming(self, message) -> None:
        omemo = self.plugin["xep_0384"]
        if message["type"] not in ("chat", "normal") or not omemo.is_encrypted(message):
            return
        try:
            decrypted, device = await omemo.decrypt_message(message)
        except Exception as error:  # a broken or foreign message must not stop the bot
            log.warning("OMEMO: cannot decrypt a message from %s: %r", message["from"], error)
            self.event("omemo_decryption_failed", (message, error))
            return
        self.event("omemo_message", (decrypted, device))
