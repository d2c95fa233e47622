"""Interop: Profanity (a terminal client on libstrophe that xmppd was not written against),
driven under tmux as a person would: it logs in over STARTTLS, sends a chat message to a
slixmpp client and shows the reply on its screen."""

import asyncio
import os
import time

import pytest

from tests.support.foreign_clients import profanity
from tests.support.inbox import MESSAGE, NS_CLIENT, online
from tests.support.muc import new_account
from tests.support.server import XmppdProcess


class Terminal:
    """Profanity in a detached tmux session on a socket of its own, with its own HOME."""

    def __init__(self, commands, directory):
        self.profanity, self.tmux_command = commands
        self.socket = str(directory / "tmux.sock")
        home = directory / "home"
        home.mkdir()
        self.env = dict(
            os.environ,
            HOME=str(home),
            XDG_CONFIG_HOME=str(home / "config"),
            XDG_DATA_HOME=str(home / "data"),
            TERM="xterm-256color",
        )

    async def tmux(self, *args):
        process = await asyncio.create_subprocess_exec(
            self.tmux_command,
            "-S",
            self.socket,
            *args,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        return process.returncode, output.decode()

    async def start(self):
        code, output = await self.tmux("new-session", "-d", "-s", "prof", "-x", "200", "-y", "50", self.profanity)
        assert code == 0, output

    async def type(self, text):
        await self.tmux("send-keys", "-t", "prof", "-l", text)
        await self.tmux("send-keys", "-t", "prof", "Enter")

    async def screen(self):
        return (await self.tmux("capture-pane", "-p", "-t", "prof"))[1]

    async def shows(self, text, timeout=20.0):
        """Wait until `text` is on the screen (a terminal has no events to wait on)."""
        deadline = time.monotonic() + timeout
        while text not in (screen := await self.screen()):
            assert time.monotonic() < deadline, f"{text!r} not on the screen:\n{screen}"
            await asyncio.sleep(0.2)
        return screen

    async def stop(self):
        await self.tmux("kill-server")


@pytest.fixture(scope="module")
def commands():
    return profanity()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = XmppdProcess(tmp_path_factory.mktemp("profanity")).start()
    yield process
    process.stop()


async def test_profanity_logs_in_and_chats(server, commands, tmp_path):
    user, peer = await new_account(server), await new_account(server)
    client, inbox = await online(server, peer, "desk")
    terminal = Terminal(commands, tmp_path)
    await terminal.start()
    try:
        await terminal.shows("Type '/help'")
        await terminal.type(f"/connect {user} server 127.0.0.1 port {server.port} tls trust")
        await terminal.shows("Enter password")
        await terminal.type("secret")
        await terminal.shows("logged in successfully")

        await terminal.type(f"/msg {peer} hello from profanity")
        message = await inbox.wait(lambda s: s.tag == MESSAGE and s.findtext(f"{{{NS_CLIENT}}}body") is not None)
        assert message.findtext(f"{{{NS_CLIENT}}}body") == "hello from profanity"
        assert message.get("from").startswith(f"{user}/profanity")
        assert message.get("type") == "chat"

        client.send_message(mto=message.get("from"), mbody="hello from slixmpp", mtype="chat")
        await terminal.shows("hello from slixmpp")
        await terminal.type("/quit")
    finally:
        await terminal.stop()
        await client.logout()
    assert "Traceback" not in server.log
