import itertools

import pytest

from tests.support.accounts import create_accounts
from tests.support.cassandra import cassandra  # noqa: F401  (fixture: one Cassandra node per test run)
from tests.support.engines import engine
from tests.support.postgresql import postgresql  # noqa: F401  (fixture: one PostgreSQL per test run)
from tests.support.s3 import s3_server  # noqa: F401  (fixture: one MinIO per test run)
from tests.support.server import XmppdProcess

_users = itertools.count()


@pytest.hookimpl(tryfirst=True)  # before xdist reads the marks into the node ids
def pytest_collection_modifyitems(config, items):
    """For pytest-xdist's --dist loadgroup (make test): the tests of a file stay on one
    worker, so a module's server starts once, and every test that needs the Cassandra
    node is on one worker, so one node serves them all."""
    for item in items:
        needs_cassandra = "cassandra" in item.nodeid.lower() or "cassandra" in item.fixturenames
        item.add_marker(pytest.mark.xdist_group("cassandra" if needs_cassandra else item.nodeid.split("::")[0]))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report ends with the tail of the log of each xmppd it used."""
    report = (yield).get_result()
    if report.failed and call.when == "call":
        for name, value in getattr(item, "funcargs", {}).items():
            for index, server in enumerate(getattr(value, "started", [value])):  # make_xmppd's too
                if isinstance(server, XmppdProcess):
                    report.sections.append((f"xmppd log ({name} {index}, tail)", server.log[-6000:]))


@pytest.fixture(scope="session")
def redis_engine(tmp_path_factory):
    """URL of the run's redis-server (tests/support/engines.py), or of the one that
    XMPPD_TEST_REDIS names; one that cannot start fails the test with the reason."""
    with engine("redis", tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="session")
def nats_engine(tmp_path_factory):
    """URL of the run's nats-server with JetStream (tests/support/engines.py), or of the
    one that XMPPD_TEST_NATS names; one that cannot start fails the test with the reason."""
    with engine("nats", tmp_path_factory.mktemp("nats")) as url:
        yield url


@pytest.fixture
def xmppd(tmp_path):
    """A running xmppd on free ports with a fresh data dir; stopped after the test."""
    server = XmppdProcess(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def make_xmppd(tmp_path):
    """Build (and clean up) xmppd processes with extra config."""
    started = []

    def make(extra_config="", **kwargs):
        directory = tmp_path / f"server{len(started)}"
        directory.mkdir()
        server = XmppdProcess(directory, extra_config, **kwargs)
        started.append(server)
        return server

    make.started = started
    yield make
    for server in started:
        server.stop()


def unique(prefix="user") -> str:
    return f"{prefix}{next(_users)}"


class AccountPool:
    """Accounts on one server, made a batch at a time and each handed out once."""

    BATCH = 20

    def __init__(self, server):
        self.server = server
        self.ready: list[str] = []

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if not self.ready:
            self.ready = create_accounts(self.server, [unique() for _ in range(self.BATCH)])
        return self.ready.pop(0)

    def take(self, count: int) -> list[str]:
        return [next(self) for _ in range(count)]

    def local(self) -> str:
        """A fresh account's user name (its JID's local part), for raw-socket logins."""
        return next(self).split("@")[0]


@pytest.fixture(scope="module")
def account_pool(server):
    """Fresh accounts (password "secret") on the module's `server` fixture."""
    return AccountPool(server)


@pytest.fixture
def users(account_pool):
    """`users(n)`: n fresh accounts for one test."""
    return account_pool.take


@pytest.fixture
async def connect(server, account_pool):
    """`await connect(jid=None, resource=None, on=server, **options)`: a client logged in
    (tests.support.inbox.online; a fresh account when jid is None) and its inbox; logged
    out after the test."""
    from tests.support.inbox import online

    opened = []

    async def connect(jid=None, resource=None, *, on=server, **options):
        client, inbox = await online(on, jid or next(account_pool), resource, **options)
        opened.append(client)
        return client, inbox

    yield connect
    for client in opened:
        if client.is_connected():
            await client.logout()
