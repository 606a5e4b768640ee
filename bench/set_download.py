"""Seconds to bring one synthetic set from the generator into the trainer's cache, two ways, side by side:

(a) one GET /v1/images/{sha256} per image, each checked and stored (how the trainer fetched a set before);
(b) one streamed GET /v1/jobs/{id}/archive, each image checked once as it streams (`synthetic.download_set`).

Both on a private stack (Redis, the API and one worker as processes) with the tiny pipeline; the set is made once
and downloaded by each way into an empty cache. Target: a/b >= 1. The last line printed is one JSON object.
Run: .venv/bin/python bench/set_download.py [--images N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from gift_common.client import GeneratorClient
from gift_common.schemas import JobRequest
from services.stack import ONE_THREAD, LocalStack
from services.trainer.synthetic import SetCache, download_set


def per_image(client: GeneratorClient, cache: SetCache, request: JobRequest, job_id: str) -> float:
    start = time.perf_counter()
    job = client.status(job_id)
    for info in job.images:
        if not cache.has_image(info.sha256):
            cache.store_image(info.sha256, client.image(info.sha256))
    cache.store(request, [info.sha256 for info in sorted(job.images, key=lambda info: info.index)])
    return time.perf_counter() - start


def archive(client: GeneratorClient, cache: SetCache, request: JobRequest, job_id: str) -> float:
    start = time.perf_counter()
    download_set(client, cache, request, client.status(job_id))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, LocalStack(Path(tmp) / "stack", env=ONE_THREAD) as stack:
        stack.start(workers=1)
        request = JobRequest(prompts=[f"a photo of a thing number {i}." for i in range(args.images)], seed=0,
                             num_inference_steps=2)  # fmt: skip
        with GeneratorClient(stack.api_url) as client:
            job = client.wait(client.submit(request).id, progress=False)
            a = per_image(client, SetCache(Path(tmp) / "a"), request, job.id)
            b = archive(client, SetCache(Path(tmp) / "b"), request, job.id)
    print(f"(a) one GET per image: {a:7.2f} s for {args.images} images ({args.images + 1} requests)")
    print(f"(b) one archive:       {b:7.2f} s for {args.images} images (2 requests)")
    print(f"a/b = {a / b:.2f}")
    print(json.dumps({"images": args.images, "a_per_image_s": round(a, 3), "b_archive_s": round(b, 3),
                      "a_over_b": round(a / b, 2)}))  # fmt: skip


if __name__ == "__main__":
    main()
