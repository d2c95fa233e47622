"""End to end: XEP-0363 HTTP File Upload on a real xmppd with the filesystem media store:
slots, PUT and GET over HTTPS, the checks on both, quota, expiry, xmppctl, and a link
sent in a message. The same round trip on S3 is in test_upload_s3.py."""

from __future__ import annotations

import asyncio
import calendar
import inspect
import os
import stat
import time
import types
import xml.etree.ElementTree as ET
from urllib.parse import quote, urlsplit

import pytest

from tests.support.accounts import create_accounts
from tests.support.inbox import message, online
from tests.support.server import XmppdProcess
from tests.support.upload import (
    NS_STANZAS,
    NS_UPLOAD,
    KiB,
    MiB,
    SlotRefused,
    download,
    http,
    memory_kib,
    payload,
    put,
    request_slot,
    reset_peak_memory,
    upload,
)

SERVICE = "upload.localhost"
MAX = 21 * MiB  # advertised and enforced
QUOTA = 50 * MiB
OTHER_HOST = "elsewhere.test"
CONFIG = f"""
[extensions.upload]
max_file_size = {MAX}
quota_per_user = {QUOTA}

[[hosts]]
domain = "{OTHER_HOST}"
"""
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = XmppdProcess(tmp_path_factory.mktemp("upload"), CONFIG).start()
    yield process
    process.stop()


@pytest.fixture
async def session():
    async with http() as session:
        yield session


@pytest.fixture
async def user(connect):
    client, _ = await connect()
    return client


def upload_path(url: str) -> str:
    return urlsplit(url).path


async def raw_http(port: int, request: str) -> int:
    """The status of a request sent as written (no client normalises its target), over
    the plain HTTP port."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request.encode())
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    return int(status_line.split()[1])


# ------------------------------------------------------------------ discovery


async def test_service_is_advertised_with_its_limit(user):
    disco = user.plugin["xep_0030"]
    items = {item[0] for item in (await disco.get_items("localhost"))["disco_items"]["items"]}
    assert SERVICE in items
    info = await disco.get_info(SERVICE)
    assert ("store", "file", None, "HTTP File Upload") in set(info["disco_info"]["identities"])
    assert NS_UPLOAD in info["disco_info"]["features"]
    form = info.xml.find("{http://jabber.org/protocol/disco#info}query/{jabber:x:data}x")
    values = {
        field.get("var"): [v.text for v in field.findall("{jabber:x:data}value")]
        for field in form.findall("{jabber:x:data}field")
    }
    assert form.get("type") == "result"
    assert values["FORM_TYPE"] == [NS_UPLOAD]
    assert values["max-file-size"] == [str(MAX)]


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("size", [1, 100 * KiB, 20 * MiB], ids=["1B", "100KiB", "20MiB"])
async def test_round_trip_is_byte_identical(server, user, session, size):
    data = payload(size, seed=size)
    pid = server.process.pid
    before = memory_kib(pid)["VmRSS"]
    reset_peak_memory(pid)
    slot = await request_slot(user, SERVICE, "holiday photo.jpg", size, "image/jpeg")
    assert set(slot.headers) == {"Authorization"}  # XEP-0363: no other header is allowed
    assert slot.put_url == slot.get_url and slot.get_url.startswith(f"https://localhost:{server.https_port}/")
    assert upload_path(slot.get_url).endswith("/holiday%20photo.jpg")
    response = await put(session, slot, data, "image/jpeg")
    assert response.status == 201
    assert response.headers["Access-Control-Allow-Origin"] == "*"

    response, body = await download(session, slot.get_url)
    peak = memory_kib(pid)["VmHWM"]
    assert response.status == 200
    assert body == data
    assert response.headers["Content-Type"] == "image/jpeg"
    assert int(response.headers["Content-Length"]) == size
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["Content-Disposition"] == "inline; filename*=UTF-8''holiday%20photo.jpg"
    if size == 20 * MiB:
        # The file streamed through in chunks: the server's peak memory during the PUT and
        # the GET stayed far below the file's size.
        assert (peak - before) * KiB < 6 * MiB, f"the server grew by {(peak - before) // 1024} MiB"


async def test_head_and_range_requests(user, session):
    data = payload(1000, seed=7)
    slot = await upload(user, SERVICE, session, data, "report.pdf", "application/pdf")
    async with session.head(slot.get_url) as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == "1000"
        assert response.headers["Content-Type"] == "application/pdf"
        assert response.headers["Content-Disposition"].startswith("attachment;")
    for header, status, expected, content_range in [
        ("bytes=0-99", 206, data[:100], "bytes 0-99/1000"),
        ("bytes=900-", 206, data[900:], "bytes 900-999/1000"),
        ("bytes=-10", 206, data[-10:], "bytes 990-999/1000"),
        ("bytes=990-5000", 206, data[990:], "bytes 990-999/1000"),
        ("bytes=0-0,5-9", 200, data, None),  # several ranges: the whole file
        ("lines=1-2", 200, data, None),
    ]:
        response, body = await download(session, slot.get_url, Range=header)
        assert (response.status, body) == (status, expected), header
        assert response.headers.get("Content-Range") == content_range
    response, body = await download(session, slot.get_url, Range="bytes=1000-")
    assert response.status == 416
    assert response.headers["Content-Range"] == "bytes */1000"
    response, body = await download(session, slot.get_url, Range="bytes=0-9", **{"If-Range": '"stale"'})
    assert (response.status, body) == (200, data)


async def test_cors_preflight_lets_web_clients_upload(user, session):
    slot = await request_slot(user, SERVICE, "a.txt", 3, "text/plain")
    async with session.options(
        slot.put_url,
        headers={
            "Origin": "https://webchat.example",
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    ) as response:
        assert response.status in (200, 204)
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert "PUT" in response.headers["Access-Control-Allow-Methods"]
        allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "content-type"} <= allowed


async def test_slot_without_content_type_is_served_as_octet_stream(user, session):
    data = b"no type given"
    slot = await request_slot(user, SERVICE, "notes", len(data))
    assert (await put(session, slot, data, "text/x-whatever")).status == 201
    response, body = await download(session, slot.get_url)
    assert body == data
    assert response.headers["Content-Type"] == "application/octet-stream"


async def test_link_in_a_message_reaches_the_contact(connect, session):
    alice, _ = await connect()
    bob, bob_inbox = await connect()
    data = payload(50 * KiB, seed=3)
    slot = await upload(alice, SERVICE, session, data, "voice.m4a", "audio/mp4")
    stanza = alice.make_message(mto=bob.boundjid.bare, mbody=slot.get_url, mtype="chat")
    oob = ET.SubElement(stanza.xml, "{jabber:x:oob}x")
    ET.SubElement(oob, "{jabber:x:oob}url").text = slot.get_url
    stanza.send()
    received = await bob_inbox.wait(message(body=slot.get_url))
    assert received.findtext("{jabber:x:oob}x/{jabber:x:oob}url") == slot.get_url
    response, body = await download(session, received.findtext("{jabber:client}body"))
    assert response.status == 200 and body == data


# ------------------------------------------------------------------ slot requests refused


async def test_the_advertised_size_is_the_limit(server, user):
    """Issue 13: disco's max-file-size is what is enforced, to the byte (XEP-0363 section 5)."""
    before = await server.limit_reached("extensions.upload.max_file_size")
    await request_slot(user, SERVICE, "exactly.bin", MAX)
    with pytest.raises(SlotRefused) as refused:
        await request_slot(user, SERVICE, "one-more.bin", MAX + 1)
    assert (refused.value.condition, refused.value.type) == ("not-acceptable", "modify")
    assert refused.value.find(f"{{{NS_UPLOAD}}}file-too-large/{{{NS_UPLOAD}}}max-file-size").text == str(MAX)
    assert await server.limit_reached("extensions.upload.max_file_size") - before == 1


async def test_quota_counts_files_and_open_slots(user, session):
    for _ in range(2):
        await request_slot(user, SERVICE, "part.bin", 20 * MiB)
    await upload(user, SERVICE, session, payload(5 * MiB), "stored.bin")
    with pytest.raises(SlotRefused) as refused:
        await request_slot(user, SERVICE, "one-too-many.bin", 5 * MiB + 1)
    assert (refused.value.condition, refused.value.type) == ("resource-constraint", "wait")
    await request_slot(user, SERVICE, "just-fits.bin", 5 * MiB)  # 50 MiB exactly


@pytest.mark.parametrize(
    "attributes",
    [
        {"size": "10"},  # no file name
        {"filename": "a.txt"},  # no size
        {"filename": "a.txt", "size": "-1"},
        {"filename": "a.txt", "size": "ten"},
        {"filename": "a.txt", "size": "1e3"},
        {"filename": "../../etc/passwd", "size": "10"},
        {"filename": "dir/a.txt", "size": "10"},
        {"filename": "a\\b.txt", "size": "10"},
        {"filename": "..", "size": "10"},
        {"filename": "x" * 256, "size": "10"},
        {"filename": "invoice\u202efdp.exe", "size": "10"},  # right-to-left override
        {"filename": "a\u2067b.txt", "size": "10"},  # right-to-left isolate
        {"filename": "a\u200fb.txt", "size": "10"},  # right-to-left mark
        {"filename": "a\x85b.txt", "size": "10"},  # C1 control (NEL)
        {"filename": "a\u2028b.txt", "size": "10"},  # line separator
        {"filename": "a.txt", "size": "10", "content-type": "text/plain\r\nX-Evil: 1"},
        {"filename": "a.txt", "size": "10", "content-type": "not a type"},
    ],
    ids=lambda a: ",".join(f"{k}={v[:12]!r}" for k, v in a.items()),
)
async def test_malformed_slot_requests_are_bad_requests(user, attributes):
    with pytest.raises(SlotRefused) as refused:
        await request_slot(user, SERVICE, attributes.pop("filename", None), attributes.pop("size", None), **attributes)
    assert refused.value.condition == "bad-request"


async def test_file_names_in_any_script_are_kept(user, session):
    """Right-to-left scripts and emoji joined with ZWJ are names, not tricks: kept intact."""
    name = "\u05e6\u05d9\u05dc\u05d5\u05dd \U0001f468\u200d\U0001f469\u200d\U0001f467.jpg"
    slot = await upload(user, SERVICE, session, b"ok", name, "image/jpeg")
    response, body = await download(session, slot.get_url)
    assert response.status == 200 and body == b"ok"
    assert response.headers["Content-Disposition"] == f"inline; filename*=UTF-8''{quote(name, safe='')}"


async def test_users_of_other_hosts_may_not_upload(server):
    other_host = types.SimpleNamespace(config_path=server.config_path, domain=OTHER_HOST)
    stranger = create_accounts(other_host, ["stranger"])[0]
    client, _ = await online(server, stranger)
    try:
        with pytest.raises(SlotRefused) as refused:
            await request_slot(client, SERVICE, "a.txt", 10)
        assert (refused.value.condition, refused.value.type) == ("not-allowed", "cancel")
        await request_slot(client, f"upload.{OTHER_HOST}", "a.txt", 10)  # its own service
    finally:
        await client.logout()


# ------------------------------------------------------------------ slots per account


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    """3 open slots and 5 slots an hour per account."""
    process = XmppdProcess(
        tmp_path_factory.mktemp("upload-limited"),
        """
        [extensions.upload]
        max_open_slots = 3
        max_slot_requests = 5
        slot_request_window = 3600.0
        """,
    ).start()
    yield process
    process.stop()


def retry_stamp(refused: SlotRefused) -> float:
    """The time of XEP-0363's <retry stamp/> (XEP-0082, UTC, whole seconds)."""
    stamp = refused.find(f"{{{NS_UPLOAD}}}retry").get("stamp")
    return calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))


async def test_open_slots_per_account_are_bounded(limited, session):
    """Issue 20: empty slots cost no quota, yet each is a record kept for file_lifetime:
    one account asked for 3,000 in 38 s. Now the 4th unused slot waits for one to be
    used or to expire."""
    jid = create_accounts(limited, ["hoarder"])[0]
    client, _ = await online(limited, jid)
    try:
        before = await limited.limit_reached("extensions.upload.max_open_slots")
        slots = [await request_slot(client, SERVICE, f"empty{n}.bin", 0) for n in range(3)]
        asked = time.time()
        with pytest.raises(SlotRefused) as refused:
            await request_slot(client, SERVICE, "one-more.bin", 0)
        assert (refused.value.condition, refused.value.type) == ("resource-constraint", "wait")
        assert "open upload slots" in refused.value.find(f"{{{NS_STANZAS}}}text").text
        assert asked < retry_stamp(refused.value) <= asked + 61  # when they have expired
        assert await limited.limit_reached("extensions.upload.max_open_slots") - before == 1
        assert (await put(session, slots[0], b"")).status == 201  # one used: room for one more
        await request_slot(client, SERVICE, "one-more.bin", 0)
    finally:
        await client.logout()


async def test_slot_requests_per_account_are_bounded(limited, session):
    jid = create_accounts(limited, ["hurried"])[0]
    client, _ = await online(limited, jid)
    try:
        before = await limited.limit_reached("extensions.upload.max_slot_requests")
        first = time.time()
        for n in range(5):
            await upload(client, SERVICE, session, b"", f"empty{n}.bin")
        with pytest.raises(SlotRefused) as refused:
            await request_slot(client, SERVICE, "sixth.bin", 0)
        assert (refused.value.condition, refused.value.type) == ("resource-constraint", "wait")
        assert "5 in 3600 seconds" in refused.value.find(f"{{{NS_STANZAS}}}text").text
        assert first + 3600 - 1 <= retry_stamp(refused.value) <= time.time() + 3600 + 1
        assert await limited.limit_reached("extensions.upload.max_slot_requests") - before == 1
    finally:
        await client.logout()
    # Another account is not held back.
    other, _ = await online(limited, create_accounts(limited, ["patient"])[0])
    try:
        await request_slot(other, SERVICE, "mine.bin", 0)
    finally:
        await other.logout()


# ------------------------------------------------------------------ PUT refused


async def test_put_checks_token_size_type_and_single_use(user, connect, session):
    data = payload(100, seed=1)
    slot = await request_slot(user, SERVICE, "photo.jpg", 100, "image/jpeg")
    token = slot.headers["Authorization"]
    no_token = type(slot)(slot.put_url, {}, slot.get_url)
    forged = type(slot)(
        slot.put_url, {"Authorization": token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")}, slot.get_url
    )
    later = type(slot)(
        slot.put_url, {"Authorization": f"Bearer {int(time.time()) + 3600}.{token.split('.', 1)[1]}"}, slot.get_url
    )
    assert (await put(session, no_token, data, "image/jpeg")).status == 401
    assert (await put(session, forged, data, "image/jpeg")).status == 403
    assert (await put(session, later, data, "image/jpeg")).status == 403  # a deadline of one's own
    assert (await put(session, slot, data[:99], "image/jpeg")).status == 400  # not the slot's size
    assert (await put(session, slot, data + b"!", "image/jpeg")).status == 400
    assert (await put(session, slot, data, "text/html")).status == 415
    response, _ = await download(session, slot.get_url)
    assert response.status == 404  # nothing stored yet

    assert (await put(session, slot, data, "image/jpeg")).status == 201
    assert (await put(session, slot, payload(100, seed=2), "image/jpeg")).status == 409  # used once
    response, body = await download(session, slot.get_url)
    assert body == data

    # Another user's token does not open this user's slot, nor this one theirs.
    other, _ = await connect()
    theirs = await request_slot(other, SERVICE, "photo.jpg", 100, "image/jpeg")
    crossed = type(slot)(theirs.put_url, slot.headers, theirs.get_url)
    assert (await put(session, crossed, data, "image/jpeg")).status == 403
    crossed = type(slot)(slot.put_url, theirs.headers, slot.get_url)
    assert (await put(session, crossed, payload(100, seed=9), "image/jpeg")).status == 403
    assert (await download(session, slot.get_url))[1] == data


async def test_put_without_content_length_is_refused(user, session):
    slot = await request_slot(user, SERVICE, "stream.bin", 10)

    async def chunks():
        yield b"0123456789"

    async with session.put(slot.put_url, data=chunks(), headers=slot.headers) as response:
        assert response.status == 411


@pytest.mark.parametrize(
    "target",
    [
        "/upload/localhost/../../../etc/passwd",
        "/upload/localhost/{id}/..%2F..%2F..%2Fetc%2Fpasswd",
        "/upload/localhost/{id}%2F..%2Fother/photo.jpg",
        "/upload/localhost/{id}/photo.jpg/..",
        "/upload/localhost/{id}/%2E%2E",
        "/upload/localhost/{id}/a%5Cb",
        "/upload/localhost/..%2F{id}/photo.jpg",
        "/upload/localhost/{id}/%ff%fe",
        "/upload/localhost/{id}",
        "/upload/localhost/{id}/photo%E2%80%AEgpj.exe",
    ],
    ids=[
        "dots",
        "encoded-slashes",
        "slash-in-id",
        "trailing-dots",
        "encoded-dots",
        "backslash",
        "id-dots",
        "not-utf8",
        "no-name",
        "bidi-override",
    ],
)
async def test_paths_that_are_no_upload_url_are_bad_requests(server, user, target):
    slot = await request_slot(user, SERVICE, "photo.jpg", 4, "image/jpeg")
    upload_id = upload_path(slot.put_url).split("/")[3]
    target = target.format(id=upload_id)
    for method, extra in (
        ("GET", ""),
        ("PUT", f"Authorization: {slot.headers['Authorization']}\r\nContent-Type: image/jpeg\r\nContent-Length: 4\r\n"),
    ):
        status = await raw_http(
            server.http_port,
            f"{method} {target} HTTP/1.1\r\nHost: localhost\r\n{extra}"
            "Connection: close\r\n\r\n" + ("abcd" if method == "PUT" else ""),
        )
        assert status == 400, (method, target)


# ------------------------------------------------------------------ GET refused


async def test_get_of_a_missing_file_is_404(user, session, server):
    data = b"here"
    slot = await upload(user, SERVICE, session, data, "here.txt", "text/plain")
    base = f"https://localhost:{server.https_port}/upload/localhost"
    upload_id = upload_path(slot.get_url).split("/")[3]
    for url in (
        f"{base}/{'A' * 32}/here.txt",  # no such id
        f"{base}/{upload_id}/other-name.txt",  # not its name
        f"https://localhost:{server.https_port}/upload/{OTHER_HOST}/{upload_id}/here.txt",
    ):  # not its host
        response, _ = await download(session, url)
        assert response.status == 404, url
    slot = await request_slot(user, SERVICE, "later.txt", 4, "text/plain")
    response, _ = await download(session, slot.get_url)  # a slot not used yet
    assert response.status == 404


async def test_other_methods_are_not_allowed(user, session):
    slot = await upload(user, SERVICE, session, b"x", "x.txt", "text/plain")
    async with session.delete(slot.get_url, headers=slot.headers) as response:
        assert response.status == 405
    assert (await download(session, slot.get_url))[1] == b"x"


# ------------------------------------------------------------------ secret


def test_signing_key_is_private_to_the_server(server):
    mode = os.stat(server.directory / "data" / "http.key").st_mode
    assert stat.S_IMODE(mode) == 0o600


# ------------------------------------------------------------------ xmppctl


async def test_xmppctl_lists_shows_quota_and_deletes(server, user, session):
    jid = str(user.boundjid.bare)
    first = await upload(user, SERVICE, session, payload(3000), "one.bin")
    second = await upload(user, SERVICE, session, payload(2000), "two.bin")
    listing = server.ctl("uploads", jid).stdout.splitlines()
    assert sorted(line.split("\t")[-1] for line in listing) == sorted([first.get_url, second.get_url])
    assert all(line.split("\t")[1:3] in (["3000", "stored"], ["2000", "stored"]) for line in listing)
    assert server.ctl("quota", jid).stdout.strip() == f"{jid}: 5000 bytes in 2 files, quota {QUOTA} bytes (0.0% used)"

    upload_id = listing[0].split("\t")[0]
    deleted = next(url for url in (first.get_url, second.get_url) if f"/{upload_id}/" in url)
    assert server.ctl("delete-upload", upload_id).stdout.startswith(f"deleted {upload_id}")
    assert (await download(session, deleted))[0].status == 404
    kept = next(url for url in (first.get_url, second.get_url) if url != deleted)
    assert server.ctl("delete-upload", kept).returncode == 0  # by its URL
    assert server.ctl("uploads", jid).stdout == ""
    missing = server.ctl("delete-upload", upload_id, check=False)
    assert missing.returncode == 1 and "no upload" in missing.stderr


# ------------------------------------------------------------------ expiry, restarts


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory):
    """Files kept 3 s, tokens valid 1 s, expired files looked for 5 times a second."""
    process = XmppdProcess(
        tmp_path_factory.mktemp("upload-expiry"),
        """
        [extensions.upload]
        file_lifetime = 3.0
        slot_lifetime = 1.0
        sweep_interval = 0.2
        """,
    ).start()
    yield process
    process.stop()


async def until(predicate, timeout: float = 15.0):
    """Poll a predicate (a function, or a coroutine function) until it holds: the
    server's expiry runs on its own clock."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_files_expire_and_are_removed(short_lived, session):
    jid = create_accounts(short_lived, ["expiring"])[0]
    client, _ = await online(short_lived, jid)
    try:
        slot = await upload(client, SERVICE, session, b"short-lived", "x.txt", "text/plain")
        files = short_lived.directory / "data" / "uploads"
        upload_id = upload_path(slot.get_url).split("/")[3]
        assert (files / upload_id).exists()

        async def gone():
            return (await download(session, slot.get_url))[0].status == 404

        await until(gone)
        await until(lambda: not (files / upload_id).exists())
        await until(lambda: short_lived.ctl("uploads", jid).stdout == "")
    finally:
        await client.logout()


async def test_expired_token_is_refused(short_lived, session):
    jid = create_accounts(short_lived, ["late"])[0]
    client, _ = await online(short_lived, jid)
    try:
        slot = await request_slot(client, SERVICE, "late.txt", 4, "text/plain")
        deadline = int(slot.headers["Authorization"].split()[1].split(".")[0])
        await asyncio.sleep(max(0.0, deadline - time.time()) + 0.2)  # the token's time passes
        assert (await put(session, slot, b"late", "text/plain")).status == 403
        # Its slot no longer counts against the quota either.
        assert short_lived.ctl("quota", jid).stdout.startswith(f"{jid}: 0 bytes in 0 files")
    finally:
        await client.logout()


@pytest.mark.parametrize(
    "lowered, status", [("quota_per_user = 800", 507), ("max_file_size = 299", 413)], ids=["quota", "max-file-size"]
)
async def test_limit_lowered_after_the_slot_is_checked_at_put(tmp_path, session, lowered, status):
    """A slot given under a larger quota or size limit: the PUT is refused, with 507 or
    413 (and the token survives the restart, the signing key being kept in the data dir)."""
    first = XmppdProcess(tmp_path, "[extensions.upload]\nquota_per_user = 1000\nslot_lifetime = 120.0\n").start()
    try:
        jid = first.adduser("saver", "secret")
        client, _ = await online(first, jid)
        await upload(client, SERVICE, session, payload(600), "a.bin")
        slot = await request_slot(client, SERVICE, "b.bin", 300, "application/octet-stream")
        await client.logout()
    finally:
        first.stop()
    second = XmppdProcess(tmp_path, f"[extensions.upload]\n{lowered}\nslot_lifetime = 120.0\n").start()
    try:
        moved = type(slot)(
            slot.put_url.replace(f":{first.https_port}/", f":{second.https_port}/"),
            slot.headers,
            slot.get_url.replace(f":{first.https_port}/", f":{second.https_port}/"),
        )
        # Not 403: the token held, the limit did not.
        assert (await put(session, moved, payload(300))).status == status
        assert (await download(session, moved.get_url))[0].status == 404
    finally:
        second.stop()


async def test_deleting_an_account_deletes_its_files(server, session):
    jid = create_accounts(server, ["leaving"])[0]
    client, _ = await online(server, jid)
    slot = await upload(client, SERVICE, session, b"bye", "bye.txt", "text/plain")
    await client.logout()
    server.ctl("deluser", jid)
    assert (await download(session, slot.get_url))[0].status == 404
    assert server.ctl("uploads", jid).stdout == ""
