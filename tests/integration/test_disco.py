"""XEP-0030: every bundled extension's features are advertised, on the host, its
components (disco#items) or the account's bare JID; software version and entity time."""

import datetime
import re
from xml.etree import ElementTree as ET

import pytest

from tests.conftest import unique
from xmppd.client import Client
from xmppd.extension import extension_class
from xmppd.server import bundled_extensions


@pytest.fixture
async def client(xmppd):
    jid = xmppd.adduser(unique(), "pencil")
    client = Client(jid, "pencil", verify_tls=False)
    await client.login("127.0.0.1", xmppd.port)
    yield client
    await client.logout()


def features_of(info) -> set[str]:
    return set(info["disco_info"]["features"])


async def test_every_extension_is_advertised(client):
    disco = client.plugin["xep_0030"]
    host_info = await disco.get_info("localhost")
    assert ("server", "im", None, "xmppd") in set(host_info["disco_info"]["identities"])
    advertised = features_of(host_info)
    for item in (await disco.get_items("localhost"))["disco_items"]["items"]:
        advertised |= features_of(await disco.get_info(item[0]))
    account = features_of(await disco.get_info(client.boundjid.bare))
    for name in bundled_extensions():
        cls = extension_class(name)
        assert set(cls.features) <= advertised, f"{name}: {set(cls.features) - advertised} not advertised"
        assert set(cls.account_features) <= account, f"{name}: {set(cls.account_features) - account} not on the account"


async def test_account_disco_hidden_from_strangers(xmppd, client):
    other = xmppd.adduser(unique(), "pencil")
    with pytest.raises(Exception) as caught:
        await client.plugin["xep_0030"].get_info(other)
    assert caught.value.condition == "service-unavailable"


async def test_software_version_and_time(client):
    version = await client.plugin["xep_0092"].get_version("localhost")
    assert version["software_version"]["name"] == "xmppd"
    assert version["software_version"]["version"]
    iq = client.make_iq_get(ito="localhost")
    iq.xml.append(ET.Element("{urn:xmpp:time}time"))
    answer = await iq.send()
    utc = answer.xml.find("{urn:xmpp:time}time/{urn:xmpp:time}utc").text
    tzo = answer.xml.find("{urn:xmpp:time}time/{urn:xmpp:time}tzo").text
    # XEP-0202 / XEP-0082: UTC with a Z, offset as +hh:mm
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", utc)
    assert (
        abs(
            datetime.datetime.fromisoformat(utc.replace("Z", "+00:00")) - datetime.datetime.now(datetime.UTC)
        ).total_seconds()
        < 60
    )
    assert re.fullmatch(r"[+-]\d\d:\d\d", tzo)
