"""Redis memory per 512x512 image with each blob store: the bytes in Redis, or only their key.

Stores the same images through the worker's own write path (`WorkerQueue.store_pngs`) into a private redis-server
once per backend and reads Redis's `used_memory` before and after. The S3 backend runs against an S3-API server
process (moto's, a dev dependency) on a free port. The images are photographs (scikit-learn's
sample images, cropped and resized to 512x512 with random offsets), so their PNGs are as large as a diffusion
model's. Prints one JSON object as its last line.

    python bench/blob_memory.py [--images 64]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

import httpx
import numpy as np
import redis
from PIL import Image
from sklearn.datasets import load_sample_images

from gift_common import redis_keys
from gift_common.settings import Settings
from services.generator.blobs import open_blob_store
from services.generator.worker.queue import WorkerQueue
from services.stack import Process, RedisServer, free_port, wait_until


def photographs(count: int, size: int = 512) -> list[bytes]:
    """PNGs of random 512x512 views of the sample photographs: the size a model's output has, not a flat image's."""
    rng, sources, pngs = np.random.default_rng(0), load_sample_images().images, []
    for i in range(count):
        source = sources[i % len(sources)]
        side = int(rng.integers(300, min(source.shape[:2]) + 1))
        top, left = (int(rng.integers(0, limit - side + 1)) for limit in source.shape[:2])
        view = Image.fromarray(source[top : top + side, left : left + side]).resize((size, size), Image.BICUBIC)
        buffer = io.BytesIO()
        view.save(buffer, format="PNG", compress_level=6)
        pngs.append(buffer.getvalue())
    return pngs


def redis_bytes_per_image(pngs: list[bytes], blob_store_url: str, run_dir: Path) -> dict[str, float]:
    server = RedisServer(run_dir / "redis").start()
    try:
        client = redis.Redis.from_url(server.url)
        settings = Settings(
            redis_url=server.url, blob_store=blob_store_url
        )  # GIFT_S3_ENDPOINT_URL from the environment
        store = open_blob_store(blob_store_url, settings.s3_endpoint_url)
        queue = WorkerQueue(redis.Redis.from_url(server.url, decode_responses=True), settings, "bench", store)
        before = client.info("memory")["used_memory"]
        items = [(None, f"content-key-{i}", hashlib.sha256(png).hexdigest(), png) for i, png in enumerate(pngs)]
        queue.store_pngs(client, items)
        after = client.info("memory")["used_memory"]
        key = redis_keys.png(items[0][2])
        return {
            "used_memory_per_image": (after - before) / len(pngs),
            "png_key_memory_usage": client.memory_usage(key, samples=0),
        }
    finally:
        server.stop()


def s3_bucket(run_dir: Path) -> tuple[str, Process]:
    """A bucket on a local S3-API server process; the caller stops the process."""
    import boto3

    port = free_port()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    server = Process(
        "s3", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], run_dir / "s3.log"
    )
    endpoint = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(endpoint).status_code < 500, 30, "the S3 server", server.popen, server.log)
    os.environ["GIFT_S3_ENDPOINT_URL"] = endpoint
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
    return "s3://bench/images", server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    args = parser.parse_args()
    pngs = photographs(args.images)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        results = {
            "redis": redis_bytes_per_image(pngs, "redis", run_dir / "a"),
            "file": redis_bytes_per_image(pngs, (run_dir / "blobs").as_uri(), run_dir / "b"),
        }
        bucket, s3_server = s3_bucket(run_dir)
        try:
            results["s3"] = redis_bytes_per_image(pngs, bucket, run_dir / "c")
        finally:
            s3_server.stop()
    mean_png = sum(map(len, pngs)) / len(pngs)
    print(f"{len(pngs)} images of 512x512, PNG {mean_png / 1024:.0f} KiB on average", file=sys.stderr)
    for name, figures in results.items():
        print(f"  {name:>5}: {figures['used_memory_per_image']:,.0f} bytes of Redis memory per image", file=sys.stderr)
    ratio = results["redis"]["used_memory_per_image"] / results["file"]["used_memory_per_image"]
    print(json.dumps({"images": len(pngs), "mean_png_bytes": mean_png, "backends": results, "redis_over_file": ratio}))


if __name__ == "__main__":
    main()
