"""A real S3-compatible server for the tests: MinIO, on 127.0.0.1.

MinIO is a Go program, and the Go module proxy is all we need to get it:

1. ``ensure_minio()`` builds the pinned MinIO with ``go install`` (CGO off, stripped)
   into a cache outside the repository, ``$XDG_CACHE_HOME/xmppd/minio/<version>/minio``
   (``~/.cache`` by default). The first build takes a few minutes on two cores; later
   runs find the binary and start nothing but MinIO. A file lock lets parallel test
   processes share one build.
2. ``s3_server()`` starts ``minio server`` on a free port of 127.0.0.1 with a
   temporary data directory and fixed root credentials, waits until its health
   endpoint answers (well under a second once built), creates the bucket, yields an
   `S3Server` and stops MinIO on exit.

``XMPPD_TEST_S3=<endpoint URL>`` (with ``XMPPD_TEST_S3_KEY``, ``XMPPD_TEST_S3_SECRET``
and optionally ``XMPPD_TEST_S3_REGION``) uses that server instead and starts nothing;
the tests then work in a bucket of their own, ``xmppd-test-<random>``, emptied and
removed at the end. Without a Go toolchain (and no ``XMPPD_TEST_S3``) `S3Unavailable`
says so and the S3 tests are skipped; a build or a start that fails is an error.

Knobs: ``XMPPD_MINIO_START_TIMEOUT`` (seconds, default 60), ``XMPPD_MINIO_KEEP``
(keep the temporary directory and MinIO's log for a post-mortem).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# MinIO publishes no semver tags the Go proxy can serve, so the pin is a pseudo-version:
# the master branch of 2026-02-12 (go.mod: go 1.24, no replace directives).
MINIO_MODULE = "github.com/minio/minio"
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"
ACCESS_KEY = "xmppd-test"
SECRET_KEY = "xmppd-test-secret"  # MinIO wants >= 8 characters
REGION = "us-east-1"
BUCKET = "xmppd-test"
LOOPBACK = "127.0.0.1"

ENV_EXTERNAL = "XMPPD_TEST_S3"
BUILD_TIMEOUT = 1800.0
START_TIMEOUT = float(os.environ.get("XMPPD_MINIO_START_TIMEOUT", "60"))


class S3Unavailable(RuntimeError):
    """No S3-compatible server can be had on this machine (the reason is the message)."""


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    region: str
    access_key: str
    secret_key: str
    bucket: str


# ---------------------------------------------------------------- install


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "xmppd" / "minio"


def minio_binary() -> Path:
    return cache_dir() / MINIO_VERSION / "minio"


def is_minio_installed() -> bool:
    return os.access(minio_binary(), os.X_OK)


def setup_timeout() -> float:
    """A pytest-timeout for the first S3 test, which may have to build MinIO first."""
    if os.environ.get(ENV_EXTERNAL) or is_minio_installed():
        return 300.0
    return BUILD_TIMEOUT + 300.0


def ensure_minio() -> Path:
    """The MinIO binary, built into the cache first if it is not there yet."""
    binary = minio_binary()
    if os.access(binary, os.X_OK):
        return binary
    go = shutil.which("go")
    if go is None:
        raise S3Unavailable("no Go toolchain (`go`) to build MinIO, and XMPPD_TEST_S3 is not set")
    binary.parent.mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test process may be building it
        if os.access(binary, os.X_OK):
            return binary
        _build(go, binary)
    return binary


def _build(go: str, binary: Path) -> None:
    staging = Path(tempfile.mkdtemp(prefix="gobin-", dir=binary.parent))
    log_path = binary.parent / "build.log"
    env = dict(os.environ, GOBIN=str(staging), CGO_ENABLED="0", GOFLAGS="-trimpath")
    command = [go, "install", "-ldflags=-s -w", f"{MINIO_MODULE}@{MINIO_VERSION}"]
    _notice(f"building MinIO {MINIO_VERSION} with Go, once (a few minutes); log: {log_path}")
    started = time.monotonic()
    try:
        with open(log_path, "wb") as log:
            try:
                subprocess.run(
                    command,
                    env=env,
                    cwd=staging,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    timeout=BUILD_TIMEOUT,
                    check=True,
                )
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"building MinIO took over {BUILD_TIMEOUT:.0f} s:\n" + _tail(log_path)) from None
            except subprocess.CalledProcessError as error:
                raise RuntimeError(f"building MinIO failed ({error.returncode}):\n" + _tail(log_path)) from None
        os.replace(staging / "minio", binary)  # atomic: a binary in place is complete
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _notice(f"built MinIO in {time.monotonic() - started:.0f} s: {binary}")


def _notice(text: str) -> None:
    # The real stderr: pytest captures sys.stderr, and a silent multi-minute pause
    # looks like a hang.
    print(f"[tests.support.s3] {text}", file=sys.__stderr__, flush=True)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------- run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def minio_process(data_dir: Path) -> Iterator[str]:
    """Run MinIO on `data_dir` until the block ends; yields its endpoint URL."""
    binary = ensure_minio()
    env = dict(
        os.environ,
        MINIO_ROOT_USER=ACCESS_KEY,
        MINIO_ROOT_PASSWORD=SECRET_KEY,
        MINIO_REGION=REGION,
        MINIO_BROWSER="off",
        MINIO_UPDATE="off",
        MINIO_CI_CD="1",
    )
    for _ in range(3):  # a free port may be taken before MinIO binds it
        port, console_port = free_port(), free_port()
        endpoint = f"http://{LOOPBACK}:{port}"
        log_path = data_dir / f"minio-{port}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [
                    str(binary),
                    "server",
                    "--quiet",
                    "--address",
                    f"{LOOPBACK}:{port}",
                    "--console-address",
                    f"{LOOPBACK}:{console_port}",
                    str(data_dir / "data"),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        try:
            if _wait_until_live(process, endpoint):
                yield endpoint
                return
            if process.poll() is None:
                raise RuntimeError(f"MinIO did not answer within {START_TIMEOUT:.0f} s:\n" + _tail(log_path))
        finally:
            _stop(process)
    raise RuntimeError("MinIO exited at start-up three times:\n" + _tail(log_path))


def _die_with_parent() -> None:
    """In the child: have Linux stop MinIO if the test process dies without cleaning up."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the fixture's teardown still runs


def _wait_until_live(process: subprocess.Popen, endpoint: str) -> bool:
    """True once MinIO answers; False if it exited or never answered."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{endpoint}/minio/health/ready", timeout=2) as reply:
                if reply.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    return False


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# ---------------------------------------------------------------- buckets


def _client(server: S3Server):
    import botocore.session
    from botocore.config import Config

    return botocore.session.get_session().create_client(
        "s3",
        region_name=server.region,
        endpoint_url=server.endpoint_url,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def create_bucket(server: S3Server) -> None:
    client = _client(server)
    try:
        request = {"Bucket": server.bucket}
        if server.region != "us-east-1":
            request["CreateBucketConfiguration"] = {"LocationConstraint": server.region}
        client.create_bucket(**request)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    finally:
        client.close()


def remove_bucket(server: S3Server) -> None:
    """Empty the bucket (objects and unfinished multipart uploads), then delete it."""
    client = _client(server)
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=server.bucket):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=server.bucket, Key=item["Key"])
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=server.bucket):
            for upload in page.get("Uploads", []):
                client.abort_multipart_upload(Bucket=server.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        client.delete_bucket(Bucket=server.bucket)
    finally:
        client.close()


# ---------------------------------------------------------------- entry points


@contextlib.contextmanager
def s3_server_running() -> Iterator[S3Server]:
    """An S3-compatible server with an empty bucket, for the duration of the block."""
    external = os.environ.get(ENV_EXTERNAL)
    if external:
        server = S3Server(
            endpoint_url=external.rstrip("/"),
            region=os.environ.get("XMPPD_TEST_S3_REGION", REGION),
            access_key=os.environ.get("XMPPD_TEST_S3_KEY", ""),
            secret_key=os.environ.get("XMPPD_TEST_S3_SECRET", ""),
            bucket=f"xmppd-test-{secrets.token_hex(6)}",
        )
        if not server.access_key or not server.secret_key:
            raise RuntimeError("XMPPD_TEST_S3 needs XMPPD_TEST_S3_KEY and XMPPD_TEST_S3_SECRET")
        create_bucket(server)
        try:
            yield server
        finally:
            remove_bucket(server)
        return
    keep = bool(os.environ.get("XMPPD_MINIO_KEEP"))
    data_dir = Path(tempfile.mkdtemp(prefix="xmppd-minio-"))
    try:
        with minio_process(data_dir) as endpoint:
            server = S3Server(endpoint, REGION, ACCESS_KEY, SECRET_KEY, BUCKET)
            create_bucket(server)
            yield server
    finally:
        if keep:
            _notice(f"kept MinIO's directory: {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """The session's S3 server; the tests that use it are skipped when none can be had.

    Tests share the bucket: each should use keys of its own.
    """
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(s3_server_running())
        except S3Unavailable as error:
            pytest.skip(f"no S3-compatible server: {error}")
        yield server
