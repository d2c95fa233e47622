"""XEP-0363 HTTP File Upload: the upload service on its component (upload.<domain>).

Advertises itself (identity store/file, the feature, max-file-size in a XEP-0128 form)
and hands out slots to the users of its user host; HttpUpload (the package's
__init__.py) holds the options, tokens and quota.

Hooks: iq/host (routes iqs to the iq-<type>/host/... events), message/host|bare|full
(refused), iq-get/host/urn:xmpp:http:upload:0:request.
"""

from __future__ import annotations

import math
import re
import secrets
import time

from xmppd import forms
from xmppd.extension import ComponentService, iq_handler
from xmppd.protocol.errors import BadRequest, NotAcceptable, NotAllowed, ResourceConstraint
from xmppd.protocol.stanza import make_element, sub_element
from xmppd.storage.interfaces import Upload

from . import DEFAULT_CONTENT_TYPE, NS_UPLOAD, is_valid_filename

MAX_CONTENT_TYPE_LENGTH = 255
_SIZE = re.compile(r"[0-9]{1,18}")
# RFC 9110 section 8.3.1: type "/" subtype, then parameters (token or quoted string values).
_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"
_CONTENT_TYPE = re.compile(
    rf"{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|\"(?:[^\"\\\x00-\x1f\x7f]|\\[^\x00-\x1f\x7f])*\"))*"
)


class UploadService(ComponentService):
    features = [NS_UPLOAD]

    def __init__(self, host, options):
        super().__init__(host, options)
        self.upload = host.parent.extensions["upload"]
        self.identities = [("store", "file", self.upload.options.name)]

    def disco_forms(self) -> list:
        return [
            forms.build(
                "result",
                form_type=NS_UPLOAD,
                fields=[forms.Field("max-file-size", type=None, values=(str(self.upload.options.max_file_size),))],
            )
        ]

    @iq_handler("get", NS_UPLOAD, "request", to=("host",))
    async def request_slot(self, iq):
        upload = self.upload
        if iq.from_.domain != upload.host.domain or iq.from_.local is None:
            raise NotAllowed(text=f"Only users of {upload.host.domain} may upload files here")
        request = iq.element.find(f"{{{NS_UPLOAD}}}request")
        filename, size, content_type = _read_request(request)
        if size > upload.options.max_file_size:
            self.upload.limit_reached("max_file_size")
            too_large = make_element(f"{{{NS_UPLOAD}}}file-too-large")
            sub_element(too_large, f"{{{NS_UPLOAD}}}max-file-size", text=str(upload.options.max_file_size))
            raise NotAcceptable(
                text=f"File too large. The maximum file size is {upload.options.max_file_size} bytes",
                app_condition=too_large,
            )
        owner = str(iq.from_.bare)
        now = time.time()
        options = upload.options
        free_at = upload.next_slot_allowed(owner, now)
        if free_at is not None:
            raise self._try_later(
                "max_slot_requests",
                free_at,
                f"Too many upload slots: {options.max_slot_requests} in {options.slot_request_window:g} seconds",
            )
        used, counted = await upload.usage(owner, now)
        _, files = await upload.usage(owner, now, with_open_slots=False)
        if counted - files >= options.max_open_slots:
            raise self._try_later(
                "max_open_slots",
                now + options.slot_lifetime,
                f"Too many open upload slots: {counted - files}; use one or let it expire",
            )
        if upload.is_over_quota(used, size):
            self.upload.limit_reached("quota_per_user")
            raise ResourceConstraint(text=f"Quota reached: {used} of {upload.options.quota_per_user} bytes in use")
        record = Upload(
            id=secrets.token_urlsafe(24),
            owner=owner,
            filename=filename,
            size=size,
            content_type=content_type,
            created=now,
            expires=now + upload.options.file_lifetime,
            completed=upload.is_presigned,
        )
        slot = make_element(f"{{{NS_UPLOAD}}}slot")
        if upload.is_presigned:
            signed = await upload.media.presigned_put_url(
                record.id,
                size,
                content_type or DEFAULT_CONTENT_TYPE,
                expires=max(1, round(upload.options.slot_lifetime)),
            )
            # Its headers are Content-Type and Content-Length, which a client sends anyway
            # and which may not be named in <header/> (XEP-0363 section 4).
            sub_element(slot, f"{{{NS_UPLOAD}}}put", {"url": signed.url})
        else:
            put = sub_element(slot, f"{{{NS_UPLOAD}}}put", {"url": upload.get_url(record)})
            sub_element(
                put, f"{{{NS_UPLOAD}}}header", {"name": "Authorization"}, text=f"Bearer {upload.new_token(record)}"
            )
        sub_element(slot, f"{{{NS_UPLOAD}}}get", {"url": upload.get_url(record)})
        await upload.store.add(record)
        upload.slot_granted(owner, now)
        self.log.info("event=upload-slot owner=%s size=%d presigned=%s", owner, size, upload.is_presigned)
        return slot

    def _try_later(self, limit: str, when: float, text: str) -> ResourceConstraint:
        """XEP-0363 section 5: a temporary refusal, with the time to retry (XEP-0082, UTC)."""
        self.upload.limit_reached(limit)
        retry = make_element(
            f"{{{NS_UPLOAD}}}retry", {"stamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(math.ceil(when)))}
        )
        return ResourceConstraint(text=text, app_condition=retry)


def _read_request(request) -> tuple[str, int, str]:
    """(filename, size, content type or "") of a slot request; BadRequest if malformed."""
    if request is None:
        raise BadRequest()
    filename = request.get("filename", "")
    if not is_valid_filename(filename):
        raise BadRequest(
            text="The file name must be one path segment of 1-255 characters, without control "
            "or bidirectional formatting characters"
        )
    size = request.get("size", "")
    if not _SIZE.fullmatch(size):
        raise BadRequest(text="The size must be a number of bytes")
    content_type = request.get("content-type", "")
    if content_type and (len(content_type) > MAX_CONTENT_TYPE_LENGTH or not _CONTENT_TYPE.fullmatch(content_type)):
        raise BadRequest(text="The content type is not a MIME type")
    return filename, int(size), content_type
