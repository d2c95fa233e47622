"""XEP-0363 HTTP File Upload: the HTTP side, on xmppd's HTTP server.

    PUT  /upload/<host>/<id>/<file name>   the upload, with the slot's bearer token
    GET  /upload/<host>/<id>/<file name>   the file (HEAD too; single byte ranges)
    OPTIONS                                CORS preflight for web clients

The path is read from the raw request target, never a decoded one: anything but two
segments, a valid media key (`is_valid_key`) and a file name without an (encoded)
separator, "." or "..", is refused with 400 before any storage is touched. Uploads stream
into the media store chunk by chunk, cut when slower than [http] min_body_rate
(`HttpServer.body`); downloads stream out the same way. Files are served
with their slot's content type, ``nosniff`` and a Content-Security-Policy that lets
nothing run, so a file cannot act as a page of this origin. Any origin may fetch and
upload (CORS): a token, not a cookie, is what grants an upload.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

from aiohttp import web

from xmppd.storage.media import SizeMismatch, is_valid_key

from . import DEFAULT_CONTENT_TYPE, is_valid_filename

if TYPE_CHECKING:
    from xmppd.storage.interfaces import Upload

    from . import HttpUpload

REDIRECT_LIFETIME = 300  # seconds a presigned GET URL we redirect to is valid
INLINE_TYPES = ("image/", "audio/", "video/")
CORS = {"Access-Control-Allow-Origin": "*"}
SAFE = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; sandbox",
}
PREFLIGHT = {
    **CORS,
    "Access-Control-Allow-Methods": "GET, HEAD, PUT, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Max-Age": "86400",
}


class Refused(Exception):
    """Answer the request with `status` and a short reason."""

    def __init__(self, status: int, reason: str, headers: dict | None = None):
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or {}

    def response(self) -> web.Response:
        return web.Response(status=self.status, text=self.reason + "\n", headers={**CORS, **SAFE, **self.headers})


class UploadWeb:
    def __init__(self, upload: HttpUpload):
        self.upload = upload
        self.log = upload.log

    def add_routes(self, http) -> None:
        pattern = self.upload.path + "{tail:.*}"
        for method, handler in (("PUT", self.put), ("GET", self.get), ("HEAD", self.get), ("OPTIONS", self.preflight)):
            http.add_route(method, pattern, handler)

    # ------------------------------------------------------------- PUT

    async def put(self, request: web.Request) -> web.StreamResponse:
        try:
            upload = await self._check_put(request)
        except Refused as refused:
            return refused.response()
        store, media = self.upload.store, self.upload.media
        if not await store.mark_completed(upload.id):  # a concurrent PUT took the slot
            return Refused(409, "This slot has been used").response()
        try:
            await media.write(
                upload.id,
                self.upload.services.http.body(request),
                upload.size,
                upload.content_type or DEFAULT_CONTENT_TYPE,
            )
        except SizeMismatch:
            await store.remove(upload.id)
            return Refused(400, "The body does not have the slot's size").response()
        except BaseException:
            # A lost connection, a body too slow (BodyTooSlow: the HTTP server answers
            # 408) or a failing store: the slot is spent and nothing is kept.
            await asyncio.shield(store.remove(upload.id))
            raise
        self.log.info("event=upload-stored owner=%s size=%d", upload.owner, upload.size)
        return web.Response(status=201, headers=CORS)

    async def _check_put(self, request: web.Request) -> Upload:
        upload_id, filename = _parse_path(request.raw_path, self.upload.path)
        token = _bearer(request.headers.get("Authorization", ""))
        upload = await self.upload.store.get(upload_id)
        if upload is None or not self.upload.owns(upload) or upload.filename != filename:
            raise Refused(404, "No such upload slot")
        now = time.time()
        if self.upload.is_presigned or not self.upload.is_valid_token(upload, token, now):
            raise Refused(403, "The token is not valid for this slot, or has expired")
        if upload.completed:
            raise Refused(409, "This slot has been used")
        if request.content_length is None:
            raise Refused(411, "Content-Length is required")
        if request.content_length != upload.size:
            raise Refused(400, f"Content-Length must be the slot's size, {upload.size}")
        if upload.size > self.upload.options.max_file_size:
            self.upload.limit_reached("max_file_size")
            raise Refused(413, "The file is larger than this server takes")
        if upload.content_type and _media_type(request.headers.get("Content-Type", "")) != _media_type(
            upload.content_type
        ):
            raise Refused(415, f"Content-Type must be the slot's, {upload.content_type}")
        used, _ = await self.upload.usage(upload.owner, now, with_open_slots=False, exclude=upload.id)
        if self.upload.is_over_quota(used, upload.size):
            self.upload.limit_reached("quota_per_user")
            raise Refused(507, "The quota of this account is used up")
        return upload

    # ------------------------------------------------------------- GET, HEAD

    async def get(self, request: web.Request) -> web.StreamResponse:
        try:
            upload = await self._find_file(request)
            if self.upload.is_presigned:
                return await self._from_store(request, upload)
            return await self._stream(request, upload)
        except Refused as refused:
            return refused.response()

    async def _find_file(self, request: web.Request) -> Upload:
        upload_id, filename = _parse_path(request.raw_path, self.upload.path)
        upload = await self.upload.store.get(upload_id)
        if (
            upload is None
            or not self.upload.owns(upload)
            or upload.filename != filename
            or not upload.completed
            or upload.expires < time.time()
        ):
            raise Refused(404, "No such file")
        return upload

    def _headers(self, upload: Upload) -> dict[str, str]:
        content_type = upload.content_type or DEFAULT_CONTENT_TYPE
        disposition = "inline" if content_type.lower().startswith(INLINE_TYPES) else "attachment"
        return {
            **CORS,
            **SAFE,
            "Access-Control-Expose-Headers": "Content-Range, Accept-Ranges, Content-Disposition",
            "Content-Type": content_type,
            "Content-Disposition": _disposition(disposition, upload.filename),
            "Accept-Ranges": "bytes",
            "ETag": f'"{upload.id}"',
        }

    async def _stream(self, request: web.Request, upload: Upload) -> web.StreamResponse:
        headers = self._headers(upload)
        size = upload.size
        start, end = 0, size - 1
        status = 200
        wanted = _range(request, headers["ETag"], size)
        if wanted == "unsatisfiable":
            raise Refused(416, "Range not satisfiable", {"Content-Range": f"bytes */{size}"})
        if wanted is not None:
            start, end = wanted
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = end - start + 1
        media = self.upload.media
        if request.method == "HEAD":
            if await media.size(upload.id) is None:  # the PUT is still going on
                raise Refused(404, "No such file")
            await response.prepare(request)
            return response
        async with aclosing(media.read(upload.id, start, end if size else None)) as chunks:
            # The first chunk before the headers: a file whose PUT is still going on
            # is not there yet, and that must be a 404, not a broken 200.
            try:
                first = await anext(chunks, b"")
            except FileNotFoundError:
                raise Refused(404, "No such file") from None
            await response.prepare(request)
            if first:
                await response.write(first)
            async for chunk in chunks:
                await response.write(chunk)
        await response.write_eof()
        return response

    async def _from_store(self, request: web.Request, upload: Upload) -> web.StreamResponse:
        """Presigned S3: a redirect to a fresh signed URL (HEAD is answered here, since a
        URL signed for GET does not take a HEAD)."""
        media = self.upload.media
        size = await media.size(upload.id)
        if size is None:
            raise Refused(404, "No such file")
        headers = self._headers(upload)
        if request.method == "HEAD":
            response = web.StreamResponse(status=200, headers=headers)
            response.content_length = size
            await response.prepare(request)
            return response
        url = await media.presigned_get_url(
            upload.id, REDIRECT_LIFETIME, content_disposition=headers["Content-Disposition"]
        )
        return web.Response(status=302, headers={**CORS, "Location": url, "Cache-Control": "no-store"})

    # ------------------------------------------------------------- CORS

    async def preflight(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers=PREFLIGHT)


def _parse_path(raw_path: str, prefix: str) -> tuple[str, str]:
    """(id, file name) of a raw request target under `prefix`; 400 for any other shape."""
    path = raw_path.partition("?")[0]
    segments = path[len(prefix) :].split("/") if path.startswith(prefix) else []
    if len(segments) != 2 or not is_valid_key(segments[0]):
        raise Refused(400, "Not an upload URL")
    try:
        filename = unquote(segments[1], errors="strict")
    except UnicodeDecodeError:
        raise Refused(400, "Not an upload URL") from None
    if not is_valid_filename(filename):
        raise Refused(400, "Not an upload URL")
    return segments[0], filename


def _bearer(authorization: str) -> str:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Refused(401, "An Authorization: Bearer token is required", {"WWW-Authenticate": "Bearer"})
    return token.strip()


def _media_type(content_type: str) -> str:
    """The type/subtype of a Content-Type, lower case, without parameters."""
    return content_type.partition(";")[0].strip().lower()


def _range(request: web.Request, etag: str, size: int):
    """The byte range asked for, as (first, last) inclusive; None for the whole file (no
    Range, one we ignore as RFC 9110 section 14.2 allows: several ranges, another unit, a
    stale If-Range, bad syntax); "unsatisfiable" when it starts past the end."""
    header = request.headers.get("Range")
    if header is None or request.headers.get("If-Range", etag) != etag:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
        return None
    if first == "":  # the last N bytes
        if last == "":
            return None
        if int(last) == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - int(last)), size - 1
    start = int(first)
    if last != "" and int(last) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, size - 1 if last == "" else min(int(last), size - 1)


def _disposition(kind: str, filename: str) -> str:
    """RFC 6266 with the RFC 8187 encoding, so any file name survives."""
    return f"{kind}; filename*=UTF-8''{quote(filename, safe='')}"
