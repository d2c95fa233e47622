"""XEP-0050 Ad-Hoc Commands and the XEP-0133 admin commands end to end: an admin (the
test server names admin@localhost) drives them with slixmpp; protocol errors with a raw
client."""

import asyncio

import pytest
import slixmpp
from lxml import etree

from tests.conftest import unique
from tests.support.raw import RawClient
from tests.support.server import XmppdProcess, can_log_in
from xmppd.client import Client

NS_COMMANDS = "http://jabber.org/protocol/commands"
NS_ADMIN = "http://jabber.org/protocol/admin"
NS_DATA = "jabber:x:data"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
ADMIN_COMMANDS = {
    f"{NS_ADMIN}#{name}"
    for name in (
        "add-user",
        "delete-user",
        "change-user-password",
        "get-online-users-num",
        "get-online-users-list",
        "announce",
    )
}
MULTI = {"accountjids": "jid-multi", "announcement": "text-multi"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # Its tests check that logins fail, all from 127.0.0.1.
    process = XmppdProcess(
        tmp_path_factory.mktemp("adhoc"), c2s_section="auth_failure_delay = 0\nauth_failures_per_ip = 1000"
    ).start()
    process.adduser("admin", "admin password")
    yield process
    process.stop()


@pytest.fixture
async def admin(server):
    client = Client(f"admin@{server.domain}", "admin password", verify_tls=False)
    await client.login("127.0.0.1", server.port)
    yield client
    await client.logout()


async def online(server, user: str, password: str = "pencil12") -> Client:
    client = Client(f"{user}@{server.domain}", password, verify_tls=False)
    await client.login("127.0.0.1", server.port)
    return client


async def run(client: Client, server, name: str, values: dict | None = None):
    """Execute admin command `name`; submit `values` to its form when given.
    Returns (the first reply, the last reply)."""
    adhoc = client.plugin["xep_0050"]
    node = f"{NS_ADMIN}#{name}"
    first = await adhoc.send_command(server.domain, node)
    if values is None:
        return first, first
    form = client.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden", value=NS_ADMIN)
    for var, value in values.items():
        form.add_field(var=var, ftype=MULTI.get(var), value=value)
    last = await adhoc.send_command(
        server.domain, node, action="complete", payload=form, sessionid=first["command"]["sessionid"]
    )
    return first, last


async def account(admin: Client, server, user: str, password: str = "pencil12") -> None:
    """Create an account with add-user itself (much faster than a run of xmppctl)."""
    _, last = await run(admin, server, "add-user", {"accountjid": f"{user}@{server.domain}", "password": password})
    assert last["command"]["status"] == "completed"


def form_fields(reply) -> dict:
    return {field["var"]: field for field in reply["command"]["form"]["fields"]}


# ------------------------------------------------------------------ discovery


async def test_commands_advertised_and_listed_for_admins_only(server, admin):
    info = await admin.plugin["xep_0030"].get_info(jid=server.domain)
    assert NS_COMMANDS in info["disco_info"]["features"]
    items = await admin.plugin["xep_0030"].get_items(jid=server.domain, node=NS_COMMANDS)
    listed = {node: (jid, name) for jid, node, name in items["disco_items"]["items"]}
    assert ADMIN_COMMANDS <= set(listed)
    assert all(jid == server.domain and name for jid, name in listed.values())
    node_info = await admin.plugin["xep_0030"].get_info(jid=server.domain, node=f"{NS_ADMIN}#add-user")
    assert ("automation", "command-node", None, "Add a User") in node_info["disco_info"]["identities"]
    assert {NS_COMMANDS, NS_DATA} <= set(node_info["disco_info"]["features"])

    await account(admin, server, user := unique("plain"), "pencil12")
    plain = await online(server, user)
    items = await plain.plugin["xep_0030"].get_items(jid=server.domain, node=NS_COMMANDS)
    assert not ADMIN_COMMANDS & {node for _, node, _ in items["disco_items"]["items"]}
    with pytest.raises(slixmpp.exceptions.IqError) as refused:
        await plain.plugin["xep_0030"].get_info(jid=server.domain, node=f"{NS_ADMIN}#add-user")
    assert refused.value.condition == "forbidden"
    await plain.logout()


# ------------------------------------------------------------------ XEP-0133


async def test_admin_adds_a_user_who_then_logs_in(server, admin):
    user = unique("added")
    first, last = await run(
        admin,
        server,
        "add-user",
        {"accountjid": f"{user}@{server.domain}", "password": "fresh password", "password-verify": "fresh password"},
    )
    assert first["command"]["status"] == "executing"
    fields = form_fields(first)
    assert fields["FORM_TYPE"]["type"] == "hidden"
    form_type = first["command"]["form"].xml.find(f"{{{NS_DATA}}}field[@var='FORM_TYPE']/{{{NS_DATA}}}value")
    assert form_type.text == NS_ADMIN
    assert fields["accountjid"]["type"] == "jid-single" and fields["accountjid"]["required"]
    assert fields["password"]["type"] == fields["password-verify"]["type"] == "text-private"
    assert last["command"]["status"] == "completed"
    assert last["command"]["sessionid"] == first["command"]["sessionid"]
    assert await can_log_in(server, user, "fresh password")


@pytest.mark.parametrize(
    "values,condition,specific",
    [
        ({"accountjid": "{existing}", "password": "x1", "password-verify": "x1"}, "conflict", None),
        ({"accountjid": "{new}", "password": "one", "password-verify": "two"}, "bad-request", "bad-payload"),
        ({"accountjid": "{new}"}, "bad-request", "bad-payload"),
        ({"accountjid": "someone@elsewhere.example", "password": "x1"}, "bad-request", "bad-payload"),
        ({"accountjid": "{new}/resource", "password": "x1"}, "bad-request", "bad-payload"),
    ],
)
async def test_add_user_refusals(server, admin, values, condition, specific):
    existing, new = unique("exists"), unique("new")
    await account(admin, server, existing, "pencil12")
    values = {
        var: value.format(existing=f"{existing}@{server.domain}", new=f"{new}@{server.domain}")
        for var, value in values.items()
    }
    with pytest.raises(slixmpp.exceptions.IqError) as refused:
        await run(admin, server, "add-user", values)
    assert refused.value.condition == condition
    if specific:
        assert refused.value.iq["error"].xml.find(f"{{{NS_COMMANDS}}}{specific}") is not None
    assert not await can_log_in(server, new, "x1")
    assert await can_log_in(server, existing, "pencil12")


async def test_non_admin_is_forbidden(server, admin):
    await account(admin, server, user := unique("plain"), "pencil12")
    plain = await online(server, user)
    victim = unique("victim")
    for name in ("add-user", "get-online-users-num", "announce"):
        with pytest.raises(slixmpp.exceptions.IqError) as refused:
            await plain.plugin["xep_0050"].send_command(server.domain, f"{NS_ADMIN}#{name}")
        assert refused.value.condition == "forbidden"
    await plain.logout()
    assert not await can_log_in(server, victim, "x1")


async def test_admin_deletes_users_and_their_sessions_end(server, admin):
    first_user, second_user = unique("doomed"), unique("doomed")
    await account(admin, server, first_user, "pencil12")
    await account(admin, server, second_user, "pencil12")
    victim = await online(server, first_user)
    gone = asyncio.get_running_loop().create_future()
    victim.add_event_handler("disconnected", lambda _: gone.done() or gone.set_result(True))
    _, last = await run(
        admin,
        server,
        "delete-user",
        {"accountjids": [f"{first_user}@{server.domain}", f"{second_user}@{server.domain}"]},
    )
    assert last["command"]["status"] == "completed"
    await asyncio.wait_for(gone, 10)
    assert not await can_log_in(server, first_user, "pencil12")
    assert not await can_log_in(server, second_user, "pencil12")


async def test_delete_unknown_user_is_item_not_found_and_deletes_nothing(server, admin):
    kept = unique("kept")
    await account(admin, server, kept, "pencil12")
    with pytest.raises(slixmpp.exceptions.IqError) as refused:
        await run(
            admin,
            server,
            "delete-user",
            {"accountjids": [f"{kept}@{server.domain}", f"{unique('ghost')}@{server.domain}"]},
        )
    assert refused.value.condition == "item-not-found"
    assert await can_log_in(server, kept, "pencil12")


async def test_admin_changes_a_password(server, admin):
    user = unique("forgetful")
    await account(admin, server, user, "old password")
    _, last = await run(
        admin, server, "change-user-password", {"accountjid": f"{user}@{server.domain}", "password": "new password"}
    )
    assert last["command"]["status"] == "completed"
    assert await can_log_in(server, user, "new password")
    assert not await can_log_in(server, user, "old password")
    with pytest.raises(slixmpp.exceptions.IqError) as refused:
        await run(
            admin,
            server,
            "change-user-password",
            {"accountjid": f"{unique('ghost')}@{server.domain}", "password": "whatever"},
        )
    assert refused.value.condition == "item-not-found"


async def test_online_users(server, admin):
    users = [unique("online"), unique("online")]
    clients = []
    for user in users:
        await account(admin, server, user, "pencil12")
        clients.append(await online(server, user))
    clients.append(await online(server, users[0]))  # a second resource: still one user
    _, listed = await run(admin, server, "get-online-users-list", {"max_items": "none"})
    assert listed["command"]["status"] == "completed"
    jids = form_fields(listed)["onlineuserjids"]["value"]
    assert {f"{user}@{server.domain}" for user in users} | {f"admin@{server.domain}"} <= set(jids)
    assert len(jids) == len(set(jids))
    counted, _ = await run(admin, server, "get-online-users-num")
    assert counted["command"]["status"] == "completed"
    assert int(form_fields(counted)["onlineusersnum"]["value"]) == len(jids)
    _, first_one = await run(admin, server, "get-online-users-list", {"max_items": "25"})
    assert len(form_fields(first_one)["onlineuserjids"]["value"]) == min(25, len(jids))
    for client in clients:
        await client.logout()


async def test_announce_reaches_every_online_session(server, admin):
    user = unique("listener")
    await account(admin, server, user, "pencil12")
    listeners = [await online(server, user), await online(server, user)]
    received = [asyncio.get_running_loop().create_future() for _ in listeners]
    for client, future in zip(listeners, received):
        client.add_event_handler("message", lambda msg, f=future: f.done() or f.set_result(msg))
    _, last = await run(admin, server, "announce", {"announcement": ["Maintenance at noon.", "Sorry."]})
    assert last["command"]["status"] == "completed"
    for future in received:
        message = await asyncio.wait_for(future, 10)
        assert message["type"] == "headline"
        assert message["from"] == server.domain
        assert message["body"] == "Maintenance at noon.\nSorry."
    for client in listeners:
        await client.logout()


# ------------------------------------------------------------------ XEP-0050 protocol


async def command(client: RawClient, iq_id: str, attributes: str, payload: str = "") -> etree._Element:
    await client.send(
        f"<iq type='set' id='{iq_id}' to='localhost'><command xmlns='{NS_COMMANDS}' {attributes}>"
        f"{payload}</command></iq>"
    )
    match = await client.expect(rf"<iq\b[^>]*\bid=['\"]{iq_id}['\"][^>]*?(?:/>|>.*?</iq>)")
    return etree.fromstring(match.group(0))


def conditions(iq: etree._Element) -> set[str]:
    error = next(child for child in iq if etree.QName(child).localname == "error")
    return {etree.QName(child).localname for child in error if etree.QName(child).localname != "text"}


@pytest.fixture
async def raw_admin(server):
    client = await RawClient().login(server.port, "admin", "admin password", resource=unique("raw"))
    yield client
    await client.close()


async def test_session_protocol(server, raw_admin):
    node = f"node='{NS_ADMIN}#change-user-password'"
    first = await command(raw_admin, "1", f"{node} action='execute'")
    reply = first.find(f"{{{NS_COMMANDS}}}command")
    session = reply.get("sessionid")
    assert reply.get("status") == "executing" and session
    actions = reply.find(f"{{{NS_COMMANDS}}}actions")
    assert actions.get("execute") == "complete" and actions.find(f"{{{NS_COMMANDS}}}complete") is not None
    assert actions.find(f"{{{NS_COMMANDS}}}next") is None
    assert reply.find(f"{{{NS_DATA}}}x").get("type") == "form"

    assert conditions(await command(raw_admin, "2", f"{node} sessionid='{session}' action='next'")) == {
        "bad-request",
        "bad-action",
    }
    assert conditions(await command(raw_admin, "3", f"{node} sessionid='{session}' action='jump'")) == {
        "bad-request",
        "malformed-action",
    }
    assert conditions(await command(raw_admin, "4", f"{node} sessionid='not-a-session'")) == {
        "bad-request",
        "bad-sessionid",
    }
    other_node = f"node='{NS_ADMIN}#add-user' sessionid='{session}'"
    assert conditions(await command(raw_admin, "5", other_node)) == {"bad-request", "bad-sessionid"}

    canceled = (await command(raw_admin, "6", f"{node} sessionid='{session}' action='cancel'")).find(
        f"{{{NS_COMMANDS}}}command"
    )
    assert canceled.get("status") == "canceled" and canceled.get("sessionid") == session
    assert conditions(await command(raw_admin, "7", f"{node} sessionid='{session}' action='complete'")) == {
        "bad-request",
        "bad-sessionid",
    }


async def test_missing_required_field_is_bad_payload(server, raw_admin):
    node = f"node='{NS_ADMIN}#change-user-password'"
    session = (await command(raw_admin, "1", node)).find(f"{{{NS_COMMANDS}}}command").get("sessionid")
    empty = f"<x xmlns='{NS_DATA}' type='submit'><field var='accountjid'><value>admin@localhost</value></field></x>"
    assert conditions(await command(raw_admin, "2", f"{node} sessionid='{session}' action='complete'", empty)) == {
        "bad-request",
        "bad-payload",
    }
    assert await can_log_in(server, "admin", "admin password")


async def test_unknown_command_is_item_not_found(server, raw_admin):
    assert conditions(await command(raw_admin, "1", f"node='{NS_ADMIN}#no-such-command'")) == {"item-not-found"}


async def test_sessions_belong_to_their_requester(server, raw_admin):
    node = f"node='{NS_ADMIN}#announce'"
    session = (await command(raw_admin, "1", node)).find(f"{{{NS_COMMANDS}}}command").get("sessionid")
    other = await RawClient().login(server.port, "admin", "admin password", resource=unique("other"))
    assert conditions(await command(other, "2", f"{node} sessionid='{session}' action='cancel'")) == {
        "bad-request",
        "bad-sessionid",
    }
    await other.close()
