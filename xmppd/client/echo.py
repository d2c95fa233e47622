"""An example bot: answers each chat message with its own text, encrypted with OMEMO
when the message was encrypted, in plain text otherwise.

    python -m xmppd.client.echo --jid bot@example.org --password secret --keys bot-keys.json
    xmppd-echo-bot --jid bot@example.org --password secret --host 127.0.0.1 --port 5222 --keys bot-keys.json

The password may also come from the XMPPD_BOT_PASSWORD environment variable. The keys
file holds the bot's OMEMO identity: keep it, or contacts see a new device each start.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from xmppd.client import Client

log = logging.getLogger("xmppd.client.echo")


class EchoBot(Client):
    """A Client that echoes chat messages, OMEMO-encrypted ones encrypted."""

    def __init__(self, jid: str, password: str, keys_path, **kwargs):
        super().__init__(jid, password, **kwargs)
        self.enable_omemo(keys_path)
        self.add_event_handler("session_start", self._online)
        self.add_event_handler("message", self._plain_message)
        self.add_event_handler("omemo_message", self._encrypted_message)

    async def _online(self, _event) -> None:
        self.send_presence()
        await self.get_roster()

    def _plain_message(self, message) -> None:
        if (
            message["type"] in ("chat", "normal")
            and message["body"]
            and not self.plugin["xep_0384"].is_encrypted(message)
        ):
            message.reply(message["body"]).send()

    async def _encrypted_message(self, event) -> None:
        message, _device = event
        if message["body"]:
            await self.send_encrypted(message["from"], message["body"], type_=message["type"] or "chat")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="xmppd-echo-bot", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jid", required=True, help="the bot's account")
    parser.add_argument(
        "--password", default=os.environ.get("XMPPD_BOT_PASSWORD"), help="its password (default: $XMPPD_BOT_PASSWORD)"
    )
    parser.add_argument("--host", help="server address (default: from the JID's domain)")
    parser.add_argument("--port", type=int, help="server port (default: 5222, or 5223 with --direct-tls)")
    parser.add_argument("--direct-tls", action="store_true", help="TLS from the first byte (XEP-0368)")
    parser.add_argument("--no-verify-tls", action="store_true", help="accept any server certificate (testing)")
    parser.add_argument("--keys", required=True, help="file of the bot's OMEMO keys (created if missing)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if not args.password:
        parser.error("a password is needed: --password or XMPPD_BOT_PASSWORD")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    return asyncio.run(_run(args))


async def _run(args) -> int:
    bot = EchoBot(args.jid, args.password, args.keys, verify_tls=not args.no_verify_tls)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    bot.add_event_handler("disconnected", lambda _reason: stop.set())
    await bot.login(args.host, args.port, direct_tls=args.direct_tls)
    await bot.omemo_ready()
    log.info("echo bot %s online", bot.boundjid)
    await stop.wait()
    if bot.is_connected():
        await bot.logout()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
