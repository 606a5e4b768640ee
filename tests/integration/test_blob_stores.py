"""The blob stores against real servers: a directory, and an S3-API server process on a free port."""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from gift_common import redis_keys
from gift_common.errors import UserError
from services.generator.blobs import BlobStore, DirectoryStore, open_blob_store, sweep
from services.stack import Process, RedisServer, free_port, wait_until

pytestmark = pytest.mark.integration


def png_named(content: bytes) -> tuple[str, bytes]:
    return hashlib.sha256(content).hexdigest(), content


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An S3-API server (moto's, a separate process) on a free port, with throwaway credentials."""
    port = free_port()
    credentials = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(credentials)
    log = tmp_path_factory.mktemp("s3") / "s3.log"
    server = Process("s3", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], log)
    endpoint = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(endpoint).status_code < 500, 30, "the S3 server", server.popen, log)
    yield endpoint
    server.stop()


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "file":
        return open_blob_store((tmp_path / "blobs").as_uri())
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"gift-{os.getpid()}-{time.monotonic_ns()}"
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    return open_blob_store(f"s3://{bucket}/images", s3_endpoint_url=endpoint)


def test_put_get_delete_and_listing(store: BlobStore):
    sha, data = png_named(b"\x89PNG first")
    other, other_data = png_named(b"\x89PNG second")
    assert store.get(sha) is None
    store.put(sha, data)
    store.put(sha, data)  # idempotent
    store.put(other, other_data)
    assert store.get(sha) == data and store.get(other) == other_data
    assert sorted(name for name, _ in store.listing()) == sorted([sha, other])
    store.delete([sha])
    assert store.get(sha) is None and [name for name, _ in store.listing()] == [other]


def test_sweep_deletes_only_bytes_whose_marker_expired_past_the_grace(store: BlobStore, redis_server: RedisServer):
    client = redis.Redis.from_url(redis_server.url)
    kept, kept_data = png_named(b"\x89PNG kept")
    orphan, orphan_data = png_named(b"\x89PNG orphan")
    store.put(kept, kept_data)
    store.put(orphan, orphan_data)
    client.set(redis_keys.png(kept), b"", ex=60)
    assert sweep(client, store, grace_seconds=3600) == 0, "within the grace period nothing goes"
    assert sweep(client, store, grace_seconds=-1) == 1
    assert store.get(kept) == kept_data and store.get(orphan) is None


def test_a_bad_store_url_is_a_clear_error():
    for url, words in [("ftp://x", "use redis, file:///DIR or s3://"), ("s3://", "name the bucket"),
                       ("file://host/dir", "local directory")]:  # fmt: skip
        with pytest.raises(UserError, match=words):
            open_blob_store(url)
    with pytest.raises(UserError, match="absolute"):
        DirectoryStore(Path("relative/dir"))
