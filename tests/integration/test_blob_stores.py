"""The blob stores against real servers: a directory, and an S3-API server process on a free port."""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from gift_common import redis_keys
from gift_common.client import GeneratorClient, GeneratorHTTPError
from gift_common.errors import UserError
from gift_common.schemas import JobRequest
from services.generator.blobs import BlobName, BlobStore, DirectoryStore, open_blob_store, sweep
from services.stack import Process, RedisServer, free_port, wait_until

pytestmark = pytest.mark.integration


def png_named(content: bytes, owner: str | None = None) -> tuple[BlobName, bytes]:
    return BlobName(hashlib.sha256(content).hexdigest(), owner), content


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
    other, other_data = png_named(b"\x89PNG second", owner="team/a b")  # a tenant's own, any characters
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
    orphan, orphan_data = png_named(b"\x89PNG kept", owner="other")  # the same bytes in another scope
    store.put(kept, kept_data)
    store.put(orphan, orphan_data)
    client.set(redis_keys.png(kept.sha256), b"", ex=60)
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


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_a_stack_on_a_blob_store_keeps_only_empty_keys_in_redis(backend, make_stack, tmp_path, request):
    if backend == "file":
        url, env = (tmp_path / "shared-blobs").as_uri(), {}
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        bucket = f"stack-{time.monotonic_ns()}"
        import boto3

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        url, env = f"s3://{bucket}/gift", {"GIFT_S3_ENDPOINT_URL": endpoint}
    stack = make_stack(workers=1, GIFT_BLOB_STORE=url, **env)
    client = GeneratorClient(stack.api_url, retries=2, backoff=0.1)
    job, pngs = client.generate(JobRequest(prompts=["a red circle", "a blue square"], num_inference_steps=2),
                                progress=False)  # fmt: skip
    keys = redis.Redis.from_url(stack.redis_url)
    assert [keys.get(redis_keys.png(image.sha256)) for image in job.images] == [b"", b""], "bytes left Redis"
    store = open_blob_store(url, env.get("GIFT_S3_ENDPOINT_URL"))
    assert [store.get(BlobName(image.sha256)) for image in job.images] == pngs, "the store holds what was served"
    with client.archive(job.id) as chunks, tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
        assert tar.extractfile("000001.png").read() == pngs[1]

    keys.delete(redis_keys.png(job.images[0].sha256))  # the image expires
    with pytest.raises(GeneratorHTTPError) as gone:
        client.image(job.images[0].sha256)
    assert gone.value.status_code == 404
    assert sweep(keys, store, grace_seconds=-1) == 1 and store.get(BlobName(job.images[0].sha256)) is None
    again, [png] = client.generate(JobRequest(prompts=["a red circle"], num_inference_steps=2), progress=False)
    assert again.cached == 0 and store.get(BlobName(again.images[0].sha256)) == png, "a resubmission makes it again"


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_an_adapter_lives_in_the_blob_store_until_deleted(backend, make_stack, tmp_path, request, model_home):
    from diffusers import UNet2DConditionModel
    from tinyworld.pipeline import default_model_dir

    from services.testing.adapters import lora_file

    if backend == "file":
        url, env = (tmp_path / "shared-blobs").as_uri(), {}
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        bucket = f"adapters-{time.monotonic_ns()}"
        import boto3

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        url, env = f"s3://{bucket}/gift", {"GIFT_S3_ENDPOINT_URL": endpoint}
    stack = make_stack(workers=1, GIFT_BLOB_STORE=url, GIFT_TORCH_THREADS="1", **env)
    data = lora_file(UNet2DConditionModel.from_pretrained(default_model_dir(model_home) / "unet"), rank=2)
    client = GeneratorClient(stack.api_url, retries=2, backoff=0.1)
    adapter = client.upload_adapter(data)
    keys, store = redis.Redis.from_url(stack.redis_url), open_blob_store(url, env.get("GIFT_S3_ENDPOINT_URL"))
    name = BlobName(adapter.id, "local", "safetensors")  # the tenant of a server without keys
    assert keys.get(redis_keys.adapter_file(adapter.id, "local")) == b"", "the bytes left Redis"
    assert store.get(name) == data
    client.generate(JobRequest(prompts=["a red circle"], num_inference_steps=2, adapter=adapter.id), progress=False)
    assert sweep(keys, store, grace_seconds=-1) == 0 and store.get(name) == data, "the sweep leaves adapters alone"
    client.delete_adapter(adapter.id)
    assert store.get(name) is None and keys.get(redis_keys.adapter_file(adapter.id, "local")) is None
