"""Media on the local disk: one file per key under ``<data_dir>/uploads/``.

A write goes to a temporary file in ``<root>/.partial/`` (same file system, a name no
key can take since keys never start with a dot), is flushed and fsynced, then renamed
over the final name and the directory fsynced: readers see the old file or the new one,
and a crash leaves at most a stray temporary file, which the next start removes once it
is old. Every file operation runs in the default thread pool, one chunk at a time, so
the event loop never waits on the disk and memory never holds more than a chunk.

Files are made 0600 and the directories this store creates 0700, whatever the umask:
uploads (often end-to-end encrypted, but not always) are for the users who hold their
URL, not for the other accounts of the machine. A directory that exists already keeps
its mode (an admin's choice), with a warning when any user of the machine may enter it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from . import SizeMismatch, check_key, check_range

log = logging.getLogger(__name__)

READ_CHUNK_SIZE = 256 * 1024
PARTIAL_DIR = ".partial"
STALE_PARTIAL_SECONDS = 24 * 3600


@dataclass(frozen=True)
class Options:
    """``[storage.filesystem]``: where the files go.

    path: directory of the files; relative paths are taken from the data directory.
        None: ``<data_dir>/uploads``.
    """

    path: str | None = None

    def __post_init__(self):
        if self.path is not None and (not isinstance(self.path, str) or not self.path):
            raise ValueError("path: must be a non-empty string")


def open_media(options: Options, data_dir: str) -> FilesystemMediaStore:
    root = os.path.join(data_dir, options.path or "uploads")
    return FilesystemMediaStore(root)


class FilesystemMediaStore:
    has_presigned_urls = False

    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self._partial = os.path.join(self.root, PARTIAL_DIR)
        self._prepared = False

    # ------------------------------------------------------------ MediaStore

    async def write(self, key: str, chunks: AsyncIterator[bytes], size: int, content_type: str) -> None:
        check_key(key)
        if size < 0:
            raise ValueError(f"negative size: {size}")
        await self._run(self._prepare)
        final = self._path(key)
        temp = os.path.join(self._partial, f"{key}.{secrets.token_hex(8)}")
        file = await self._run(_create_private, temp)
        try:
            written = 0
            async for chunk in chunks:
                written += len(chunk)
                if written > size:
                    raise SizeMismatch(f"more than the announced {size} bytes for {key!r}")
                if chunk:
                    await self._run(file.write, chunk)
            if written != size:
                raise SizeMismatch(f"{written} bytes instead of {size} for {key!r}")
            await self._run(_commit, file, temp, final)
        except BaseException:
            await self._run(_discard, file, temp)
            raise

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        check_key(key)
        check_range(start, end)
        file = await self._run(open, self._path(key), "rb")
        try:
            if start:
                await self._run(file.seek, start)
            remaining = None if end is None else end - start + 1
            while remaining is None or remaining > 0:
                want = READ_CHUNK_SIZE if remaining is None else min(READ_CHUNK_SIZE, remaining)
                chunk = await self._run(file.read, want)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            # Not through the executor: a generator closed while its loop shuts down
            # cannot await any more, and closing a read-only file does not block.
            file.close()

    async def size(self, key: str) -> int | None:
        check_key(key)
        try:
            stat = await self._run(os.stat, self._path(key))
        except FileNotFoundError:
            return None
        return stat.st_size

    async def delete(self, key: str) -> None:
        check_key(key)
        try:
            await self._run(os.unlink, self._path(key))
        except FileNotFoundError:
            pass

    async def close(self) -> None:
        pass

    # ------------------------------------------------------------ internals

    def _path(self, key: str) -> str:
        return os.path.join(self.root, key)

    @staticmethod
    async def _run(func, *args):
        return await asyncio.get_running_loop().run_in_executor(None, functools.partial(func, *args))

    def _prepare(self) -> None:
        """Create the directories and sweep old partial files (once per store)."""
        if self._prepared:
            return
        for directory in (self.root, self._partial):
            try:
                os.makedirs(directory, 0o700)  # the mode is the last directory's
            except FileExistsError:
                if os.stat(directory).st_mode & 0o007:
                    log.warning("event=media-directory-not-private path=%s fix='chmod o-rwx %s'", directory, directory)
        cutoff = time.time() - STALE_PARTIAL_SECONDS
        with os.scandir(self._partial) as entries:
            for entry in entries:
                try:
                    if entry.is_file() and entry.stat().st_mtime < cutoff:
                        os.unlink(entry.path)
                except FileNotFoundError:
                    pass
        self._prepared = True


def _create_private(path: str):
    """A new file open for writing, readable by the server's user only."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


def _commit(file, temp: str, final: str) -> None:
    file.flush()
    os.fsync(file.fileno())
    file.close()
    os.replace(temp, final)
    directory = os.open(os.path.dirname(final), os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _discard(file, temp: str) -> None:
    file.close()
    try:
        os.unlink(temp)
    except FileNotFoundError:
        pass
