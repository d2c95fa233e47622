import itertools

import pytest

from tests.support.cassandra import cassandra  # noqa: F401  (fixture: one Cassandra node per test run)
from tests.support.s3 import s3_server  # noqa: F401  (fixture: one MinIO per test run)
from tests.support.server import XmppdProcess

_users = itertools.count()


def pytest_collection_modifyitems(config, items):
    """For pytest-xdist's --dist loadgroup (make test): the tests of a file stay on one
    worker, so a module's server starts once, and every test that needs the Cassandra
    node is on one worker, so one node serves them all."""
    for item in items:
        needs_cassandra = "cassandra" in item.nodeid.lower() or "cassandra" in item.fixturenames
        item.add_marker(pytest.mark.xdist_group("cassandra" if needs_cassandra else item.nodeid.split("::")[0]))


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

    yield make
    for server in started:
        server.stop()


def unique(prefix="user") -> str:
    return f"{prefix}{next(_users)}"
