"""XEP-0357 Push Notifications end to end: a second account plays the app server (any
XMPP entity can), and gets the notifications for a user who is offline or whose session
hibernates; enable/disable and their errors; an app server's error disables it."""

import re

import pytest
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from tests.conftest import AccountPool
from tests.support.inbox import Inbox
from tests.support.raw import RawClient
from tests.support.server import XmppdProcess
from tests.support.smacks import NS_SM, authenticated, drop, managed_login, send_message
from xmppd.client import Client

NS_PUSH = "urn:xmpp:push:0"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_DATA = "jabber:x:data"
PUBLISH = f"{{{NS_PUBSUB}}}pubsub/{{{NS_PUBSUB}}}publish"
SUMMARY = f"{PUBLISH}/{{{NS_PUBSUB}}}item/{{{NS_PUSH}}}notification/{{{NS_DATA}}}x"
OPTIONS = f"{{{NS_PUBSUB}}}pubsub/{{{NS_PUBSUB}}}publish-options/{{{NS_DATA}}}x"
FAILING_NODE = "refused"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = XmppdProcess(
        tmp_path_factory.mktemp("push"),
        "[extensions.push]\ninclude_sender = true\ninclude_body = true\n",
        c2s_section="auth_failure_delay = 0",
    ).start()
    process.accounts = AccountPool(process)
    yield process
    process.stop()


class AppServer:
    """A slixmpp account acting as the app server: records publishes, answers them
    (with an error for the node FAILING_NODE)."""

    def __init__(self, server, user):
        self.client = Client(f"{user}@{server.domain}/push", "secret", verify_tls=False)
        self.jid = f"{user}@{server.domain}/push"
        self.inbox = Inbox(self.client)
        self.client.register_handler(
            Callback("push publish", MatchXPath(f"{{jabber:client}}iq/{{{NS_PUBSUB}}}pubsub"), self._answer)
        )

    def _answer(self, iq):
        if iq.xml.find(PUBLISH).get("node") == FAILING_NODE:
            self.client.send_raw(
                f"<iq type='error' id='{iq['id']}' to='{iq['from']}'><error type='cancel'>"
                "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
            )
        else:
            iq.reply(clear=True).send()

    async def push(self, node):
        """The next notification published to `node`: its summary fields and the iq."""
        iq = await self.inbox.wait(lambda stanza: published_to(stanza, node))
        form = iq.find(SUMMARY)
        return {field.get("var"): field.findtext(f"{{{NS_DATA}}}value") for field in form}, iq

    def pushes(self, node):
        return self.inbox.received(lambda stanza: published_to(stanza, node))


def published_to(stanza, node):
    publish = stanza.find(PUBLISH)
    return publish is not None and publish.get("node") == node


@pytest.fixture
async def app(server):
    app = AppServer(server, server.accounts.local())
    await app.client.login("127.0.0.1", server.port)
    yield app
    await app.client.logout()


async def iq(client: RawClient, iq_id: str, payload: str) -> str:
    await client.send(f"<iq type='set' id='{iq_id}'>{payload}</iq>")
    return (await client.expect(rf"""<iq[^>]*\bid=["']{iq_id}["'][^>]*(/>|>.*?</iq>)""")).group(0)


def enable(service, node, secret=None):
    form = ""
    if secret is not None:
        form = (
            f"<x xmlns='{NS_DATA}' type='submit'><field var='FORM_TYPE'>"
            f"<value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
            f"<field var='secret'><value>{secret}</value></field></x>"
        )
    return f"<enable xmlns='{NS_PUSH}' jid='{service}' node='{node}'>{form}</enable>"


async def user_with_push(server, app, nodes, resource="phone"):
    user = server.accounts.local()
    client = RawClient(server.domain)
    await client.login(server.port, user, "secret", resource=resource)
    for index, node in enumerate(nodes):
        assert 'type="result"' in await iq(client, f"e{index}", enable(app.jid, node, secret=f"secret-{node}"))
    return user, client


async def sender(server):
    client = RawClient(server.domain)
    await client.login(server.port, server.accounts.local(), "secret")
    return client


async def test_push_advertised_on_the_account(server):
    client = RawClient(server.domain)
    await client.login(server.port, server.accounts.local(), "secret")
    await client.send("<iq type='get' id='d'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    answer = await client.expect(r"<iq[^>]*id=\"d\".*?</iq>")
    assert f'var="{NS_PUSH}"' in answer.group(0)
    await client.close()


async def test_offline_message_is_pushed_to_the_app_server(server, app):
    user, client = await user_with_push(server, app, ["n1"])
    await client.send("</stream:stream>")
    await client.closed()
    bob = await sender(server)
    await send_message(bob, f"{user}@{server.domain}", "are you there?")
    summary, publish = await app.push("n1")
    assert publish.get("from") == f"{user}@{server.domain}"  # the user's bare JID publishes
    assert summary["FORM_TYPE"] == "urn:xmpp:push:summary"
    assert summary["message-count"] == "1"
    assert summary["last-message-sender"].startswith(f"{bob.jid.split('/')[0]}/")
    assert summary["last-message-body"] == "are you there?"
    options = {f.get("var"): f.findtext(f"{{{NS_DATA}}}value") for f in publish.find(OPTIONS)}
    assert options["secret"] == "secret-n1"

    await send_message(bob, f"{user}@{server.domain}", "hello?")
    summary, _ = await app.push("n1")
    assert summary["message-count"] == "2"
    await bob.close()


async def test_message_for_a_hibernating_session_is_pushed(server, app):
    user, client = await user_with_push(server, app, ["hib"])
    await client.close()
    phone, sm_id = await managed_login(server, user, "phone")
    await iq(phone, "again", enable(app.jid, "hib"))  # re-enabled on the SM session
    drop(phone)
    bob = await sender(server)
    await send_message(bob, f"{user}@{server.domain}", "wake up")
    summary, _ = await app.push("hib")
    assert summary["last-message-body"] == "wake up"

    phone, _ = await authenticated(server, user)
    await phone.send(f"<resume xmlns='{NS_SM}' previd='{sm_id}' h='2'/>")
    await phone.expect(r"<resumed [^>]*/>")
    await phone.expect(r"<body>wake up</body>")
    await phone.close()
    await bob.close()


async def test_disable_one_node_keeps_the_others(server, app):
    user, client = await user_with_push(server, app, ["keep", "drop"])
    assert 'type="result"' in await iq(client, "d", f"<disable xmlns='{NS_PUSH}' jid='{app.jid}' node='drop'/>")
    await client.send("</stream:stream>")
    bob = await sender(server)
    await send_message(bob, f"{user}@{server.domain}", "one")
    await app.push("keep")
    assert app.pushes("drop") == []
    await bob.close()


async def test_disable_without_node_removes_every_node_of_the_service(server, app):
    user, client = await user_with_push(server, app, ["a", "b"])
    await iq(client, "d", f"<disable xmlns='{NS_PUSH}' jid='{app.jid}'/>")
    other = AppServer(server, server.accounts.local())  # the sync point: still enabled
    await other.client.login("127.0.0.1", server.port)
    await iq(client, "e", enable(other.jid, "c"))
    await client.send("</stream:stream>")
    bob = await sender(server)
    await send_message(bob, f"{user}@{server.domain}", "one")
    await other.push("c")
    assert app.pushes("a") == [] and app.pushes("b") == []
    await other.client.logout()
    await bob.close()


async def test_an_error_from_the_app_server_disables_the_registration(server, app):
    user, client = await user_with_push(server, app, [FAILING_NODE, "fine"])
    await client.send("</stream:stream>")
    bob = await sender(server)
    await send_message(bob, f"{user}@{server.domain}", "first")
    await app.push(FAILING_NODE)
    await app.push("fine")
    await server.wait_for_log(f"event=push-disabled owner={user}@{server.domain}")
    await send_message(bob, f"{user}@{server.domain}", "second")
    summary, _ = await app.push("fine")
    assert summary["last-message-body"] == "second"
    assert len(app.pushes(FAILING_NODE)) == 1
    await bob.close()


@pytest.mark.parametrize(
    "payload,condition",
    [
        (f"<enable xmlns='{NS_PUSH}' jid='push.example'/>", "bad-request"),  # no node
        (f"<enable xmlns='{NS_PUSH}' node='n'/>", "bad-request"),  # no jid
        (f"<enable xmlns='{NS_PUSH}' jid='a@@b' node='n'/>", "jid-malformed"),
        (
            f"<enable xmlns='{NS_PUSH}' jid='push.example' node='n'><x xmlns='{NS_DATA}' type='submit'>"
            "<field var='FORM_TYPE'><value>urn:example:other</value></field></x></enable>",
            "bad-request",
        ),
        (
            f"<enable xmlns='{NS_PUSH}' jid='push.example' node='n'><x xmlns='{NS_DATA}' type='form'>"
            "<field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field></x></enable>",
            "bad-request",
        ),
        (f"<disable xmlns='{NS_PUSH}' node='n'/>", "bad-request"),
    ],
)
async def test_bad_requests_get_the_error_and_lose_nothing(server, app, payload, condition):
    user, client = await user_with_push(server, app, ["stays"])
    answer = await iq(client, "bad", payload)
    assert 'type="error"' in answer and condition in answer
    await client.send("</stream:stream>")
    bob = await sender(server)
    await send_message(bob, f"{user}@{server.domain}", "still pushed")
    summary, _ = await app.push("stays")
    assert summary["last-message-body"] == "still pushed"
    await bob.close()


async def test_enable_to_another_account_is_refused(server, app):
    user, client = await user_with_push(server, app, [])
    other = server.accounts.local()
    await client.send(f"<iq type='set' id='x' to='{other}@{server.domain}'>{enable(app.jid, 'n')}</iq>")
    answer = await client.expect(r"<iq[^>]*id=\"x\".*?</iq>")
    assert re.search(r"type=\"error\"", answer.group(0)) and "service-unavailable" in answer.group(0)
    await client.close()
