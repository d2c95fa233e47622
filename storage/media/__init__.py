"""Media storage: the file bytes of HTTP uploads (XEP-0363), behind `MediaStore`.

Backends, chosen by ``[storage] media = "<kind>"`` with options in ``[storage.<kind>]``:

- ``filesystem`` (the default): files under ``<data_dir>/uploads/``.
- ``s3``: any S3-compatible object store, through aiobotocore.

A backend module defines a frozen dataclass ``Options`` and
``open_media(options, data_dir) -> MediaStore``. Every backend keeps the same contract,
which the tests in ``tests/storage/test_media.py`` check on each of them:

- **Keys** are opaque ids chosen by the server (the upload slot id, optionally with one
  suffix such as ``.jpg``). `is_valid_key` decides what a key may look like, and every
  method raises `InvalidKey` (a `ValueError`) for anything else, before touching the disk
  or the network. The HTTP layer reuses `is_valid_key` on the path it receives.
- ``write(key, chunks, size, content_type)`` streams the file in. It holds at most one
  chunk (filesystem) or one multipart part (S3) in memory, never the whole file. When
  the chunks do not add up to exactly `size` bytes it raises `SizeMismatch` and stores
  nothing. When it returns, the file is committed; a reader sees either the old file or
  the new one, never a part of it. Writing an existing key replaces it.
- ``read(key, start=0, end=None)`` is an async generator of the bytes ``[start, end]``,
  both inclusive (``end=None``: to the end of the file); an `end` past the end of the
  file is clamped, and a range starting at or past the end yields no bytes (the HTTP layer
  compares with `size` first and answers 416 itself). A missing key raises
  `FileNotFoundError` from the first iteration, before any bytes. A negative `start`, or
  an `end` before `start`, raises `ValueError`. A caller that may stop early wraps it
  in ``contextlib.aclosing`` so that the file or connection is released at once.
- ``size(key)`` is the size in bytes, or ``None`` when the key does not exist.
- ``delete(key)`` removes the file; deleting a missing key is not an error.
- ``has_presigned_urls`` tells the upload service whether to send clients straight to
  the store (only S3 with ``presigned = true`` can, see `storage.media.s3`).
- ``close()`` releases connections; the store is not used after it.
"""

from __future__ import annotations

import importlib
import re

from ..interfaces import MediaStore

__all__ = [
    "KINDS",
    "MAX_KEY_LENGTH",
    "InvalidKey",
    "MediaStore",
    "SizeMismatch",
    "check_key",
    "check_range",
    "is_valid_key",
    "media_module",
    "open_media",
]

KINDS = ("filesystem", "s3")
DEFAULT_KIND = "filesystem"

MAX_KEY_LENGTH = 200
# An id of letters, digits, "_" and "-", then at most one suffix of the same characters
# after a single dot. No "/", "\", "..", "%", NUL, whitespace or non-ASCII can get
# through, so a key is a safe file name and a safe URL path segment as it is.
_KEY = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)?")


class InvalidKey(ValueError):
    """A media key that is not a plain opaque id (see `is_valid_key`)."""


class SizeMismatch(ValueError):
    """The chunks given to `write` did not add up to the announced size."""


def is_valid_key(key: object) -> bool:
    """True if `key` may name a media file: ``id`` or ``id.suffix``, both made of
    ``[A-Za-z0-9_-]``, at most `MAX_KEY_LENGTH` characters."""
    return isinstance(key, str) and 0 < len(key) <= MAX_KEY_LENGTH and _KEY.fullmatch(key) is not None


def check_key(key: object) -> str:
    """Return `key` if it is valid, else raise `InvalidKey`."""
    if not is_valid_key(key):
        raise InvalidKey(f"invalid media key: {key!r}")
    return key  # type: ignore[return-value]


def check_range(start: int, end: int | None) -> None:
    """Raise `ValueError` for a byte range no backend can serve."""
    if start < 0:
        raise ValueError(f"negative range start: {start}")
    if end is not None and end < start:
        raise ValueError(f"range end {end} before start {start}")


def media_module(kind: str):
    """The backend module of `kind` (it has ``Options`` and ``open_media``)."""
    if kind not in KINDS:
        raise ValueError(f"unknown media storage {kind!r}; known: {', '.join(KINDS)}")
    return importlib.import_module(f".{kind}", __name__)


def open_media(kind: str, options, data_dir: str) -> MediaStore:
    """Build the media store `kind` from its validated ``Options`` (None: the defaults)."""
    module = media_module(kind)
    if options is None:
        try:
            options = module.Options()
        except TypeError:
            raise ValueError(f"media storage {kind!r} needs options ([storage.{kind}])") from None
    return module.open_media(options, data_dir)
