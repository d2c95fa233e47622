"""storage/backup.py on a server whose archives live in another backend than the rest
([storage] archive): the backup takes the archives from the archive backend only (not the
stale ones the default backend still holds), and a restore puts them back there, with
the media files. The end-to-end story on a running xmppd is tests/integration/test_backup.py."""

import time

import pytest

from xmppd.accounts import HASHES
from xmppd.protocol.sasl import derive_scram_credentials
from xmppd.storage import open_backend
from xmppd.storage.backup import BackupError, ServerStores, backup, restore
from xmppd.storage.interfaces import Account, ArchivedStanza, ArchiveQuery, Upload
from xmppd.storage.media import open_media
from xmppd.storage.memory import Options as MemoryOptions

ALICE = "alice@localhost"
FILE = b"\x00bytes of a photo\xff" * 1000


def message(n: int) -> ArchivedStanza:
    return ArchivedStanza(
        id=f"{n:04d}",
        when=1_700_000_000.0 + n,
        with_="bob@localhost",
        payload=f"<message xmlns='jabber:client'><body>{n}</body></message>".encode(),
    )


async def chunks(data: bytes):
    yield data


def server_stores() -> ServerStores:
    return ServerStores(open_backend("memory", MemoryOptions(), None), open_backend("memory", MemoryOptions(), None))


@pytest.fixture
async def made(tmp_path):
    stores, media = server_stores(), open_media("filesystem", None, str(tmp_path / "origin"))
    await stores.start()
    secrets = {name: derive_scram_credentials("secret", name) for name in HASHES}
    await stores.accounts.create(Account(ALICE, secrets, 1.0))
    await stores.default.archive("archive").append(ALICE, message(99))  # stale, not the server's
    for n in range(3):
        await stores.archive("archive").append(ALICE, message(n))
    now = time.time()
    await stores.uploads.add(Upload("photo-1", ALICE, "photo.jpg", len(FILE), "image/jpeg", now, now + 3600, True))
    await media.write("photo-1", chunks(FILE), len(FILE), "image/jpeg")
    manifest = await backup(
        stores,
        None,
        media,
        str(tmp_path / "backup"),
        ["localhost"],
        {"default": "memory", "archive": "memory", "media": "filesystem"},
    )
    await stores.close()
    return manifest


async def test_split_backends_back_up_and_restore_archives_where_they_live(made, tmp_path):
    assert made["counts"]["archive archive"] == 3 and made["media"] == {"files": 1, "bytes": len(FILE)}
    target, media = server_stores(), open_media("filesystem", None, str(tmp_path / "target"))
    await target.start()
    said = []
    before, after = await restore(target, media, str(tmp_path / "backup"), progress=said.append, served=["example.org"])
    assert "warning: the config does not serve localhost; their users are restored" in said[0]
    assert before == after == made["counts"]
    assert await target.default.archive_names() == []
    restored = await target.archives.archive("archive").query(ALICE, ArchiveQuery())
    assert [item.id for item in restored.items] == ["0000", "0001", "0002"]
    assert b"".join([chunk async for chunk in media.read("photo-1")]) == FILE

    with pytest.raises(BackupError, match=r"the target storage is not empty \(1 accounts"):
        await restore(target, media, str(tmp_path / "backup"))
    again, _ = await restore(target, media, str(tmp_path / "backup"), force=True)  # nothing doubled
    assert await target.archives.archive("archive").count(ALICE) == 3 and again == before


async def test_backup_goes_into_a_new_or_empty_directory_only(tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "file").write_text("x")
    with pytest.raises(BackupError, match="is not empty"):
        await backup(server_stores(), None, None, str(tmp_path / "used"), [], {})
    with pytest.raises(BackupError, match="no SQLite database at"):
        await backup(server_stores(), str(tmp_path / "missing.sqlite"), None, str(tmp_path / "new"), [], {})
