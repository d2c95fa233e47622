"""End to end: what Conversations' compliance tester (XEP-0479) checks on a server beyond
the XEPs' own tests: the server's XEP-0115 caps in the stream features (section 6.3),
whose 'ver' is the hash of its disco#info; the XEP-0280 'urn:xmpp:carbons:rules:0'
feature; XEP-0157 contact addresses in the server's disco#info."""

import re

import pytest

from tests.support.raw import RawClient
from tests.support.server import XmppdProcess
from xmppd.client import Client

CAPS = re.compile(r"<c xmlns=['\"]http://jabber.org/protocol/caps['\"]([^>]*)/>")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = XmppdProcess(
        tmp_path_factory.mktemp("compliance"),
        extra_config="""
        [extensions.contact_info]
        abuse = ["mailto:abuse@localhost", "xmpp:abuse@localhost"]
        admin = ["xmpp:admin@localhost"]
        """,
    ).start()
    yield process
    process.stop()


def caps_in(features: str) -> dict[str, str]:
    match = CAPS.search(features)
    assert match, f"no XEP-0115 <c/> in the stream features: {features}"
    return dict(re.findall(r"(\w+)=['\"]([^'\"]*)['\"]", match.group(1)))


def forms_of(info) -> dict:
    """The XEP-0128 forms of a disco#info result by FORM_TYPE."""
    found = {}
    for form in info["substanzas"]:
        if "FORM_TYPE" in form.get_fields():
            form_type = form["values"]["FORM_TYPE"]
            found[form_type[0] if isinstance(form_type, list) else form_type] = form["values"]
    return found


async def stream_features(server, account_pool) -> tuple[dict, dict]:
    """The caps offered before authentication and after it (before TLS, where TLS is
    required, only <starttls/> is offered: RFC 6120 section 5.3.1)."""
    raw = RawClient()
    try:
        secured = caps_in(await raw.secure(server.port))
        await raw.authenticate(account_pool.local(), "secret")
        authenticated = caps_in((await raw.open_stream()).group(1))
    finally:
        await raw.close()
    return secured, authenticated


async def test_stream_features_carry_the_servers_caps_hashed_from_its_disco_info(server, account_pool, users):
    before, after = await stream_features(server, account_pool)
    assert before == after
    caps = before
    assert caps["hash"] == "sha-1" and caps["node"] and caps["ver"]

    (jid,) = users(1)
    client = Client(jid, "secret", verify_tls=False)
    await client.login("127.0.0.1", server.port)
    try:
        disco = client.plugin["xep_0030"]
        info = (await disco.get_info("localhost"))["disco_info"]
        # slixmpp's own XEP-0115 section 5.1 algorithm, forms (XEP-0157) included.
        assert client.plugin["xep_0115"].generate_verstring(info, "sha-1") == caps["ver"]
        assert "http://jabber.org/network/serverinfo" in forms_of(info)
        # Section 6.2: disco#info to node#ver is the same answer.
        by_node = (await disco.get_info("localhost", node=f"{caps['node']}#{caps['ver']}"))["disco_info"]
        assert by_node["node"] == f"{caps['node']}#{caps['ver']}"
        assert set(by_node["features"]) == set(info["features"])
        with pytest.raises(Exception) as caught:
            await disco.get_info("localhost", node=f"{caps['node']}#not-the-ver")
        assert caught.value.condition == "item-not-found"
    finally:
        await client.logout()


async def test_contact_addresses_and_carbons_rules_in_the_servers_disco(server, users):
    (jid,) = users(1)
    client = Client(jid, "secret", verify_tls=False)
    await client.login("127.0.0.1", server.port)
    try:
        info = (await client.plugin["xep_0030"].get_info("localhost"))["disco_info"]
        assert {"urn:xmpp:carbons:2", "urn:xmpp:carbons:rules:0"} <= set(info["features"])
        serverinfo = forms_of(info)["http://jabber.org/network/serverinfo"]
        assert serverinfo["abuse-addresses"] == ["mailto:abuse@localhost", "xmpp:abuse@localhost"]
        assert serverinfo["admin-addresses"] == ["xmpp:admin@localhost"]
        assert "support-addresses" not in serverinfo
    finally:
        await client.logout()


async def test_the_example_configs_contact_addresses_reach_the_servers_disco(tmp_path):
    """conf/xmppd.toml as deployed, with its [extensions.contact_info] block switched on
    the way its comment shows."""

    def with_contacts(text: str) -> str:
        block = "#[extensions.contact_info]\n#abuse = []\n#admin = []\n"
        assert block in text
        return text.replace(
            block,
            '[extensions.contact_info]\nabuse = ["mailto:abuse@example.org"]\nadmin = ["xmpp:admin@example.org"]\n',
        )

    process = XmppdProcess(tmp_path).use_example_config(with_contacts)
    process.start()
    try:
        jid = process.adduser("reader", "pencil12")
        client = Client(jid, "pencil12", verify_tls=False)
        await client.login("127.0.0.1", process.port)
        try:
            info = (await client.plugin["xep_0030"].get_info("example.org"))["disco_info"]
        finally:
            await client.logout()
    finally:
        process.stop()
    serverinfo = forms_of(info)["http://jabber.org/network/serverinfo"]
    assert serverinfo["abuse-addresses"] == ["mailto:abuse@example.org"]
    assert serverinfo["admin-addresses"] == ["xmpp:admin@example.org"]
