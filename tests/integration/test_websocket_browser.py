"""XMPP over WebSocket from a real browser: Debian's headless Chromium runs a page that
the test serves. The page finds the endpoint in host-meta.json (XEP-0156, read across
origins: CORS), opens it with the browser's own WebSocket and the `xmpp` subprotocol,
sends <open/> (RFC 7395) and reports back, by a POST to the test, what it got: the
subprotocol, the <open/> and the stream features. The same page served from an origin
that [websocket] allowed_origins does not list is refused by the handshake (403), which
the browser sees as a failed WebSocket. No driver: the page reports by itself."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest
from aiohttp import web

from tests.support.server import XmppdProcess, free_port
from tests.support.websocket import NS_FRAMING

TIMEOUT = 60.0  # a cold Chromium on a loaded machine

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>xmppd WebSocket</title></head><body><script>
const report = (outcome) => fetch("/report", {method: "POST", body: JSON.stringify(outcome)});
(async () => {
  let links;
  try {
    links = (await (await fetch("%(host_meta)s")).json()).links;
  } catch (error) {
    return report({error: "host-meta: " + error});
  }
  const endpoint = links.find((link) => link.rel === "urn:xmpp:alt-connections:websocket").href;
  const socket = new WebSocket(endpoint, "xmpp");
  const messages = [];
  let reported = false;
  socket.onopen = () => socket.send("<open xmlns='%(framing)s' to='localhost' version='1.0'/>");
  socket.onmessage = (event) => {
    messages.push(event.data);
    if (event.data.includes("stream:features") && !reported) {
      reported = true;
      report({endpoint, protocol: socket.protocol, messages});
      socket.send("<close xmlns='%(framing)s'/>");
    }
  };
  socket.onclose = (event) => {
    if (!reported) {
      reported = true;
      report({endpoint, closed: event.code, messages});
    }
  };
})();
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
        tmp_path_factory.mktemp("websocket-browser"),
        extra_config=f"""
        [websocket]
        allowed_origins = ["http://127.0.0.1:{page_port}"]
        """,
    ).start()
    yield process
    process.stop()


async def visit(chromium, server, page_port, host: str, profile) -> dict:
    """Serve the page on `page_port`, open it in Chromium at http://<host>:<page_port>/,
    and return what the page reported."""
    reported: asyncio.Future = asyncio.get_running_loop().create_future()

    async def page(request):
        host_meta = f"https://localhost:{server.https_port}/.well-known/host-meta.json"
        return web.Response(text=PAGE % {"host_meta": host_meta, "framing": NS_FRAMING}, content_type="text/html")

    async def report(request):
        if not reported.done():
            reported.set_result(json.loads(await request.text()))
        return web.Response(text="thanks")

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_post("/report", report)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", page_port).start()
    browser = await asyncio.create_subprocess_exec(
        chromium,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--ignore-certificate-errors",
        f"--user-data-dir={profile}",
        f"http://{host}:{page_port}/",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        return await asyncio.wait_for(reported, TIMEOUT)
    finally:
        browser.kill()
        await browser.wait()
        await runner.cleanup()


async def test_a_browser_page_opens_an_xmpp_stream(chromium, server, page_port, tmp_path):
    outcome = await visit(chromium, server, page_port, "127.0.0.1", tmp_path / "profile")
    assert outcome.get("endpoint") == f"wss://localhost:{server.https_port}/xmpp-websocket", outcome
    assert outcome.get("protocol") == "xmpp", outcome
    opened, features = outcome["messages"][:2]
    assert opened.startswith(f'<open xmlns="{NS_FRAMING}" from="localhost"'), opened
    assert features.startswith('<stream:features xmlns:stream="http://etherx.jabber.org/streams">'), features
    assert "<mechanism>SCRAM-SHA-256</mechanism>" in features


async def test_a_page_of_another_origin_is_refused(chromium, server, page_port, tmp_path):
    # http://localhost:<port> is another origin than http://127.0.0.1:<port>; host-meta
    # still answers it (CORS *), the WebSocket handshake does not.
    outcome = await visit(chromium, server, page_port, "localhost", tmp_path / "profile")
    assert outcome.get("endpoint") == f"wss://localhost:{server.https_port}/xmpp-websocket", outcome
    assert outcome.get("closed") == 1006 and outcome["messages"] == [], outcome
