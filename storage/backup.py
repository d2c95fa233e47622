"""Whole-server backups (``xmppctl backup DIR`` / ``xmppctl restore DIR``): every store of
the backends the config uses, and the media files, into a directory that any backend
kind can be restored from.

Format, version 1 (`FORMAT_VERSION`), one directory:

- ``data.sqlite``: every store (accounts with their SCRAM secrets, rosters, every named
  archive and key-value store, rooms, pubsub, upload records) in the schema of the SQLite
  backend (storage/sqlite/NNN_*.sql, its version in ``PRAGMA user_version``): a portable
  container that a newer xmppd upgrades when it opens it.
- ``media/<upload id>``: the bytes of each completed upload (the id is the media key).
- ``manifest.json``, written last (a directory without one is an unfinished backup):
  ``format`` ("xmppd-backup"), ``version``, ``created`` (UTC), ``domains``, ``source``
  (the backend kinds: default, archive, media), ``counts`` (storage.copy.census of
  data.sqlite, store by store), ``media`` (files, bytes) and ``sha256`` of data.sqlite.

Consistency while the server runs: a server all on SQLite is copied with SQLite's online
backup API, one snapshot of the whole file. Other backends are read through the store
interfaces by storage/copy.py, the same walk as ``xmppctl storage copy``: each row is
consistent, the whole is not a point in time (for that: PostgreSQL's pg_dump, Cassandra's
``nodetool snapshot``). Media files are copied after the data, so an upload finished
meanwhile has no record and one removed meanwhile is left out with a warning.

Restore copies data.sqlite into the configured backends with storage/copy.py, then the
media files into the media store. It refuses a target that holds data unless forced,
a manifest it cannot read or of another version, and a data.sqlite whose checksum
differs from the manifest's.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable

from . import StorageBackend
from .copy import census, copy
from .sqlite import Options as SqliteOptions
from .sqlite import SqliteBackend
from .sqlite.database import backup_file

FORMAT = "xmppd-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DATA = "data.sqlite"
MEDIA = "media"
CHUNK = 256 * 1024


class BackupError(Exception):
    """A backup or restore that cannot be done; the message says why."""


class ServerStores:
    """The stores of a server as one StorageBackend: archives from `archives` (the
    backend of [storage] archive), everything else from `default` (they may be one)."""

    def __init__(self, default: StorageBackend, archives: StorageBackend):
        self.default, self.archives = default, archives
        self.accounts, self.rosters, self.rooms = default.accounts, default.rosters, default.rooms
        self.pubsub, self.uploads = default.pubsub, default.uploads

    def archive(self, name: str):
        return self.archives.archive(name)

    def keyvalue(self, name: str):
        return self.default.keyvalue(name)

    async def archive_names(self) -> list[str]:
        return await self.archives.archive_names()

    async def keyvalue_names(self) -> list[str]:
        return await self.default.keyvalue_names()

    async def start(self) -> None:
        await self.default.start()
        if self.archives is not self.default:
            try:
                await self.archives.start()
            except BaseException:
                await self.default.close()
                raise

    async def close(self) -> None:
        try:
            if self.archives is not self.default:
                await self.archives.close()
        finally:
            await self.default.close()


def _container(directory: str) -> SqliteBackend:
    return SqliteBackend(SqliteOptions(path=os.path.abspath(os.path.join(directory, DATA))), directory)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


async def _file_chunks(path: str) -> AsyncIterator[bytes]:
    with open(path, "rb") as file:
        while chunk := await asyncio.to_thread(file.read, CHUNK):
            yield chunk


# ---------------------------------------------------------------- backup


async def backup(
    stores: ServerStores,
    sqlite_path: str | None,
    media,
    directory: str,
    domains: Iterable[str],
    source: dict[str, str],
    progress: Callable[[str], None] = lambda text: None,
) -> dict:
    """Back up `stores` and `media` into the new or empty `directory`; return the
    manifest. `sqlite_path`: the server's one SQLite file when every store is in it
    (then snapshotted with the online backup API; `stores` is not read)."""
    domains = list(domains)
    if sqlite_path is not None and not os.path.isfile(sqlite_path):
        raise BackupError(f"no SQLite database at {sqlite_path}: nothing to back up")
    if os.path.isdir(directory) and os.listdir(directory):
        raise BackupError(f"{directory} is not empty; a backup goes into a new or empty directory")
    os.makedirs(os.path.join(directory, MEDIA), mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)  # password keys and messages: the owner's only
    if sqlite_path is not None:
        await asyncio.to_thread(backup_file, sqlite_path, os.path.join(directory, DATA))
        progress("sqlite snapshot")
    container = _container(directory)
    await container.start()
    try:
        if sqlite_path is None:
            await copy(stores, container, domains, progress=progress)
        counts = await census(container, domains)
        files = size = 0
        for jid in [jid for domain in domains for jid in await container.accounts.list(domain)]:
            for upload in await container.uploads.list(jid):
                if upload.completed:
                    written = await _save_media(media, upload.id, os.path.join(directory, MEDIA, upload.id), progress)
                    files, size = files + (written is not None), size + (written or 0)
        progress("media")
    finally:
        await container.close()
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "domains": domains,
        "source": source,
        "counts": counts,
        "media": {"files": files, "bytes": size},
        "sha256": {DATA: await asyncio.to_thread(_sha256, os.path.join(directory, DATA))},
    }
    temporary = os.path.join(directory, f".{MANIFEST}")
    with open(temporary, "w") as file:
        json.dump(manifest, file, indent=2)
        file.write("\n")
    os.replace(temporary, os.path.join(directory, MANIFEST))
    return manifest


async def _save_media(media, key: str, path: str, progress) -> int | None:
    """Copy one media file to `path`; its size, or None when it is gone."""
    written = 0
    try:
        with open(path, "xb") as file:
            os.chmod(path, 0o600)
            async for chunk in media.read(key):
                written += len(chunk)
                await asyncio.to_thread(file.write, chunk)
    except FileNotFoundError:
        os.unlink(path)
        progress(f"warning: the media file of upload {key} is gone; left out")
        return None
    return written


# ---------------------------------------------------------------- restore


def read_manifest(directory: str) -> dict:
    """The manifest of the backup in `directory`, checked against this format and data.sqlite."""
    path = os.path.join(directory, MANIFEST)
    try:
        with open(path, "rb") as file:
            manifest = json.load(file)
    except FileNotFoundError:
        raise BackupError(f"{path} does not exist: not an xmppd backup, or an unfinished one") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BackupError(f"{path} is corrupted (not JSON: {exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f'{path} is corrupted or not an xmppd backup manifest (no "format": "{FORMAT}")')
    version = manifest.get("version")
    if version != FORMAT_VERSION:
        raise BackupError(
            f"{path}: backup format version {version!r} is unknown to this xmppd (it reads version {FORMAT_VERSION})"
        )
    domains, checksums = manifest.get("domains"), manifest.get("sha256")
    checksum = checksums.get(DATA) if isinstance(checksums, dict) else None
    if not (isinstance(domains, list) and all(isinstance(d, str) for d in domains) and isinstance(checksum, str)):
        raise BackupError(f'{path} is corrupted ("domains" or "sha256" missing or malformed)')
    data = os.path.join(directory, DATA)
    if not os.path.isfile(data) or _sha256(data) != checksum:
        raise BackupError(f"{data} is missing or does not match the checksum of the manifest (corrupted)")
    return manifest


async def restore(
    stores: ServerStores,
    media,
    directory: str,
    force: bool = False,
    progress: Callable[[str], None] = lambda text: None,
    served: Iterable[str] | None = None,
) -> tuple[dict, dict]:
    """Restore the backup in `directory` into `stores` and `media` (started);
    (counts of the backup, counts of the target afterwards). `served`: the domains of
    the target's config, for a warning about the backup's others."""
    manifest = await asyncio.to_thread(read_manifest, directory)
    domains = manifest["domains"]
    others = sorted(set(domains) - set(served if served is not None else domains))
    if others:
        progress(
            f"warning: the config does not serve {', '.join(others)}; their users are restored "
            "but cannot log in until it does"
        )
    present = {name: count for name, count in (await census(stores, domains)).items() if count}
    if present and not force:
        raise BackupError(
            "the target storage is not empty ("
            + ", ".join(f"{count} {name}" for name, count in present.items())
            + "); restore into empty storage, or give --force to merge into it"
        )
    container = _container(directory)
    await container.start()
    try:
        await copy(container, stores, domains, progress=progress)
        before = await census(container, domains)
        for jid in [jid for domain in domains for jid in await container.accounts.list(domain)]:
            for upload in await container.uploads.list(jid):
                path = os.path.join(directory, MEDIA, upload.id)
                if upload.completed and os.path.isfile(path):
                    await media.write(upload.id, _file_chunks(path), os.path.getsize(path), upload.content_type)
        progress("media")
    finally:
        await container.close()
    return before, await census(stores, domains)
