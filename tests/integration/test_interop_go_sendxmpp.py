"""Interop: go-sendxmpp (a Go command-line client, on the go-xmpp library, that xmppd was
not written against) sends a message over STARTTLS or direct TLS to a slixmpp client and
to a MUC room, uploads a file through XEP-0363 and sends its URL, and fails cleanly on a
wrong password."""

import asyncio
import os

import pytest

from tests.support.foreign_clients import go_sendxmpp
from tests.support.inbox import MESSAGE, NS_CLIENT, online
from tests.support.muc import create_room, new_account, new_user
from tests.support.server import XmppdProcess
from tests.support.upload import download, http, payload


@pytest.fixture(scope="module")
def sendxmpp():
    return go_sendxmpp()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = XmppdProcess(tmp_path_factory.mktemp("go-sendxmpp")).start()
    yield process
    process.stop()


async def run(command, *args, text="", env=None):
    """go-sendxmpp with the message on its standard input: (exit code, output)."""
    process = await asyncio.create_subprocess_exec(
        command,
        "--no-tls-verify",
        "--timeout",
        "20",
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(text.encode()), 60)
    return process.returncode, output.decode()


def body_of(stanza):
    return stanza.findtext(f"{{{NS_CLIENT}}}body")


@pytest.mark.parametrize("direct_tls", [False, True], ids=["starttls", "direct-tls"])
async def test_go_sendxmpp_sends_a_chat_message(server, sendxmpp, direct_tls):
    sender, recipient = await new_account(server), await new_account(server)
    client, inbox = await online(server, recipient, "desk")
    try:
        port = server.tls_port if direct_tls else server.port
        tls = ["--tls"] if direct_tls else []
        code, output = await run(
            sendxmpp,
            "-u",
            sender,
            "-p",
            "secret",
            "-j",
            f"127.0.0.1:{port}",
            *tls,
            recipient,
            text=f"hello from go-sendxmpp {direct_tls}",
        )
        assert code == 0, output
        message = await inbox.wait(lambda s: s.tag == MESSAGE and body_of(s) is not None)
        assert body_of(message).strip() == f"hello from go-sendxmpp {direct_tls}"
        assert message.get("from").split("/")[0] == sender
        assert message.get("type") in ("chat", "normal", None)
    finally:
        await client.logout()


async def test_go_sendxmpp_sends_to_a_room(server, sendxmpp):
    owner = await new_user(server)
    try:
        room = await create_room(owner)
        sender = await new_account(server)
        code, output = await run(
            sendxmpp,
            "-u",
            sender,
            "-p",
            "secret",
            "-j",
            f"127.0.0.1:{server.port}",
            "--chatroom",
            "--alias",
            "gobot",
            room,
            text="hello room",
        )
        assert code == 0, output
        message = await owner.inbox.wait(
            lambda s: (
                s.tag == MESSAGE
                and s.get("type") == "groupchat"
                and body_of(s) is not None
                and s.get("from") == f"{room}/gobot"
            )
        )
        assert body_of(message).strip() == "hello room"
    finally:
        await owner.logout()


async def test_go_sendxmpp_uploads_a_file(server, sendxmpp, tmp_path):
    sender, recipient = await new_account(server), await new_account(server)
    data = payload(70_000, seed=7)
    (tmp_path / "report.bin").write_bytes(data)
    client, inbox = await online(server, recipient, "desk")
    try:
        # --no-tls-verify is for the XMPP stream only: its HTTP client trusts what Go's does.
        env = dict(os.environ, SSL_CERT_FILE=str(server.directory / "data" / f"{server.domain}.crt"))
        code, output = await run(
            sendxmpp,
            "-u",
            sender,
            "-p",
            "secret",
            "-j",
            f"127.0.0.1:{server.port}",
            "--http-upload",
            str(tmp_path / "report.bin"),
            recipient,
            env=env,
        )
        assert code == 0 and not output, output
        message = await inbox.wait(lambda s: s.tag == MESSAGE and body_of(s) is not None)
        url = body_of(message)
        assert url.startswith(f"https://{server.domain}:{server.https_port}/") and url.endswith("/report.bin")
        async with http() as session:
            response, body = await download(session, url)
        assert response.status == 200 and body == data
    finally:
        await client.logout()


async def test_go_sendxmpp_wrong_password_fails(server, sendxmpp):
    sender, recipient = await new_account(server), await new_account(server)
    code, output = await run(
        sendxmpp, "-u", sender, "-p", "wrong", "-j", f"127.0.0.1:{server.port}", recipient, text="never sent"
    )
    assert code != 0
    assert "not-authorized" in output, output
