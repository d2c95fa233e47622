"""End to end: XEP-0215 external service discovery with a real TURN server. coturn runs
with the TURN REST API shared secret; a client asks xmppd for its services (or for
credentials of one), and a TURN Allocate with what it got succeeds, while a wrong or an
expired credential gets 401."""

from __future__ import annotations

import asyncio
import calendar
import time
import types
import xml.etree.ElementTree as ET

import pytest
import slixmpp

from extensions.external_services import turn_credentials
from tests.conftest import unique
from tests.support.accounts import create_accounts
from tests.support.inbox import online
from tests.support.server import XmppdProcess
from tests.support.turn import ALLOCATE_ERROR, ALLOCATE_SUCCESS, XOR_RELAYED_ADDRESS, TurnServer, allocate

NS = "urn:xmpp:extdisco:2"
SECRET = "the-turn-rest-api-shared-secret"
LIFETIME = 600
OTHER_HOST = "other.localhost"


@pytest.fixture(scope="module")
def turn(tmp_path_factory):
    server = TurnServer(tmp_path_factory.mktemp("coturn"), SECRET)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory, turn):
    process = XmppdProcess(
        tmp_path_factory.mktemp("extdisco"),
        f"""
        [extensions.external_services]
        secret = "{SECRET}"
        credential_lifetime = {LIFETIME}
        [[extensions.external_services.services]]
        type = "stun"
        host = "127.0.0.1"
        port = {turn.port}
        [[extensions.external_services.services]]
        type = "turn"
        host = "127.0.0.1"
        port = {turn.port}
        transport = "udp"
        restricted = true
        name = "Relay"

        [[hosts]]
        domain = "{OTHER_HOST}"
        """,
    ).start()
    yield process
    process.stop()


async def ask(client, payload: str, to: str = "localhost", **attributes) -> ET.Element:
    iq = client.make_iq_get(ito=to)
    element = ET.SubElement(iq.xml, f"{{{NS}}}{payload}", attributes)
    if payload == "credentials":
        ET.SubElement(element, f"{{{NS}}}service", {"host": "127.0.0.1", "type": "turn"})
    return (await iq.send()).xml.find(f"{{{NS}}}{payload}")


def services_of(answer: ET.Element) -> dict[str, ET.Element]:
    return {service.get("type"): service for service in answer.findall(f"{{{NS}}}service")}


async def test_turn_credentials_from_the_services_list_allocate_a_relay(server, turn, connect):
    client, _ = await connect()
    services = services_of(await ask(client, "services"))
    assert set(services) == {"stun", "turn"}
    stun, relay = services["stun"], services["turn"]
    assert (stun.get("host"), stun.get("port"), stun.get("username")) == ("127.0.0.1", str(turn.port), None)
    assert (relay.get("transport"), relay.get("restricted"), relay.get("name")) == ("udp", "1", "Relay")
    expiry, user = relay.get("username").split(":", 1)
    assert user == str(client.boundjid.bare)
    assert abs(int(expiry) - (time.time() + LIFETIME)) < 60
    assert calendar.timegm(time.strptime(relay.get("expires"), "%Y-%m-%dT%H:%M:%SZ")) == int(expiry)
    response = await asyncio.to_thread(
        allocate, "127.0.0.1", int(relay.get("port")), relay.get("username"), relay.get("password")
    )
    assert response.type == ALLOCATE_SUCCESS and response.integrity_ok
    assert XOR_RELAYED_ADDRESS in response.attributes


async def test_credentials_request_for_one_service(server, turn, connect):
    client, _ = await connect()
    answer = await ask(client, "credentials")
    (service,) = answer.findall(f"{{{NS}}}service")
    response = await asyncio.to_thread(
        allocate, "127.0.0.1", turn.port, service.get("username"), service.get("password")
    )
    assert response.type == ALLOCATE_SUCCESS


async def test_services_of_one_type(server, connect):
    client, _ = await connect()
    answer = await ask(client, "services", type="stun")
    assert answer.get("type") == "stun" and set(services_of(answer)) == {"stun"}


@pytest.mark.parametrize(
    "service,condition",
    [
        ({"type": "turn"}, "bad-request"),  # no host (section 3.3: MUST)
        ({"host": "turn.elsewhere.example", "type": "turn"}, "item-not-found"),
        ({"host": "127.0.0.1", "type": "stun"}, "item-not-found"),  # needs no credentials
    ],
)
async def test_credentials_for_no_such_service_are_refused(server, connect, service, condition):
    client, _ = await connect()
    iq = client.make_iq_get(ito="localhost")
    ET.SubElement(ET.SubElement(iq.xml, f"{{{NS}}}credentials"), f"{{{NS}}}service", service)
    with pytest.raises(slixmpp.exceptions.IqError) as caught:
        await iq.send()
    assert caught.value.condition == condition


async def test_wrong_or_expired_credentials_get_401(server, turn, connect):
    client, _ = await connect()
    relay = services_of(await ask(client, "services"))["turn"]
    wrong = await asyncio.to_thread(
        allocate, "127.0.0.1", turn.port, relay.get("username"), relay.get("password")[::-1]
    )
    assert (wrong.type, wrong.error_code) == (ALLOCATE_ERROR, 401)
    # What xmppd handed out LIFETIME seconds ago, now past its expiry.
    username, password = turn_credentials(SECRET, str(client.boundjid.bare), int(time.time()) - 1)
    expired = await asyncio.to_thread(allocate, "127.0.0.1", turn.port, username, password)
    assert (expired.type, expired.error_code) == (ALLOCATE_ERROR, 401)


async def test_only_users_of_the_host_get_its_services(server):
    (jid,) = create_accounts(types.SimpleNamespace(config_path=server.config_path, domain=OTHER_HOST), [unique()])
    client, _ = await online(server, jid)
    try:
        assert set(services_of(await ask(client, "services", to=OTHER_HOST))) == {"stun", "turn"}
        with pytest.raises(slixmpp.exceptions.IqError) as caught:
            await ask(client, "services")
        assert caught.value.condition == "forbidden"
    finally:
        await client.logout()
