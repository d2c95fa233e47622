"""End to end on PostgreSQL: xmppd processes whose every store is in a database of the
run's server (tests/support/postgresql.py), whose tables the first xmppd creates at
start-up. One xmppd: accounts and a roster, an offline message delivered at login, a
MAM query with paging, each checked against what it committed in the database; a
restart of PostgreSQL under it; `xmppctl storage copy` from SQLite into PostgreSQL. Two
xmppd on one database, as the nodes of a cluster run: an account registered on one
logs in on the other, and the roster versions both hand out for one roster never
collide."""

import asyncio
import json

import aiohttp
import pytest

from tests.conftest import unique
from tests.integration.test_storage_copy import EXPECTED, counts, populate, read
from tests.support.inbox import NS_ROSTER, message, roster_push
from tests.support.messaging import archive, bare, bodies, connect, round_trip, rsm, send, subscribe_both, with_id
from tests.support.postgresql import new_database, private_server, storage_config
from tests.support.raw import RawClient
from tests.support.server import XmppdProcess, can_log_in, free_port
from xmppd.storage import open_backend
from xmppd.storage.sqlite import Options as SqliteOptions

NS_DELAY = "urn:xmpp:delay"
NS_REGISTER = "jabber:iq:register"
QUICK_STOP = "graceful_shutdown_timeout = 1"
REGISTRATION = """
[extensions.register]
allow_registration = true
registration_throttle_seconds = 0
"""


@pytest.fixture(scope="module")
def database(postgresql):
    """The DSN of the module's database, empty until the first xmppd starts on it."""
    return new_database("e2e")


def node(database, directory) -> XmppdProcess:
    return XmppdProcess(
        directory, storage_config(database, pool_size=4) + REGISTRATION, server_section=QUICK_STOP
    ).start()


@pytest.fixture(scope="module")
def server(database, tmp_path_factory):
    process = node(database, tmp_path_factory.mktemp("postgresql-a"))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def other(database, server, tmp_path_factory):
    """A second xmppd on the same database (started after `server` made the tables)."""
    process = node(database, tmp_path_factory.mktemp("postgresql-b"))
    yield process
    process.stop()


@pytest.fixture
async def login(server):
    """Log users in (tests.support.messaging.connect), on `server` unless told; log them
    out after the test."""
    opened = []

    async def login(jid, resource="phone", on=server):
        user = await connect(on, jid, resource)
        opened.append(user)
        return user

    yield login
    for user in opened:
        if user.client.is_connected():
            await user.logout()


@pytest.fixture
async def stored(database):
    """The database, opened from the test: what the servers committed."""
    from xmppd.storage.postgresql import Options, open_backend

    backend = open_backend(Options(dsn=database, pool_size=2))
    await backend.start()
    yield backend
    await backend.close()


async def register(server, user: str, password: str) -> str:
    """XEP-0077 in-band registration before login, on a raw stream; the iq's type."""
    client = RawClient(server.domain)
    await client.secure(server.port)
    try:
        await client.send(
            f"<iq type='set' id='reg'><query xmlns='{NS_REGISTER}'><username>{user}</username>"
            f"<password>{password}</password></query></iq>"
        )
        return (await client.expect(r"<iq\b[^>]*\bid=['\"]reg['\"][^>]*\btype=['\"](\w+)['\"]")).group(1)
    finally:
        await client.close()


async def roster_version(user, ver: str | None = None):
    """A roster get (with the client's cached `ver`, XEP-0237): (version, contacts), or
    None when the server answered that the cached copy is current."""
    cached = f" ver='{ver}'" if ver is not None else ""
    result = await user.iq("get", bare(user.jid), f"<query xmlns='{NS_ROSTER}'{cached}/>")
    assert result.get("type") == "result"
    query = result.find(f"{{{NS_ROSTER}}}query")
    if query is None:
        return None
    return int(query.get("ver")), {item.get("jid") for item in query.iter(f"{{{NS_ROSTER}}}item")}


# ------------------------------------------------------------------ one xmppd


async def test_postgresql_login_and_roster_subscription(users, login, stored):
    alice, bob = users(2)
    assert (await stored.accounts.get(alice)).secrets  # made by the test's xmppctl code
    a, b = await login(alice), await login(bob)
    await subscribe_both(a, b)
    for user, contact in ((a, bob), (b, alice)):
        version, contacts = await roster_version(user)
        assert contact in contacts
        assert await roster_version(user, str(version)) is None
        stored_version, stored_items = await stored.rosters.get(bare(user.jid))
        assert stored_version == version and stored_items[contact].subscription == "both"


async def test_postgresql_offline_messages_are_delivered_at_login(users, login, stored):
    alice, bob = users(2)
    a = await login(alice)
    said = [f"while you were away {n}" for n in range(3)]
    for body in said:
        send(a, bob, body=body)
    await round_trip(a)
    assert await stored.archive("offline").count(bob) == 3

    b = await login(bob)
    received = [await b.inbox.wait(message(from_=a.jid, body=body)) for body in said]
    assert all(m.find(f"{{{NS_DELAY}}}delay") is not None for m in received)

    async def emptied():  # the delivered messages are deleted after they went out
        while await stored.archive("offline").count(bob):
            await asyncio.sleep(0.05)

    await asyncio.wait_for(emptied(), 10)


async def test_postgresql_archive_query_with_paging(users, login, stored):
    alice, bob = users(2)
    a, b = await login(alice), await login(bob)
    said = []
    for n in range(7):
        sender, receiver = (a, b) if n % 2 == 0 else (b, a)
        await receiver.inbox.wait(with_id(send(sender, bare(receiver.jid), body=f"chat {n}")))
        said.append(f"chat {n}")
    await round_trip(a)
    await round_trip(b)

    first, fin = await archive(a, rsm="<max>4</max>")
    assert bodies(first) == said[:4] and rsm(fin, "count") == "7" and fin.get("complete") is None
    rest, fin = await archive(a, rsm=f"<max>4</max><after>{first[-1][0]}</after>")
    assert bodies(rest) == said[4:] and fin.get("complete") == "true"
    last, fin = await archive(a, rsm="<max>2</max><before/>")
    assert bodies(last) == said[5:]
    assert await stored.archive("archive").count(alice) == 7


def test_postgresql_unreachable_stops_start_up_naming_it(tmp_path):
    port = free_port()  # nothing listens there
    process = XmppdProcess(tmp_path, storage_config(f"postgresql://xmppd@127.0.0.1:{port}/xmppd", connect_timeout=2.0))
    with pytest.raises(RuntimeError):
        process.start()
    assert f"storage: cannot use PostgreSQL at 127.0.0.1 port {port}, database xmppd" in process.log


async def health(server) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{server.http_port}/health") as response:
            return response.status, json.loads(await response.text())


@pytest.fixture
def own_postgresql():
    """A PostgreSQL server of the test's own, to stop and start again."""
    with private_server() as database:
        yield database


async def test_xmppd_serves_again_once_a_restarted_postgresql_is_back(own_postgresql, make_xmppd):
    """A restart of the database (an upgrade, a fail-over) under a running xmppd: /health
    says so while it is down, and the same xmppd serves again once it is back."""
    process = make_xmppd(storage_config(own_postgresql.dsn, pool_size=2), server_section=QUICK_STOP).start()
    jid = process.adduser(unique("restart"))
    assert await can_log_in(process, jid, "secret")

    own_postgresql.stop()
    status, body = await health(process)
    assert status == 503 and body["storage"] in ("unavailable", "timeout"), body
    own_postgresql.start()

    async def healthy():
        while (await health(process))[0] != 200:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(healthy(), 20)
    assert await can_log_in(process, jid, "secret")


async def test_copy_from_sqlite_into_postgresql_reads_back_equal(postgresql, tmp_path):
    """The story of test_storage_copy.py, into PostgreSQL: `storage init` makes the
    tables, then every kind of store is copied and reads back equal."""
    from xmppd.storage.postgresql import Options

    dsn = await asyncio.to_thread(new_database, "copy")
    process = XmppdProcess(tmp_path, f'[storage.postgresql]\ndsn = "{dsn}"\n')
    data = tmp_path / "data"
    source = open_backend("sqlite", SqliteOptions(), str(data))
    await source.start()
    try:
        await populate(source)
    finally:
        await source.close()
    init = [process.ctl("storage", "init", "--backend", "postgresql").stdout for _ in range(2)]
    assert init == ["postgresql: schema versions [1] applied\n", "postgresql: schema up to date\n"]
    for _ in range(2):  # a rerun duplicates nothing
        copied = process.ctl("storage", "copy", "--from", "sqlite", "--to", "postgresql", check=False)
        assert copied.returncode == 0, copied.stdout + copied.stderr
        assert counts(copied.stdout) == {name: (count, count) for name, count in EXPECTED.items()}
    assert await read("postgresql", Options(dsn=dsn), None) == await read("sqlite", SqliteOptions(), data)


# ------------------------------------------------------------------ two xmppd on one database


async def test_an_account_registered_on_one_node_logs_in_on_the_other(server, other):
    user = unique("shared")
    assert await register(server, user, "pass on a") == "result"
    assert await can_log_in(other, user, "pass on a")
    assert not await can_log_in(other, user, "another pass")
    assert await register(other, user, "pass on b") == "error"  # one account table: a conflict
    assert await can_log_in(server, user, "pass on a")


async def test_two_nodes_never_hand_out_one_roster_version_twice(server, other, users, login, stored):
    """One user on both nodes adds contacts on both at once: every version is new (no node
    counts on its own), and each node then serves the whole roster at the last version
    (no node answers from a copy the other made stale)."""
    (alice,) = users(1)
    on_a, on_b = await login(alice, "a"), await login(alice, "b", on=other)
    contacts = {node: [f"{node}{n}@elsewhere.example" for n in range(10)] for node in ("a", "b")}

    async def add_all(user, node) -> list[int]:
        versions = []
        for contact in contacts[node]:
            result = await user.iq("set", bare(user.jid), f"<query xmlns='{NS_ROSTER}'><item jid='{contact}'/></query>")
            assert result.get("type") == "result"
            push = await user.inbox.wait(roster_push(contact))
            versions.append(int(push.find(f"{{{NS_ROSTER}}}query").get("ver")))
        return versions

    versions_a, versions_b = await asyncio.gather(add_all(on_a, "a"), add_all(on_b, "b"))
    every = versions_a + versions_b
    assert sorted(every) == list(range(1, 21)), (versions_a, versions_b)
    assert versions_a == sorted(versions_a) and versions_b == sorted(versions_b)

    added = set(contacts["a"]) | set(contacts["b"])
    for user in (on_a, on_b):
        assert await roster_version(user) == (20, added)
        assert await roster_version(user, "20") is None
    assert (await stored.rosters.get(alice))[0] == 20
