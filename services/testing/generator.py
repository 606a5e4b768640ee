"""What the generator's tests share: settings that make takeover and readiness quick, batcher tasks, and small waits
and reads on a running stack."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable

import numpy as np
import redis
from PIL import Image

from gift_common import redis_keys
from services.generator.worker.batcher import Shape, Task

# Short timeouts so that takeover and readiness happen within a test's patience; one torch thread per worker, as
# the API, Redis, the test and sometimes two workers share the machine's cores (torch's spinning threads slow
# to a crawl when they outnumber the free cores).
FAST_ENV = {
    "GIFT_CLAIM_TIMEOUT_SECONDS": "3",
    "GIFT_HEARTBEAT_SECONDS": "0.5",
    "GIFT_BATCH_SIZE": "8",
    "GIFT_TORCH_THREADS": "1",
}
SMALL = Shape("m", 25, 7.5, 32, 32)  # a batcher shape: model, steps, guidance, height, width
IDLE_MODEL = "idle-model"  # registered, and seen served by a worker that never reads it: its jobs stay queued


def tasks(job: str, n: int, shape: Shape = SMALL, entry: str = "1-0", start: int = 0) -> list[Task]:
    """``n`` images of ``job`` in one chunk (stream entry ``entry``), indices from ``start``."""
    return [Task(job, entry, i, f"p{i}", None, i, shape, f"{job}-{i}") for i in range(start, start + n)]


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def drop_cache(redis_url: str) -> None:
    """Forget which images exist, so that the next job really runs the pipeline."""
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(redis_keys.cache("*")):
        client.delete(key)


def register_idle_model(redis_url: str) -> None:
    """Register IDLE_MODEL at 32x32 as served for the next hour, so that jobs for it are accepted (a model no live
    worker serves is refused) and wait in the queue."""
    client = redis.Redis.from_url(redis_url)
    client.hset(redis_keys.MODELS, IDLE_MODEL, json.dumps({"height": 32, "width": 32, "fingerprint": "0" * 64}))
    client.hset(redis_keys.MODELS_SEEN, IDLE_MODEL, time.time() + 3600)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
