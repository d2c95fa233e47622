"""End to end: XEP-0363 uploads stored in a real S3-compatible server (MinIO, started by
tests/support/s3.py), with the bytes relayed through xmppd and with presigned URLs that
send clients straight to the store. Select with `-k s3`."""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

import pytest

from tests.support.accounts import create_accounts
from tests.support.inbox import online
from tests.support.s3 import S3Server, _client, setup_timeout
from tests.support.server import XmppdProcess
from tests.support.upload import KiB, MiB, download, http, payload, put, request_slot, upload

pytestmark = [pytest.mark.s3, pytest.mark.timeout(setup_timeout())]

SERVICE = "upload.localhost"


def s3_config(server: S3Server, prefix: str, presigned: bool) -> str:
    return f"""
        [storage]
        media = "s3"

        [storage.s3]
        bucket = "{server.bucket}"
        endpoint_url = "{server.endpoint_url}"
        region = "{server.region}"
        access_key = "{server.access_key}"
        secret_key = "{server.secret_key}"
        key_prefix = "{prefix}"
        presigned = {"true" if presigned else "false"}
        """


def objects(server: S3Server, prefix: str) -> dict[str, int]:
    """Object name -> size, under `prefix` in the test bucket."""
    client = _client(server)
    try:
        listing = client.list_objects_v2(Bucket=server.bucket, Prefix=prefix)
        return {item["Key"]: item["Size"] for item in listing.get("Contents", [])}
    finally:
        client.close()


def upload_id(url: str) -> str:
    return urlsplit(url).path.split("/")[3]


class Deployment:
    def __init__(self, process: XmppdProcess, prefix: str, presigned: bool):
        self.process, self.prefix, self.presigned = process, prefix, presigned


@pytest.fixture(scope="module", params=["relayed", "presigned"])
def deployment(request, tmp_path_factory):
    s3_server = request.getfixturevalue("s3_server")
    prefix = f"upload-{request.param}-{secrets.token_hex(4)}/"
    presigned = request.param == "presigned"
    process = XmppdProcess(
        tmp_path_factory.mktemp(f"upload-s3-{request.param}"), s3_config(s3_server, prefix, presigned)
    ).start()
    yield Deployment(process, prefix, presigned)
    process.stop()


@pytest.fixture
async def user(deployment):
    jid = create_accounts(deployment.process, [f"s3user{secrets.token_hex(3)}"])[0]
    client, _ = await online(deployment.process, jid)
    yield client
    await client.logout()


@pytest.fixture
async def session():
    async with http() as session:
        yield session


@pytest.mark.parametrize("size", [1, 100 * KiB, 9 * MiB], ids=["1B", "100KiB", "9MiB-multipart"])
async def test_s3_round_trip_is_byte_identical(s3_server, deployment, user, session, size):
    data = payload(size, seed=size)
    slot = await request_slot(user, SERVICE, "clip.mp4", size, "video/mp4")
    presigned = deployment.presigned
    if presigned:
        assert slot.put_url.startswith(s3_server.endpoint_url)  # straight to the store
        assert slot.headers == {}
    else:
        assert slot.put_url == slot.get_url and set(slot.headers) == {"Authorization"}
    assert slot.get_url.startswith(f"https://localhost:{deployment.process.https_port}/")
    response = await put(session, slot, data, "video/mp4")
    assert response.status in ((200,) if presigned else (201,))
    assert objects(s3_server, deployment.prefix)[deployment.prefix + upload_id(slot.get_url)] == size

    async with session.get(slot.get_url, allow_redirects=False) as response:
        if presigned:
            # xmppd redirects to a freshly signed URL of the store.
            assert response.status == 302
            assert response.headers["Location"].startswith(s3_server.endpoint_url)
    response, body = await download(session, slot.get_url)
    assert response.status == 200
    assert body == data
    assert response.headers["Content-Type"] == "video/mp4"
    assert int(response.headers["Content-Length"]) == size


async def test_s3_range_and_head(deployment, user, session):
    data = payload(5000, seed=5)
    slot = await upload(user, SERVICE, session, data, "doc.pdf", "application/pdf")
    response, body = await download(session, slot.get_url, Range="bytes=4000-4099")
    assert (response.status, body) == (206, data[4000:4100])
    async with session.head(slot.get_url) as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == "5000"
        assert response.headers["Content-Type"] == "application/pdf"


async def test_s3_put_of_another_size_or_type_is_refused(s3_server, deployment, user, session):
    slot = await request_slot(user, SERVICE, "photo.jpg", 100, "image/jpeg")
    assert (await put(session, slot, payload(99), "image/jpeg")).status in (400, 403)
    assert (await put(session, slot, payload(100), "text/html")).status in (403, 415)
    assert deployment.prefix + upload_id(slot.get_url) not in objects(s3_server, deployment.prefix)
    response, _ = await download(session, slot.get_url)
    assert response.status == 404


async def test_s3_deleted_file_leaves_the_bucket(s3_server, deployment, user, session):
    slot = await upload(user, SERVICE, session, b"to be deleted", "gone.txt", "text/plain")
    name = deployment.prefix + upload_id(slot.get_url)
    assert name in objects(s3_server, deployment.prefix)
    deployment.process.ctl("delete-upload", slot.get_url)
    assert name not in objects(s3_server, deployment.prefix)
    response, _ = await download(session, slot.get_url)
    assert response.status == 404
