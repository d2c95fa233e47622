"""The [cluster] section: a node refuses storage that lives in one process, and bad
values, naming the keys (`xmppd --check-config`, as start-up does)."""

import pytest

from tests.integration.test_ctl import xmppd

ENGINE = "[cluster]\nengine = 'redis://127.0.0.1:6379'\n"


@pytest.mark.parametrize(
    "toml,expected",
    [
        (ENGINE, "storage.default: 'sqlite' keeps its data in one process; with cluster.engine set"),
        (ENGINE + "[storage]\ndefault = 'memory'\n", "storage.default: 'memory' keeps its data in one process"),
        (
            ENGINE + "[storage]\ndefault = 'cassandra'\narchive = 'sqlite'\n",
            "storage.archive: 'sqlite' keeps its data in one process; with cluster.engine set",
        ),
        ("[cluster]\nengine = 'localhost:6379'\n", "cluster.engine: must be a redis://"),
        ("[cluster]\nheartbeat = 2.0\nnode_timeout = 3.0\n", "cluster.node_timeout: must be more than twice"),
        ("[cluster]\nheartbeat = 0\n", "cluster.heartbeat: must be positive"),
    ],
)
def test_cluster_config_refused_naming_the_keys(tmp_path, toml, expected):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    result = xmppd("--check-config", "--config", str(path))
    assert result.returncode == 2, result.stdout
    assert str(path) in result.stderr and expected in result.stderr


def test_cluster_with_cassandra_storage_is_accepted(tmp_path):
    path = tmp_path / "good.toml"
    path.write_text(ENGINE + "[storage]\ndefault = 'cassandra'\n")
    result = xmppd("--check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
