"""XEP-0363 HTTP File Upload: pictures, voice notes and documents go over HTTPS, links
go in messages.

A client asks the upload service on upload.<domain> (a component, listed in the server's
disco#items, with max-file-size in a XEP-0128 form) for a slot. It gets a PUT URL with one
header to send, ``Authorization: Bearer <token>``, and a GET URL; it PUTs the file to
xmppd's HTTP server (xmppd/http.py) and sends the GET URL in a message. The bytes live in
the media store (``[storage] media``: filesystem or S3), the records of the files in
``host.storage.uploads``.

    __init__.py  HttpUpload on each user host: options, the component, tokens, quota,
                 expiry and removal of files (also for xmppctl)
    service.py   UploadService on the component: disco identity and form, slot requests
    web.py       the HTTP side: PUT, GET and HEAD with ranges, CORS preflight

Decisions:

- **Size limit.** ``max_file_size`` is what disco advertises and what is enforced, at the
  slot request (not-acceptable with <file-too-large/>) and again at the PUT (HTTP 413, for
  slots handed out before the limit was lowered). Clients that encrypt (OMEMO media
  sharing, XEP-0454) check the encrypted size, tag included, against it.
- **Tokens.** HMAC-SHA256, with the server's signing key (xmppd/http.py), of the slot's
  id, owner, size and content type and of the token's deadline, ``slot_lifetime`` after
  the request (XEP-0363 section 7 recommends about a minute). Nothing secret is stored.
  The token is checked when the PUT starts; a slow upload may go on past the deadline.
- **One upload per slot.** The record is marked used, atomically, before the bytes come
  in; a failed upload removes it, and the client asks for a new slot (section 6).
- **Quota.** A user's stored files and open slots count against ``quota_per_user`` when a
  slot is requested (resource-constraint), the stored files again when the PUT starts
  (HTTP 507, for slots handed out before a quota was lowered). The store sums them
  (``UploadStore.usage``), so that a slot request costs the same with many files.
- **Slots per account.** At most ``max_open_slots`` slots not used yet and still valid,
  and ``max_slot_requests`` slots handed out per ``slot_request_window`` (counted in
  memory, per node): zero-byte slots cost no quota but a record each, kept
  ``file_lifetime``. Past either: resource-constraint with XEP-0363's <retry stamp/>, the
  time a slot may be asked for again.
- **S3 with presigned URLs** (``[storage.s3] presigned = true``): the PUT URL is a
  presigned S3 URL, signed for the slot's size and content type and valid
  ``slot_lifetime`` seconds, so the bytes never pass through xmppd. The GET URL stays on
  xmppd, which redirects to a fresh presigned URL, so that a link in a message does not
  expire with a signature. xmppd does not see such a PUT: the slot counts as used, and
  against the quota, from the start. The store cannot refuse a second PUT of the same
  size and type to a presigned URL before it expires.
- **Expiry.** A file is removed ``file_lifetime`` seconds after its slot was given, by a
  task that runs every ``sweep_interval`` seconds; a file past its time is not served.
  A slot never used is removed at the same time.

Hooks: server-started (starts the expiry task), user-deleted (removes the user's files).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import hmac
import math
import re
import time
from dataclasses import dataclass
from urllib.parse import quote

from xmppd.extension import Extension, hook
from xmppd.storage.interfaces import Upload

NS_UPLOAD = "urn:xmpp:http:upload:0"
DEFAULT_CONTENT_TYPE = "application/octet-stream"
MiB = 1024 * 1024
MAX_FILENAME_LENGTH = 255
_TOKEN_CONTEXT = b"xmppd upload PUT\0"
# Separators, C0 and C1 controls, and the invisible characters that change what a reader
# sees (Unicode UAX #9): the line and paragraph separators, the bidirectional marks (ALM,
# LRM, RLM), embeddings and overrides (U+202A-U+202E) and isolates (U+2066-U+2069), with
# which "invoice\u202efdp.exe" shows as "invoiceexe.pdf". Joiners stay: emoji and several
# scripts need them.
_NOT_IN_FILENAME = re.compile(r"[/\\\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def is_valid_filename(name: str) -> bool:
    """A file name is one path segment: 1-255 characters, no separator, control or
    bidirectional formatting character, not "." or "..". A bad one is refused, never
    rewritten: XEP-0363 asks to keep the name intact, and the client learns why."""
    return 0 < len(name) <= MAX_FILENAME_LENGTH and name not in (".", "..") and not _NOT_IN_FILENAME.search(name)


class HttpUpload(Extension):
    xeps = {363: "1.1.0"}
    depends = ["disco"]

    @dataclass(frozen=True)
    class Options:
        domain: str = "upload.{host}"  # {host} is the user host's domain
        name: str = "HTTP File Upload"  # the service's disco identity name
        max_file_size: int = 100 * MiB  # bytes; advertised in disco and enforced
        quota_per_user: int = 1024 * MiB  # bytes of files and open slots; 0: no quota
        file_lifetime: float = 30 * 86400.0  # seconds a file is kept
        slot_lifetime: float = 60.0  # seconds a PUT URL stays valid
        sweep_interval: float = 3600.0  # seconds between two removals of expired files
        max_open_slots: int = 10  # slots per account handed out and not used yet
        max_slot_requests: int = 100  # slots handed out per account per slot_request_window
        slot_request_window: float = 3600.0  # seconds

        def validate(self, where):
            where.component_domain("domain", self.domain)
            for key in ("max_file_size", "max_open_slots", "max_slot_requests"):
                where.check(key, getattr(self, key) > 0, "must be positive")
            where.check("quota_per_user", self.quota_per_user >= 0, "must not be negative")
            for key in ("file_lifetime", "slot_lifetime", "sweep_interval", "slot_request_window"):
                where.check(key, getattr(self, key) > 0, "must be positive (seconds)")

    def __init__(self, host, options):
        super().__init__(host, options)
        self.store = host.storage.uploads
        self.media = host.media
        self.path = f"/upload/{host.domain}/"  # of this host's files on the HTTP server
        self._sweeper: asyncio.Task | None = None
        self._granted: dict[str, collections.deque] = {}  # owner -> times of its latest slots

    async def start(self) -> None:
        from .web import UploadWeb

        self.component = self.services.directory.add_component(
            self.options.domain.format(host=self.host.domain), parent=self.host
        )
        await self.component.load("disco")
        await self.component.load("ping")
        await self.component.load("upload.service")
        UploadWeb(self).add_routes(self.services.http)

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()

    # ------------------------------------------------------------- slots

    @property
    def is_presigned(self) -> bool:
        """Clients PUT to and GET from the object store itself (S3, presigned = true)."""
        return getattr(self.media, "has_presigned_urls", False)

    def get_url(self, upload: Upload) -> str:
        """The link to the file (also the PUT URL when xmppd takes the upload)."""
        return f"{self.services.http.public_url}{self.path}{upload.id}/{quote(upload.filename, safe='')}"

    def token(self, upload: Upload, deadline: int) -> str:
        """The PUT token of `upload`, valid until `deadline` (Unix time)."""
        message = "\0".join((upload.id, upload.owner, str(upload.size), upload.content_type, str(deadline)))
        mac = hmac.new(self.services.http.signing_key, _TOKEN_CONTEXT + message.encode(), hashlib.sha256).digest()
        return f"{deadline}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"

    def new_token(self, upload: Upload) -> str:
        return self.token(upload, math.ceil(upload.created + self.options.slot_lifetime))

    def is_valid_token(self, upload: Upload, token: str, now: float) -> bool:
        """True if `token` was made by this server for `upload` and has not expired."""
        deadline, _, _ = token.partition(".")
        if not deadline.isdigit() or len(deadline) > 12:
            return False
        return hmac.compare_digest(self.token(upload, int(deadline)), token) and now <= int(deadline)

    def is_open(self, upload: Upload, now: float) -> bool:
        """The slot may still be used: its PUT token has not expired."""
        return not upload.completed and now <= upload.created + self.options.slot_lifetime

    # ------------------------------------------------------------- quota

    async def usage(
        self, owner: str, now: float | None = None, *, with_open_slots: bool = True, exclude: str = ""
    ) -> tuple[int, int]:
        """(bytes, files) that count against the quota of `owner` (a bare JID): stored
        files and, with `with_open_slots`, slots that may still be used (`is_open`)."""
        now = time.time() if now is None else now
        open_since = now - self.options.slot_lifetime if with_open_slots else None
        return await self.store.usage(owner, now, open_since, exclude)

    # ------------------------------------------------------------- slot rate

    def next_slot_allowed(self, owner: str, now: float) -> float | None:
        """When `owner` may have a slot again, if max_slot_requests are used up."""
        granted = self._granted.get(owner)
        if granted is None or len(granted) < self.options.max_slot_requests:
            return None
        free_at = granted[0] + self.options.slot_request_window
        return free_at if free_at > now else None

    def slot_granted(self, owner: str, now: float) -> None:
        granted = self._granted.get(owner)
        if granted is None:
            granted = self._granted[owner] = collections.deque(maxlen=self.options.max_slot_requests)
        granted.append(now)

    def _forget_old_grants(self, now: float) -> None:
        since = now - self.options.slot_request_window
        self._granted = {owner: granted for owner, granted in self._granted.items() if granted[-1] > since}

    def is_over_quota(self, used: int, size: int) -> bool:
        return bool(self.options.quota_per_user) and used + size > self.options.quota_per_user

    # ------------------------------------------------------------- removal

    def owns(self, upload: Upload) -> bool:
        """The file belongs to a user of this host."""
        return upload.owner.rpartition("@")[2] == self.host.domain

    async def remove(self, upload: Upload) -> None:
        """Delete a file: the bytes first, so that no record outlives them unseen."""
        await self.media.delete(upload.id)
        await self.store.remove(upload.id)

    async def remove_expired(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        expired = [u for u in await self.store.expired(now) if self.owns(u)]
        for upload in expired:
            await self.remove(upload)
        return len(expired)

    async def _sweep_forever(self) -> None:
        while True:
            try:
                self._forget_old_grants(time.time())
                removed = await self.remove_expired()
                if removed:
                    self.log.info("event=uploads-expired host=%s files=%d", self.host.domain, removed)
            except Exception:
                self.log.exception("event=upload-expiry-failed host=%s", self.host.domain)
            await asyncio.sleep(self.options.sweep_interval)

    @hook("server-started")
    async def start_expiry(self, server) -> None:
        self._sweeper = self.services.tasks.spawn(self._sweep_forever())

    @hook("user-deleted")
    async def remove_user_files(self, jid) -> None:
        for upload in await self.store.list(str(jid.bare)):
            await self.remove(upload)
