"""End to end: what the server writes to the disk is for the server's user only (issue
20 item 7), whatever the umask it starts with: the data directory 0700; the SQLite
database (password keys, archives) and its -wal and -shm files 0600; uploaded files 0600
in 0700 directories; the self-signed certificate's key 0600. A database left readable
by an earlier version is made private at the next start; a data directory that others
may enter, made by someone else, is kept as it is, with a warning."""

import os
import stat
from contextlib import contextmanager

from tests.support.accounts import create_accounts
from tests.support.inbox import online
from tests.support.upload import http, payload, upload

UPLOAD = "upload.localhost"


@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


async def test_data_database_uploads_and_keys_are_private(make_xmppd):
    server = make_xmppd()
    data = server.directory / "data"
    with umask(0):  # the worst an inherited umask can be
        server.start()
    (alice,) = create_accounts(server, ["modes"])
    client, _ = await online(server, alice)
    async with http() as session:
        await upload(client, UPLOAD, session, payload(1000))
    await client.logout()

    uploads = data / "uploads"
    stored = [entry for entry in uploads.iterdir() if not entry.name.startswith(".")]
    assert len(stored) == 1
    modes = {path.name: mode(path) for path in (data, uploads, uploads / ".partial")}
    modes |= {
        path.name: mode(path)
        for path in (
            data / "xmppd.sqlite",
            data / "xmppd.sqlite-wal",
            data / "xmppd.sqlite-shm",
            stored[0],
            data / "localhost.key",
        )
    }
    assert modes == {name: 0o700 for name in ("data", "uploads", ".partial")} | {
        name: 0o600
        for name in ("xmppd.sqlite", "xmppd.sqlite-wal", "xmppd.sqlite-shm", stored[0].name, "localhost.key")
    }


async def test_a_readable_database_is_made_private_and_an_open_data_dir_is_reported(make_xmppd):
    server = make_xmppd()
    data = server.directory / "data"
    server.start()
    server.stop()
    os.chmod(data, 0o755)
    os.chmod(data / "xmppd.sqlite", 0o644)
    server.start()
    assert mode(data / "xmppd.sqlite") == 0o600
    assert mode(data) == 0o755  # not ours to change
    await server.wait_for_log(f"event=data-dir-not-private path={data}")
