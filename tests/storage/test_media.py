"""The MediaStore contract, run on every media backend: the filesystem and a real
S3-compatible server (MinIO, started by tests/support/s3.py through the `s3_server`
fixture of tests/conftest.py; tests with "s3" in their id).

The contract itself is written down in storage/media/__init__.py.
"""

from __future__ import annotations

import os
import random
import secrets
import tracemalloc

import pytest

from tests.support.s3 import S3Server, setup_timeout
from xmppd.storage.media import (
    InvalidKey,
    SizeMismatch,
    filesystem,
    is_valid_key,
    media_module,
    open_media,
)

# The first S3 test may have to build MinIO before it can start it.
pytestmark = pytest.mark.timeout(setup_timeout())

KiB = 1024
MiB = 1024 * KiB
CHUNK = 64 * KiB + 7  # odd on purpose: chunks straddle the S3 part boundaries

BACKENDS = [
    pytest.param("filesystem", id="filesystem"),
    pytest.param("s3", id="s3", marks=pytest.mark.s3),
]

INVALID_KEYS = [
    "",
    ".",
    "..",
    "../etc/passwd",
    "..%2fetc",
    "a/b",
    "/abs",
    "a\\b",
    "a\x00b",
    "a%2Fb",
    "a%2fb",
    "%2e%2e",
    "a%5Cb",
    ".hidden",
    "a.b.c",
    "a..b",
    "a.",
    " a",
    "a b",
    "a\n",
    "a\t",
    "caf\u00e9",
    "\u0661\u0662",
    "x" * 201,
    "a:b",
    "a?b",
    "a#b",
    "a*",
    "~a",
]
VALID_KEYS = ["a", "Z9", "abc-DEF_123", "abc.jpg", "q1w2e3.tar-gz", "x" * 200, "-", "_._"]


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


async def chunked(data: bytes, chunk: int = CHUNK):
    for start in range(0, len(data), chunk):
        yield data[start : start + chunk]


async def read_all(media, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in media.read(key, start, end)])


# ---------------------------------------------------------------- fixtures


@pytest.fixture(params=BACKENDS)
def media_options(request, tmp_path):
    """(kind, Options) of a media store of its own for one test."""
    kind = request.param
    if kind == "filesystem":
        return kind, filesystem.Options()
    pytest.importorskip("aiobotocore")
    server: S3Server = request.getfixturevalue("s3_server")
    return kind, _s3_options(server)


def _s3_options(server: S3Server, **overrides):
    from xmppd.storage.media.s3 import Options

    settings = dict(
        bucket=server.bucket,
        endpoint_url=server.endpoint_url,
        region=server.region,
        access_key=server.access_key,
        secret_key=server.secret_key,
        key_prefix=f"test-{secrets.token_hex(4)}/",
    )  # tests share the bucket
    settings.update(overrides)
    return Options(**settings)


@pytest.fixture
async def media(media_options, tmp_path):
    kind, options = media_options
    store = open_media(kind, options, str(tmp_path))
    yield store
    await store.close()


@pytest.fixture
async def s3_media(s3_server, tmp_path):
    pytest.importorskip("aiobotocore")
    store = open_media("s3", _s3_options(s3_server, presigned=True), str(tmp_path))
    yield store
    await store.close()


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("size", [1, 100 * KiB, 20 * MiB], ids=["1B", "100KiB", "20MiB"])
async def test_round_trip_is_byte_identical(media, size):
    data = payload(size, seed=size)
    await media.write("file-1.bin", chunked(data), size, "application/octet-stream")
    assert await media.size("file-1.bin") == size
    assert await read_all(media, "file-1.bin") == data


async def test_empty_file(media):
    await media.write("empty", chunked(b""), 0, "text/plain")
    assert await media.size("empty") == 0
    assert await read_all(media, "empty") == b""
    assert await read_all(media, "empty", 0, 10) == b""


async def test_file_of_exactly_one_part_and_one_byte_more(media):
    from xmppd.storage.media.s3 import PART_SIZE

    for size in (PART_SIZE, PART_SIZE + 1):
        data = payload(size, seed=size)
        await media.write("edge", chunked(data, 1 * MiB), size, "application/octet-stream")
        assert await media.size("edge") == size
        assert await read_all(media, "edge") == data


async def test_write_replaces_existing_file(media):
    await media.write("same", chunked(b"old contents"), 12, "text/plain")
    await media.write("same", chunked(b"new"), 3, "text/plain")
    assert await media.size("same") == 3
    assert await read_all(media, "same") == b"new"


async def test_keys_are_distinct_files(media):
    await media.write("one", chunked(b"1"), 1, "text/plain")
    await media.write("one.txt", chunked(b"22"), 2, "text/plain")
    assert await read_all(media, "one") == b"1"
    assert await read_all(media, "one.txt") == b"22"


async def test_writing_20_mib_holds_far_less_than_20_mib(media):
    size = 20 * MiB
    data = payload(size, seed=7)  # allocated before tracing starts
    assert await media.size("big") is None  # and the client (S3's models) loaded
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        await media.write("big", chunked(data), size, "application/octet-stream")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # One 8 MiB part at most for S3, one chunk for the filesystem.
    assert peak < 10 * MiB, f"peak traced allocation {peak / MiB:.1f} MiB"
    assert await media.size("big") == size


# ---------------------------------------------------------------- ranges

RANGE_SIZE = 600 * KiB  # more than one read chunk of either backend


@pytest.mark.parametrize(
    "start, end",
    [
        (0, 0),
        (0, None),
        (10, 19),
        (0, RANGE_SIZE - 1),
        (RANGE_SIZE - 1, None),
        (RANGE_SIZE - 1, RANGE_SIZE - 1),
        (1000, 1000 + 300 * KiB),
        (300 * KiB, None),
        (5, RANGE_SIZE + 100),  # end past the end: clamped
    ],
)
async def test_read_range(media, start, end):
    data = payload(RANGE_SIZE, seed=3)
    await media.write("ranged", chunked(data), RANGE_SIZE, "application/octet-stream")
    expected = data[start:] if end is None else data[start : end + 1]
    assert await read_all(media, "ranged", start, end) == expected


@pytest.mark.parametrize("start, end", [(RANGE_SIZE, None), (RANGE_SIZE, RANGE_SIZE + 5), (RANGE_SIZE + 10, None)])
async def test_range_past_the_end_is_empty(media, start, end):
    await media.write("ranged", chunked(payload(RANGE_SIZE)), RANGE_SIZE, "text/plain")
    assert await read_all(media, "ranged", start, end) == b""


@pytest.mark.parametrize("start, end", [(-1, None), (-1, 5), (10, 9)])
async def test_impossible_range_is_refused(media, start, end):
    await media.write("ranged", chunked(b"0123456789abcdef"), 16, "text/plain")
    with pytest.raises(ValueError):
        await read_all(media, "ranged", start, end)


# ---------------------------------------------------------------- missing keys, delete


async def test_size_of_missing_key_is_none(media):
    assert await media.size("missing") is None


async def test_read_of_missing_key_raises_file_not_found(media):
    with pytest.raises(FileNotFoundError):
        await read_all(media, "missing")
    with pytest.raises(FileNotFoundError):
        await read_all(media, "missing", 5, 10)


async def test_delete(media):
    await media.write("doomed.png", chunked(b"bytes"), 5, "image/png")
    await media.delete("doomed.png")
    assert await media.size("doomed.png") is None
    with pytest.raises(FileNotFoundError):
        await read_all(media, "doomed.png")


async def test_delete_of_missing_key_is_not_an_error(media):
    await media.delete("never-written")
    assert await media.size("never-written") is None


# ---------------------------------------------------------------- bad writes


@pytest.mark.parametrize(
    "announced, given",
    [(10, 9), (10, 11), (0, 1), (9 * MiB, 9 * MiB - 1), (9 * MiB, 9 * MiB + 1)],
    ids=["short", "long", "empty-long", "multipart-short", "multipart-long"],
)
async def test_wrong_size_stores_nothing(media, announced, given):
    with pytest.raises(SizeMismatch):
        await media.write("wrong", chunked(payload(given), 1 * MiB), announced, "text/plain")
    assert await media.size("wrong") is None


async def test_failed_write_keeps_the_old_file(media):
    await media.write("kept", chunked(b"original"), 8, "text/plain")

    async def broken():
        yield b"partial"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await media.write("kept", broken(), 100, "text/plain")
    assert await read_all(media, "kept") == b"original"


# ---------------------------------------------------------------- keys


@pytest.mark.parametrize("key", VALID_KEYS)
def test_valid_keys(key):
    assert is_valid_key(key)


@pytest.mark.parametrize("key", INVALID_KEYS + [None, 42, b"abc"])
def test_invalid_keys(key):
    assert not is_valid_key(key)


async def test_invalid_keys_are_rejected_by_every_method(media):
    for key in INVALID_KEYS:
        with pytest.raises(InvalidKey):
            await media.write(key, chunked(b"x"), 1, "text/plain")
        with pytest.raises(InvalidKey):
            await read_all(media, key)
        with pytest.raises(InvalidKey):
            await media.size(key)
        with pytest.raises(InvalidKey):
            await media.delete(key)


# ---------------------------------------------------------------- filesystem specifics


async def test_filesystem_default_directory_is_uploads_in_data_dir(tmp_path):
    store = open_media("filesystem", None, str(tmp_path))
    await store.write("here.txt", chunked(b"hi"), 2, "text/plain")
    assert (tmp_path / "uploads" / "here.txt").read_bytes() == b"hi"
    assert os.listdir(tmp_path / "uploads" / filesystem.PARTIAL_DIR) == []


async def test_filesystem_path_option(tmp_path):
    store = open_media("filesystem", filesystem.Options(path="media/files"), str(tmp_path))
    await store.write("there", chunked(b"hi"), 2, "text/plain")
    assert (tmp_path / "media" / "files" / "there").read_bytes() == b"hi"
    absolute = tmp_path / "elsewhere"
    store = open_media("filesystem", filesystem.Options(path=str(absolute)), str(tmp_path))
    await store.write("there", chunked(b"yo"), 2, "text/plain")
    assert (absolute / "there").read_bytes() == b"yo"


async def test_filesystem_failed_write_leaves_no_partial_file(tmp_path):
    store = open_media("filesystem", None, str(tmp_path))
    with pytest.raises(SizeMismatch):
        await store.write("short", chunked(b"abc"), 4, "text/plain")
    assert sorted(os.listdir(tmp_path / "uploads")) == [filesystem.PARTIAL_DIR]
    assert os.listdir(tmp_path / "uploads" / filesystem.PARTIAL_DIR) == []


async def test_filesystem_has_no_presigned_urls(tmp_path):
    assert open_media("filesystem", None, str(tmp_path)).has_presigned_urls is False


# ---------------------------------------------------------------- S3 specifics


@pytest.mark.s3
async def test_s3_presigned_put_then_presigned_get(s3_media):
    import aiohttp

    size = 100 * KiB
    data = payload(size, seed=11)
    assert s3_media.has_presigned_urls
    put = await s3_media.presigned_put_url("direct.jpg", size, "image/jpeg", expires=120)
    assert put.method == "PUT"
    assert put.headers == {"Content-Length": str(size), "Content-Type": "image/jpeg"}
    get_url = await s3_media.presigned_get_url("direct.jpg", expires=120)
    async with aiohttp.ClientSession() as http:
        async with http.put(put.url, data=data, headers=put.headers) as reply:
            assert reply.status == 200, await reply.text()
        async with http.get(get_url) as reply:
            assert reply.status == 200
            assert reply.headers["Content-Type"] == "image/jpeg"
            assert await reply.read() == data
    assert await s3_media.size("direct.jpg") == size
    assert await read_all(s3_media, "direct.jpg") == data


@pytest.mark.s3
async def test_s3_presigned_get_with_content_disposition(s3_media):
    import aiohttp

    await s3_media.write("named", chunked(b"hello"), 5, "text/plain")
    url = await s3_media.presigned_get_url("named", 60, content_disposition='attachment; filename="a.txt"')
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as reply:
            assert reply.status == 200
            assert reply.headers["Content-Disposition"] == 'attachment; filename="a.txt"'
            assert await reply.read() == b"hello"


@pytest.mark.s3
@pytest.mark.parametrize(
    "body_size, content_type",
    [
        (1001, "image/jpeg"),  # longer than signed
        (999, "image/jpeg"),  # shorter than signed
        (1000, "text/html"),  # another type than signed
    ],
    ids=["longer", "shorter", "other-type"],
)
async def test_s3_presigned_put_refuses_other_length_or_type(s3_media, body_size, content_type):
    import aiohttp

    put = await s3_media.presigned_put_url("pinned", 1000, "image/jpeg", expires=120)
    headers = dict(put.headers, **{"Content-Type": content_type})
    del headers["Content-Length"]  # aiohttp sets the true length of the body
    async with aiohttp.ClientSession() as http:
        async with http.put(put.url, data=payload(body_size), headers=headers) as reply:
            assert reply.status == 403, await reply.text()
    assert await s3_media.size("pinned") is None


@pytest.mark.s3
async def test_s3_presigned_urls_validate_their_arguments(s3_media):
    with pytest.raises(InvalidKey):
        await s3_media.presigned_put_url("../x", 1, "text/plain")
    with pytest.raises(InvalidKey):
        await s3_media.presigned_get_url("a/b")
    with pytest.raises(ValueError):
        await s3_media.presigned_put_url("ok", 1, "text/plain", expires=0)
    with pytest.raises(ValueError):
        await s3_media.presigned_put_url("ok", 1, "text/plain\r\nX-Evil: 1")


@pytest.mark.s3
async def test_s3_failed_multipart_upload_is_aborted(s3_server, s3_media):
    with pytest.raises(SizeMismatch):
        await s3_media.write("aborted", chunked(payload(9 * MiB), 1 * MiB), 10 * MiB, "application/octet-stream")
    from tests.support.s3 import _client

    client = _client(s3_server)
    try:
        uploads = client.list_multipart_uploads(Bucket=s3_server.bucket, Prefix=s3_media.options.key_prefix).get(
            "Uploads", []
        )
    finally:
        client.close()
    assert uploads == []


def test_s3_options_are_validated():
    Options = media_module("s3").Options
    Options(bucket="media")
    for bad in [
        dict(bucket="A_B"),
        dict(bucket="ok-bucket", endpoint_url="ftp://x"),
        dict(bucket="ok-bucket", access_key="k"),
        dict(bucket="ok-bucket", secret_key="s"),
        dict(bucket="ok-bucket", key_prefix="no-slash"),
        dict(bucket="ok-bucket", key_prefix="../"),
    ]:
        with pytest.raises(ValueError):
            Options(**bad)
    assert "secret" not in repr(Options(bucket="media", access_key="k", secret_key="secret"))


def test_unknown_media_kind_or_missing_options():
    with pytest.raises(ValueError):
        open_media("tape", None, "/tmp")
    with pytest.raises(ValueError):
        open_media("s3", None, "/tmp")  # a bucket is required
