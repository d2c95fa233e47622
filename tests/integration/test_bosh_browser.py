"""XMPP over BOSH from a real browser with a second client library: Debian's headless
Chromium runs a page that the test serves from another origin, with Strophe.js (npm,
tests/support/strophe) connecting over BOSH (XEP-0206) with the browser's own HTTP
requests: the CORS preflight and answers of [bosh] allowed_origins, SCRAM, restart,
bind, long polling. The page chats with a slixmpp TCP client both ways and reports, by
POSTs to the test, what happened. No driver: the page reports by itself."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest
from aiohttp import web

from tests.conftest import unique
from tests.support.accounts import create_accounts
from tests.support.foreign_clients import strophe_modules
from tests.support.inbox import MESSAGE, online
from tests.support.server import XmppdProcess, free_port

TIMEOUT = 60.0  # a cold Chromium on a loaded machine

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>xmppd BOSH</title><script src="/strophe.js"></script></head>
<body><script>
const report = (event, fields) => fetch("/report", {method: "POST", body: JSON.stringify({event, ...fields})});
const S = window.Strophe.Connection ? window.Strophe : window.Strophe.Strophe;
const connection = new S.Connection("%(bosh)s");
connection.addHandler((message) => {
  const body = message.getElementsByTagName("body")[0];
  report("received", {from: message.getAttribute("from"), body: body ? body.textContent : null});
  return true;
}, null, "message", "chat");
connection.connect("%(jid)s", "secret", (status, condition) => {
  if (status === S.Status.CONNECTED) {
    connection.send($pres());
    connection.send($msg({to: "%(peer)s", type: "chat"}).c("body").t("from strophe"));
    report("online", {jid: connection.jid});
  } else if ([S.Status.CONNFAIL, S.Status.AUTHFAIL, S.Status.ERROR].includes(status)) {
    report("failed", {status, condition});
  }
});
</script></body></html>
"""


@pytest.fixture(scope="module")
def chromium():
    command = shutil.which("chromium")
    if command is None:
        pytest.skip("chromium is not installed (make test installs the Debian packages)")
    return command


@pytest.fixture(scope="module")
def page_port():
    return free_port()


@pytest.fixture(scope="module")
def server(tmp_path_factory, page_port):
    process = XmppdProcess(
        tmp_path_factory.mktemp("bosh-browser"),
        extra_config=f"""
        [bosh]
        allowed_origins = ["http://127.0.0.1:{page_port}"]
        """,
    ).start()
    yield process
    process.stop()


async def test_strophe_in_a_browser_chats_with_a_tcp_client_both_ways(chromium, server, page_port, tmp_path):
    strophe = strophe_modules() / "strophe.js" / "dist" / "strophe.umd.min.js"
    web_jid, tcp_jid = create_accounts(server, [unique("strophe"), unique("tcp")])
    events: asyncio.Queue = asyncio.Queue()

    async def page(request):
        bosh = f"https://localhost:{server.https_port}/http-bind"
        return web.Response(text=PAGE % {"bosh": bosh, "jid": web_jid, "peer": tcp_jid}, content_type="text/html")

    async def script(request):
        return web.FileResponse(strophe, headers={"Content-Type": "text/javascript"})

    async def report(request):
        events.put_nowait(json.loads(await request.text()))
        return web.Response(text="thanks")

    async def next_event(name: str) -> dict:
        event = await asyncio.wait_for(events.get(), TIMEOUT)
        assert event["event"] == name, event
        return event

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/strophe.js", script)
    app.router.add_post("/report", report)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", page_port).start()
    tcp, inbox = await online(server, tcp_jid)
    browser = await asyncio.create_subprocess_exec(
        chromium,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--ignore-certificate-errors",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"http://127.0.0.1:{page_port}/",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        online_event = await next_event("online")
        web_full = online_event["jid"]
        assert web_full.startswith(f"{web_jid}/"), online_event
        received = await inbox.wait(lambda s: s.tag == MESSAGE and s.get("from") == web_full, timeout=TIMEOUT)
        assert received.findtext("{jabber:client}body") == "from strophe"
        tcp.send_message(mto=web_full, mbody="from tcp", mtype="chat")
        event = await next_event("received")
        assert event["body"] == "from tcp" and event["from"] == str(tcp.boundjid), event
        assert await server.metric('xmppd_connections_accepted_total{listener="bosh"}') >= 1
    finally:
        browser.kill()
        await browser.wait()
        tcp.disconnect()
        await runner.cleanup()
