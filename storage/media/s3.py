"""Media in an S3-compatible object store (AWS S3, MinIO, Ceph RGW, ...), via aiobotocore.

One object per key, named ``<key_prefix><key>``. Files up to `PART_SIZE` go up with a
single PutObject, larger ones with a multipart upload of `PART_SIZE` parts; either way
at most one part is in memory, never the whole file. A failed or short multipart upload
is aborted, so no half file ever becomes visible.

With ``presigned = true`` the upload service hands clients URLs signed here
(`presigned_put_url`, `presigned_get_url`) and the bytes go straight between the client
and the object store. The signed PUT pins Content-Length and Content-Type: the store
refuses a body of any other size or type.
"""

from __future__ import annotations

import asyncio
import functools
import io
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from . import SizeMismatch, check_key, check_range

PART_SIZE = 8 * 1024 * 1024  # S3 wants >= 5 MiB for every part but the last
READ_CHUNK_SIZE = 256 * 1024
PART_READ_SIZE = 256 * 1024  # the most a part hands out per read() (see _PartReader)
MAX_PRESIGN_EXPIRES = 7 * 24 * 3600  # SigV4's limit
_MISSING_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
_KEY_PREFIX = re.compile(r"(?:[A-Za-z0-9_-][A-Za-z0-9_.-]*/)*")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


@dataclass(frozen=True)
class Options:
    """``[storage.s3]``.

    bucket: the bucket, which must exist.
    endpoint_url: the S3 API's URL for a non-AWS store (MinIO, Ceph...); None: AWS.
    region: the bucket's region (signatures depend on it).
    access_key, secret_key: credentials; both None: the usual AWS chain
        (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws, instance roles).
    presigned: send uploading and downloading clients straight to the store with
        signed URLs instead of relaying the bytes through xmppd.
    key_prefix: prepended to every object name, e.g. "xmppd/uploads/"; empty or
        "/"-separated segments ending with "/".
    """

    bucket: str
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    presigned: bool = False
    key_prefix: str = ""

    def __post_init__(self):
        if not isinstance(self.bucket, str) or not _BUCKET.fullmatch(self.bucket):
            raise ValueError(f"bucket: not a valid S3 bucket name: {self.bucket!r}")
        if self.endpoint_url is not None and not re.match(r"https?://[^/]", self.endpoint_url):
            raise ValueError(f"endpoint_url: must be an http:// or https:// URL: {self.endpoint_url!r}")
        if not self.region:
            raise ValueError("region: must not be empty")
        if (self.access_key is None) != (self.secret_key is None):
            raise ValueError("access_key, secret_key: give both or neither")
        if not _KEY_PREFIX.fullmatch(self.key_prefix):
            raise ValueError(f"key_prefix: must be empty or end with '/': {self.key_prefix!r}")


@dataclass(frozen=True)
class PresignedRequest:
    """A request a client may make once, until `expires` seconds after signing."""

    method: str
    url: str
    headers: dict[str, str]  # to send exactly as given, or the store refuses


def open_media(options: Options, data_dir: str) -> S3MediaStore:
    return S3MediaStore(options)


class S3MediaStore:
    def __init__(self, options: Options):
        self.options = options
        self._client = None
        self._exit_stack: AsyncExitStack | None = None
        self._lock = asyncio.Lock()

    @property
    def has_presigned_urls(self) -> bool:
        return self.options.presigned

    # ------------------------------------------------------------ MediaStore

    async def write(self, key: str, chunks: AsyncIterator[bytes], size: int, content_type: str) -> None:
        name = self._name(key)
        if size < 0:
            raise ValueError(f"negative size: {size}")
        client = await self._get_client()
        if size <= PART_SIZE:
            part = _PartBuffer(size)
            async for chunk in chunks:
                if part.add(chunk):
                    raise SizeMismatch(f"more than the announced {size} bytes for {key!r}")
            if part.length != size:
                raise SizeMismatch(f"{part.length} bytes instead of {size} for {key!r}")
            await client.put_object(
                Bucket=self.options.bucket, Key=name, Body=part.reader(), ContentLength=size, ContentType=content_type
            )
            return
        upload = await client.create_multipart_upload(Bucket=self.options.bucket, Key=name, ContentType=content_type)
        upload_id = upload["UploadId"]
        try:
            parts = []
            received = 0
            part = _PartBuffer(PART_SIZE)

            async def send(part: _PartBuffer) -> None:
                number = len(parts) + 1
                reply = await client.upload_part(
                    Bucket=self.options.bucket,
                    Key=name,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=part.reader(),
                    ContentLength=part.length,
                )
                parts.append({"PartNumber": number, "ETag": reply["ETag"]})

            async for chunk in chunks:
                received += len(chunk)
                if received > size:
                    raise SizeMismatch(f"more than the announced {size} bytes for {key!r}")
                rest = part.add(chunk)
                while rest is not None:  # the part is full: send it, start the next
                    await send(part)
                    part.clear()
                    rest = part.add(rest)
            if received != size:
                raise SizeMismatch(f"{received} bytes instead of {size} for {key!r}")
            if part.length:
                await send(part)
            await client.complete_multipart_upload(
                Bucket=self.options.bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            await asyncio.shield(self._abort(client, name, upload_id))
            raise

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        name = self._name(key)
        check_range(start, end)
        client = await self._get_client()
        request = {"Bucket": self.options.bucket, "Key": name}
        if start or end is not None:
            request["Range"] = f"bytes={start}-{'' if end is None else end}"
        try:
            reply = await client.get_object(**request)
        except client.exceptions.ClientError as error:
            code = _error_code(error)
            if code in _MISSING_CODES:
                raise FileNotFoundError(f"no media {key!r}") from None
            if code == "InvalidRange":  # the range starts at or past the end
                return
            raise
        body = reply["Body"]
        try:
            async for chunk in body.iter_chunks(READ_CHUNK_SIZE):
                yield chunk
        finally:
            body.close()

    async def size(self, key: str) -> int | None:
        name = self._name(key)
        client = await self._get_client()
        try:
            reply = await client.head_object(Bucket=self.options.bucket, Key=name)
        except client.exceptions.ClientError as error:
            if _error_code(error) in _MISSING_CODES:
                return None
            raise
        return reply["ContentLength"]

    async def delete(self, key: str) -> None:
        name = self._name(key)
        client = await self._get_client()
        await client.delete_object(Bucket=self.options.bucket, Key=name)

    async def close(self) -> None:
        async with self._lock:
            if self._exit_stack is not None:
                stack, self._exit_stack, self._client = self._exit_stack, None, None
                await stack.aclose()

    # ------------------------------------------------------------ presigned URLs

    async def presigned_put_url(self, key: str, size: int, content_type: str, expires: int = 300) -> PresignedRequest:
        """A PUT of exactly `size` bytes of `content_type` to `key`, valid `expires` s."""
        name = self._name(key)
        if size < 0:
            raise ValueError(f"negative size: {size}")
        if not content_type or any(c in content_type for c in "\r\n"):
            raise ValueError(f"bad content type: {content_type!r}")
        client = await self._get_client()
        # Both headers are in the request when it is signed, so they are among the
        # signed headers (X-Amz-SignedHeaders) and the store checks them.
        url = await client.generate_presigned_url(
            "put_object",
            Params={"Bucket": self.options.bucket, "Key": name, "ContentLength": size, "ContentType": content_type},
            ExpiresIn=_check_expires(expires),
            HttpMethod="PUT",
        )
        return PresignedRequest("PUT", url, {"Content-Length": str(size), "Content-Type": content_type})

    async def presigned_get_url(self, key: str, expires: int = 3600, *, content_disposition: str | None = None) -> str:
        """A GET of `key` valid for `expires` seconds; the store answers it with the
        given Content-Disposition when there is one."""
        name = self._name(key)
        client = await self._get_client()
        params = {"Bucket": self.options.bucket, "Key": name}
        if content_disposition is not None:
            params["ResponseContentDisposition"] = content_disposition
        return await client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=_check_expires(expires), HttpMethod="GET"
        )

    # ------------------------------------------------------------ internals

    def _name(self, key: str) -> str:
        return self.options.key_prefix + check_key(key)

    async def _get_client(self):
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                # Imported here: the s3 extra is optional and only this backend needs it.
                from aiobotocore.config import AioConfig

                options = self.options
                config = AioConfig(
                    signature_version="s3v4",
                    # Non-AWS stores rarely have wildcard DNS for bucket subdomains.
                    s3={"addressing_style": "path" if options.endpoint_url else "auto"},
                    # Only what S3 requires: not every S3-compatible store knows the
                    # newer flexible checksums.
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                    retries={"max_attempts": 3, "mode": "standard"},
                )
                stack = AsyncExitStack()
                self._client = await stack.enter_async_context(
                    _session().create_client(
                        "s3",
                        region_name=options.region,
                        endpoint_url=options.endpoint_url,
                        aws_access_key_id=options.access_key,
                        aws_secret_access_key=options.secret_key,
                        config=config,
                    )
                )
                self._exit_stack = stack
        return self._client

    async def _abort(self, client, name: str, upload_id: str) -> None:
        try:
            await client.abort_multipart_upload(Bucket=self.options.bucket, Key=name, UploadId=upload_id)
        except Exception:
            # The upload stays invisible; a bucket lifecycle rule removes leftover parts.
            pass


@functools.cache
def _session():
    """One aiobotocore session per process: it keeps the parsed S3 API model, which
    every new client would otherwise load again (a fifth of a second of CPU). A session
    is bound to no event loop; the clients it makes are."""
    from aiobotocore.session import get_session

    return get_session()


def _error_code(error) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _check_expires(expires: int) -> int:
    if not 1 <= expires <= MAX_PRESIGN_EXPIRES:
        raise ValueError(f"expires must be 1..{MAX_PRESIGN_EXPIRES} seconds, not {expires}")
    return int(expires)


class _PartBuffer:
    """One part's bytes in a buffer allocated once and reused for every part."""

    def __init__(self, capacity: int):
        self._buffer = bytearray(capacity)
        self._view = memoryview(self._buffer)
        self.length = 0

    def add(self, chunk: bytes) -> memoryview | None:
        """Copy in as much of `chunk` as fits; return the rest when it did not all fit."""
        space = len(self._buffer) - self.length
        data = memoryview(chunk)
        if len(data) <= space:
            self._view[self.length : self.length + len(data)] = data
            self.length += len(data)
            return None
        self._view[self.length :] = data[:space]
        self.length += space
        return data[space:]

    def clear(self) -> None:
        self.length = 0

    def reader(self) -> _PartReader:
        return _PartReader(self._view[: self.length])


class _PartReader(io.RawIOBase):
    """A seekable file over a part's bytes, so that botocore hashes and aiohttp sends
    them in small reads without a copy of the whole part.

    A sized read returns at most `PART_READ_SIZE` bytes, as a raw file may: botocore hashes the
    body in 1 MiB reads and holds two of them at a time, which would add 2 MiB to the
    part already in memory."""

    def __init__(self, view: memoryview):
        super().__init__()
        self._view = view
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def __len__(self) -> int:
        return len(self._view)

    def read(self, size: int | None = -1) -> bytes:
        remaining = len(self._view) - self._position
        if size is None or size < 0:
            size = remaining
        else:
            size = min(size, remaining, PART_READ_SIZE)
        data = self._view[self._position : self._position + size].tobytes()
        self._position += size
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._view)}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._position
