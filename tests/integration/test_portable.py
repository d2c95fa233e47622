"""`xmppctl export --xep0227` and `xmppctl import --xep0227` (XEP-0227, issue 19).

A round trip: a real xmppd's users (SCRAM secrets, roster, vCard, private XML, offline
messages, PEP) exported, imported into a fresh server, and found there by clients, who
log in with their old password. And a file written by hand after the XEP's examples
(its older namespace, plain passwords) imported the same way.
"""

import asyncio
import base64
import hashlib
import hmac
import os
import stat
import textwrap

import pytest
from lxml import etree

from tests.support.accounts import create_accounts
from tests.support.inbox import message, online, presence
from tests.support.messaging import NS_MAM, archive, connect, send, subscribe_both
from tests.support.muc import User
from tests.support.pep import item_ids, items_request, publish
from tests.support.server import XmppdProcess
from xmppd.client import Client, LoginFailed

QUICK_STOP = "graceful_shutdown_timeout = 1"
DOMAIN = "localhost"
ALICE, BOB, CAROL, DAVE = (f"{name}@{DOMAIN}" for name in ("alice", "bob", "carol", "dave"))
NODE = "urn:example:portable:0"
VCARD = "<vCard xmlns='vcard-temp'><FN>Alice Liddell</FN></vCard>"
PRIVATE = "<prefs xmlns='urn:example:prefs'><colour>blue</colour></prefs>"
NS_PIE = "urn:xmpp:pie:0"


async def login(server, jid: str, resource: str, password: str) -> User:
    client, inbox = await online(server, jid, resource, password=password)
    return User(str(client.boundjid), client, inbox)


async def fill(server) -> list[tuple[str, str]]:
    """Everything the round trip carries; alice's archive as (when, body), oldest first."""
    create_accounts(server, ["alice", "bob", "carol", "dave"])
    alice, bob = await connect(server, ALICE, "phone"), await connect(server, BOB, "phone")
    await subscribe_both(alice, bob)
    dave = await connect(server, DAVE, "phone")
    await dave.send(f"<presence to='{ALICE}' type='subscribe'/>")  # left unanswered
    await alice.inbox.wait(presence("subscribe", from_=DAVE))
    await dave.logout()
    for payload in (
        VCARD,
        f"<query xmlns='jabber:iq:private'>{PRIVATE}</query>",
        publish(NODE, "<entry xmlns='urn:example'>one</entry>", "item-1"),
    ):
        answer = await alice.iq("set", ALICE, payload)
        assert answer.get("type") == "result", etree.tostring(answer)
    for n in range(2):
        send(alice, CAROL, body=f"offline {n}")
    for n in range(3):
        send(bob, ALICE, body=f"chat {n}")
    await alice.inbox.wait(message(body="chat 2"))
    history = await archived(alice)
    assert len(history) == 5
    await alice.logout()
    await bob.logout()
    return history


async def archived(user) -> list[tuple[str, str]]:
    results, fin = await archive(user)
    assert fin.get("complete") == "true"
    stamp = f"{{{NS_MAM}}}result/{{urn:xmpp:forward:0}}forwarded/{{urn:xmpp:delay}}delay"
    return [
        (result.find(stamp).get("stamp"), message.findtext("{jabber:client}body")) for _, message, result in results
    ]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    origin = XmppdProcess(tmp_path_factory.mktemp("export"), server_section=QUICK_STOP).start()
    try:
        history = asyncio.run(fill(origin))
        path = tmp_path_factory.mktemp("file") / "server.xml"
        done = origin.ctl("export", "--xep0227", str(path), check=False)
    finally:
        origin.stop()
    return path, done, history


def imported(directory, path) -> tuple[XmppdProcess, str]:
    directory.mkdir(exist_ok=True)
    server = XmppdProcess(directory, server_section=QUICK_STOP)
    done = server.ctl("import", "--xep0227", str(path), check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return server.start(), done.stderr


def test_export_is_xep0227_with_scram_secrets_and_no_password(exported):
    path, done, _ = exported
    assert done.returncode == 0, done.stdout + done.stderr
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    root = etree.parse(str(path)).getroot()
    assert root.tag == f"{{{NS_PIE}}}server-data"
    users = {user.get("name"): user for user in root.iter(f"{{{NS_PIE}}}user")}
    assert set(users) == {"alice", "bob", "carol", "dave"} and not any(u.get("password") for u in users.values())
    mechanisms = [s.get("mechanism") for s in users["alice"].iterfind("{urn:xmpp:pie:0#scram}scram-credentials")]
    assert sorted(mechanisms) == ["SCRAM-SHA-1", "SCRAM-SHA-256"]
    assert len(users["carol"].findall(f"{{{NS_PIE}}}offline-messages/{{jabber:client}}message")) == 2


async def test_round_trip_into_a_fresh_server(exported, tmp_path):
    server, _ = imported(tmp_path, exported[0])
    try:
        alice = await connect(server, ALICE, "laptop")  # the same password, from its SCRAM keys
        await alice.inbox.wait(presence("subscribe", from_=DAVE))  # the request still waits for her
        assert await archived(alice) == exported[2]  # same messages, same times
        roster = await alice.iq("get", ALICE, "<query xmlns='jabber:iq:roster'/>")
        assert [(i.get("jid"), i.get("subscription")) for i in roster.iter("{jabber:iq:roster}item")] == [(BOB, "both")]
        vcard = await alice.iq("get", ALICE, "<vCard xmlns='vcard-temp'/>")
        assert vcard.findtext("{vcard-temp}vCard/{vcard-temp}FN") == "Alice Liddell"
        private = await alice.iq(
            "get", ALICE, "<query xmlns='jabber:iq:private'><prefs xmlns='urn:example:prefs'/></query>"
        )
        assert private.findtext("{jabber:iq:private}query/{urn:example:prefs}prefs/{urn:example:prefs}colour") == "blue"
        assert item_ids(await alice.iq("get", ALICE, items_request(NODE))) == ["item-1"]
        carol = await connect(server, CAROL, "phone")
        for n in range(2):
            delivered = await carol.inbox.wait(message(from_=f"{ALICE}/phone", body=f"offline {n}"))
            assert delivered.find("{urn:xmpp:delay}delay") is not None
        await alice.logout()
        await carol.logout()
    finally:
        server.stop()


HAND_WRITTEN = textwrap.dedent("""\
    <?xml version='1.0' encoding='UTF-8'?>
    <server-data xmlns='http://www.xmpp.org/extensions/xep-0227.html#ns'>
      <host jid='localhost'>
        <user name='juliet' password='s3crEt'>
          <query xmlns='jabber:iq:roster'>
            <item jid='romeo@montague.net'
                  name='Romeo'
                  subscription='both'>
              <group>Friends</group>
            </item>
          </query>
          <vCard xmlns='vcard-temp'>
            <FN>Juliet Capulet</FN>
          </vCard>
          <offline-messages>
            <message xmlns='jabber:client'
                     from='romeo@montague.net/orchard'
                     to='juliet@localhost/balcony'
                     type='chat'>
              <body>Neither, fair saint, if either thee dislike.</body>
              <delay xmlns='urn:xmpp:delay'
                     from='localhost'
                     stamp='1469-07-21T00:32:29Z'>Offline Storage</delay>
            </message>
          </offline-messages>
        </user>
        <user name='hamlet' password='2b0Rnot2B'>
          <query xmlns="jabber:iq:private">
            <exodus xmlns="exodus:prefs">
              <defaultnick>Hamlet</defaultnick>
            </exodus>
          </query>
        </user>
      </host>
      <host jid='montague.net'>
        <user name='romeo' password='iLuvJuLi3T'/>
      </host>
    </server-data>
    """)


async def test_import_of_a_file_written_after_the_xeps_examples(tmp_path):
    path = tmp_path / "by-hand.xml"
    path.write_text(HAND_WRITTEN)
    server, warnings = imported(tmp_path / "server", path)
    try:
        assert "host 'montague.net' is not served here" in warnings
        juliet = await login(server, "juliet@localhost", "balcony", "s3crEt")
        roster = await juliet.iq("get", "juliet@localhost", "<query xmlns='jabber:iq:roster'/>")
        item = roster.find("{jabber:iq:roster}query/{jabber:iq:roster}item")
        assert (
            item.get("jid"),
            item.get("name"),
            item.get("subscription"),
            item.findtext("{jabber:iq:roster}group"),
        ) == ("romeo@montague.net", "Romeo", "both", "Friends")
        vcard = await juliet.iq("get", "juliet@localhost", "<vCard xmlns='vcard-temp'/>")
        assert vcard.findtext("{vcard-temp}vCard/{vcard-temp}FN") == "Juliet Capulet"
        kept = await juliet.inbox.wait(message(body="Neither, fair saint, if either thee dislike."))
        assert kept.find("{urn:xmpp:delay}delay").get("stamp") == "1469-07-21T00:32:29Z"
        hamlet = await login(server, "hamlet@localhost", "castle", "2b0Rnot2B")
        private = await hamlet.iq(
            "get", "hamlet@localhost", "<query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'/></query>"
        )
        assert private.findtext("{jabber:iq:private}query/{exodus:prefs}exodus/{exodus:prefs}defaultnick") == "Hamlet"
        await juliet.logout()
        await hamlet.logout()
    finally:
        server.stop()
    again = server.ctl("import", "--xep0227", str(path), check=False)  # nothing is overwritten
    assert again.returncode == 0 and "juliet@localhost: the account exists already" in again.stderr


def scram_sha1(password: str, salt: bytes, iterations: int) -> dict[str, str]:
    """RFC 5802's keys, computed here without xmppd's code, as another server would."""
    salted = hashlib.pbkdf2_hmac("sha1", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha1").digest()
    server_key = hmac.new(salted, b"Server Key", "sha1").digest()
    return {
        "salt": base64.b64encode(salt).decode(),
        "server": base64.b64encode(server_key).decode(),
        "stored": base64.b64encode(hashlib.sha1(client_key).digest()).decode(),
    }


async def test_import_of_scram_credentials_written_by_hand(tmp_path):
    """XEP-0227 1.1: <scram-credentials/> instead of a password; this one has SCRAM-SHA-1
    keys only (what Prosody exports), so SCRAM-SHA-1 logs in with them."""
    keys = scram_sha1("iLuvJuLi3T", b"salt of romeo", 4096)
    path = tmp_path / "scram.xml"
    path.write_text(
        textwrap.dedent(f"""\
        <?xml version='1.0' encoding='UTF-8'?>
        <server-data xmlns='urn:xmpp:pie:0'>
          <host jid='localhost'>
            <user name='romeo'>
              <scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'>
                <iter-count>4096</iter-count>
                <salt>{keys["salt"]}</salt>
                <server-key>{keys["server"]}</server-key>
                <stored-key>{keys["stored"]}</stored-key>
              </scram-credentials>
            </user>
          </host>
        </server-data>
        """)
    )
    server, _ = imported(tmp_path / "server", path)
    try:
        for password, works in (("iLuvJuLi3T", True), ("wrong", False)):
            client = Client("romeo@localhost/pc", password, verify_tls=False, sasl_mech="SCRAM-SHA-1")
            try:
                await client.login("127.0.0.1", server.port)
                assert works
                await client.logout()
            except LoginFailed:
                client.abort()
                assert not works
    finally:
        server.stop()


async def test_import_follows_xincludes_of_relative_files_only(tmp_path):
    """XEP-0227 section 5: the main file includes a host file, which includes a user file."""
    (tmp_path / "localhost").mkdir()
    (tmp_path / "main.xml").write_text(
        "<server-data xmlns='urn:xmpp:pie:0' xmlns:xi='http://www.w3.org/2001/XInclude'>"
        "<xi:include href='localhost.xml'/></server-data>"
    )
    (tmp_path / "localhost.xml").write_text(
        "<host xmlns='urn:xmpp:pie:0' xmlns:xi='http://www.w3.org/2001/XInclude' jid='localhost'>"
        "<xi:include href='localhost/mercutio.xml'/></host>"
    )
    (tmp_path / "localhost" / "mercutio.xml").write_text(
        "<user xmlns='urn:xmpp:pie:0' name='mercutio' password='queen-mab'>"
        "<vCard xmlns='vcard-temp'><FN>Mercutio</FN></vCard></user>"
    )
    server, _ = imported(tmp_path / "server", tmp_path / "main.xml")
    try:
        mercutio = await login(server, "mercutio@localhost", "verona", "queen-mab")
        vcard = await mercutio.iq("get", "mercutio@localhost", "<vCard xmlns='vcard-temp'/>")
        assert vcard.findtext("{vcard-temp}vCard/{vcard-temp}FN") == "Mercutio"
        await mercutio.logout()
    finally:
        server.stop()
    # An included file is held to the same rules as the main one.
    (tmp_path / "localhost" / "mercutio.xml").write_text(
        "<user xmlns='urn:xmpp:pie:0' xmlns:xi='http://www.w3.org/2001/XInclude' name='mercutio'>"
        "<xi:include href='../../../etc/hostname' parse='text'/></user>"
    )
    refused = server.ctl("import", "--xep0227", str(tmp_path / "main.xml"), check=False)
    assert refused.returncode == 1 and "only XIncludes of relative files below its directory" in refused.stderr


def test_import_refuses_a_file_that_is_not_xep0227(tmp_path):
    path = tmp_path / "other.xml"
    path.write_text("<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>")
    refused = XmppdProcess(tmp_path).ctl("import", "--xep0227", str(path), check=False)
    assert refused.returncode == 1 and "a document type declaration is not accepted" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    path.write_text("<server-data xmlns='urn:example'/>")
    refused = XmppdProcess(tmp_path).ctl("import", "--xep0227", str(path), check=False)
    assert refused.returncode == 1 and "not XEP-0227's <server-data/>" in refused.stderr
