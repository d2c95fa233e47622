"""The storage backends the contract suite runs on.

To add a backend: add its kind to BACKENDS and a branch to make_backend.
"""

import weakref

import pytest

BACKENDS = ["memory", "sqlite", "postgresql", "cassandra"]

# The memory backends by tmp_path while a test holds them: its data lives in the object.
_memory_backends = weakref.WeakValueDictionary()


async def make_backend(kind, tmp_path):
    """A new, not yet started backend of `kind`.

    The same tmp_path must give the same data (the reopen test closes a backend and
    makes it again); a new tmp_path (each test gets one) must give an empty backend.
    """
    if kind == "memory":
        from xmppd.storage.memory import Options, open_backend

        backend = _memory_backends.get(tmp_path)
        if backend is None:
            backend = _memory_backends[tmp_path] = open_backend(Options(), str(tmp_path))
        return backend
    if kind == "sqlite":
        from xmppd.storage.sqlite import Options, open_backend

        return open_backend(Options(), str(tmp_path))
    if kind == "postgresql":
        # A real server (tests/support/postgresql.py), started once per run; one
        # database, emptied with TRUNCATE for each new tmp_path.
        from tests.support.postgresql import contract_backend

        return await contract_backend(tmp_path)
    if kind == "cassandra":
        # A real node (tests/support/cassandra.py), started once per run; one keyspace,
        # emptied with TRUNCATE for each new tmp_path. A node that cannot start fails
        # the test with the reason.
        from tests.support.cassandra import contract_backend

        return await contract_backend(tmp_path)
    raise ValueError(f"unknown storage backend {kind!r}")


@pytest.fixture(params=BACKENDS)
def backend_kind(request):
    if request.param == "postgresql":
        request.getfixturevalue("postgresql")  # the server starts here, in the main thread
    return request.param


@pytest.fixture
def new_backend(backend_kind, tmp_path):
    """make_backend for this test's kind and tmp_path: each call opens the same data."""
    return lambda: make_backend(backend_kind, tmp_path)


@pytest.fixture
async def backend(backend_kind, tmp_path):
    backend = await make_backend(backend_kind, tmp_path)
    await backend.start()
    yield backend
    await backend.close()
