"""Adaptation jobs with real parts: Redis, the API, workers and the tiny pipeline. An archive of images and captions
trains a LoRA whose adapter changes a job's images; progress, cancel, bad archives, and a worker killed mid-training
whose job a restarted worker finishes from its checkpoint."""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest
import redis
from PIL import Image

from gift_common import redis_keys
from gift_common.adaptation_archive import write_archive
from gift_common.client import AdaptationFailed, GeneratorClient, GeneratorHTTPError
from gift_common.schemas import JobRequest, JobState
from services.stack import LocalStack
from services.testing.generator import FAST_ENV, pixels, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]
ALICE, BOB = "alice-key", "bob-key"
ENV = {"GIFT_API_KEYS": f"alice:{ALICE},bob:{BOB}", "GIFT_MAX_ADAPTATION_IMAGES": "8",
       "GIFT_ADAPTATION_CHECKPOINT_STEPS": "2"}  # fmt: skip
DRAW = {"prompts": ["a red circle on grey"], "seed": 21, "num_inference_steps": 4}
TRAIN = {"steps": 8, "rank": 2, "learning_rate": 0.05, "seed": 3}  # a large rate: a few steps must show in pixels


def _png(number: int) -> bytes:
    """A 32x32 picture: a red disc at a place of its own on grey."""
    image = Image.new("RGB", (32, 32), (128, 128, 128))
    x, y = 4 + 3 * (number % 4), 4 + 5 * (number // 4)
    for i in range(x, x + 12):
        for j in range(y, y + 12):
            if (i - x - 6) ** 2 + (j - y - 6) ** 2 < 30:
                image.putpixel((i, j), (220, 30, 30))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


ARCHIVE = write_archive((_png(n), "a red circle on grey") for n in range(8))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, model_home) -> Iterator[LocalStack]:  # type: ignore[no-untyped-def]
    env = {"GIFT_HOME": str(model_home), **FAST_ENV, **ENV}
    with LocalStack(tmp_path_factory.mktemp("adaptations"), env=env) as running:
        yield running.start(workers=1)


def _client(stack: LocalStack, key: str = ALICE) -> GeneratorClient:
    return GeneratorClient(stack.api_url, key, retries=0)


def _post(stack: LocalStack, data: bytes, key: str = ALICE) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/x-tar"}
    params: dict[str, str | int] = {"model": "tinyworld", "steps": 4}
    return httpx.post(f"{stack.api_url}/v1/adaptations", params=params, content=data, headers=headers, timeout=30)


def _draw(client: GeneratorClient, **fields: object) -> np.ndarray:
    _, (png,) = client.generate(JobRequest(**{**DRAW, **fields}), progress=False)
    return pixels(png)


def test_an_adaptation_makes_an_adapter_that_changes_the_images(stack: LocalStack) -> None:
    with _client(stack) as client:
        queued = client.adapt(ARCHIVE, "tinyworld", name="circles", **TRAIN)  # type: ignore[arg-type]
        assert (queued.status, queued.step, queued.steps, queued.adapter) == (JobState.queued, 0, 8, None)
        seen = [queued.step]
        while not (status := client.adaptation(queued.id)).status.terminal:
            seen.append(status.step)
        done = client.wait_adaptation(queued.id, timeout=120, progress=False)
        assert done.status is JobState.succeeded and done.step == 8 and done.finished is not None
        assert seen == sorted(seen), "progress only rises"
        adapter = client.adapters()[0]
        assert (adapter.id, adapter.name, adapter.rank, adapter.shared) == (done.adapter, "circles", 2, False)
        base, adapted = _draw(client), _draw(client, adapter=done.adapter)
        assert np.abs(adapted - base).mean() > 0.5, "the trained adapter must change the image"
    with _client(stack, BOB) as bob:
        assert httpx.get(f"{stack.api_url}/v1/adaptations/{queued.id}", headers={"Authorization": f"Bearer {BOB}"}
                         ).status_code == 404, "another tenant's adaptation is not found"  # fmt: skip
        assert bob.adapters() == [], "the adapter is its tenant's own"
    with _client(stack) as client, pytest.raises(GeneratorHTTPError) as refused:
        client.cancel_adaptation(queued.id)
    assert refused.value.status_code == 409


def test_a_cancelled_adaptation_stops_training_and_makes_no_adapter(stack: LocalStack) -> None:
    with _client(stack) as client:
        queued = client.adapt(ARCHIVE, "tinyworld", steps=5000, rank=2)
        wait_for(lambda: client.adaptation(queued.id).step > 0, 120, "training to start")
        cancelled = client.cancel_adaptation(queued.id)
        assert cancelled.status is JobState.cancelled and cancelled.adapter is None
        wait_for(lambda: "cancelled; training stopped" in stack.workers[0].log.read_text(), 30, "the worker to stop")
        assert client.adaptation(queued.id).step == cancelled.step, "no step after the cancel"
        with pytest.raises(AdaptationFailed, match="cancelled"):
            client.wait_adaptation(queued.id, timeout=5, progress=False)
        keys = redis.Redis.from_url(stack.redis_url).keys(redis_keys.adaptation(queued.id, "alice") + ":*")
        assert keys == [], "the archive and the checkpoint go with the job"


def _tar(files: dict[str, bytes], link: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    return buffer.getvalue()


CAPTION = b'{"file": "a.png", "caption": "a red circle"}\n'


@pytest.mark.parametrize(
    ("archive", "detail"),
    [
        (b"this is not a tar archive, just text" * 20, "archive: the archive is not a tar file"),
        (_tar({"captions.jsonl": CAPTION, "a.png": _png(0)}, link="b.png"), "archive: b.png: a link"),
        (_tar({"a.png": _png(0)}), "archive: the archive has no captions.jsonl"),
        (_tar({"captions.jsonl": CAPTION, "a.png": b"GIF89a not a png"}), "archive: a.png: not a readable PNG"),
        (write_archive((_png(n), "a circle") for n in range(9)), "archive: the archive holds more than 8 images"),
    ],
)
def test_a_bad_archive_is_a_422_that_names_the_fault(stack: LocalStack, archive: bytes, detail: str) -> None:
    answer = _post(stack, archive, BOB)
    assert answer.status_code == 422 and answer.json()["detail"].startswith(detail), answer.text


def test_too_many_steps_or_an_unknown_model_is_a_422(stack: LocalStack) -> None:
    for model, params, detail in [("tinyworld", {"steps": 10**6}, "steps: 1000000 is more than"),
                                  ("nothing", {}, "model: unknown model 'nothing'")]:  # fmt: skip
        answer = httpx.post(f"{stack.api_url}/v1/adaptations", params={"model": model, **params},
                            content=ARCHIVE, headers={"Authorization": f"Bearer {ALICE}"})  # fmt: skip
        assert answer.status_code == 422 and answer.json()["detail"].startswith(detail), answer.text


def test_a_worker_killed_mid_training_leaves_a_job_a_restarted_worker_finishes_from_its_checkpoint(
    make_stack: Callable[..., LocalStack],
) -> None:
    stack = make_stack(**ENV)
    with _client(stack) as client:
        queued = client.adapt(ARCHIVE, "tinyworld", **{**TRAIN, "steps": 60})  # type: ignore[arg-type]
        checkpoint = redis_keys.adaptation_checkpoint(queued.id, "alice")
        store = redis.Redis.from_url(stack.redis_url)
        wait_for(lambda: store.exists(checkpoint) == 1, 120, "a first checkpoint")
        stack.workers[0].kill()
        assert client.adaptation(queued.id).status is JobState.running, "the job outlives its worker"
        restarted = stack.start_worker()
        done = client.wait_adaptation(queued.id, timeout=240, progress=False)
        assert done.status is JobState.succeeded and done.adapter is not None
        resumed = re.search(r"resumed from its checkpoint at step (\d+)", restarted.log.read_text())
        assert resumed is not None and int(resumed.group(1)) > 0, "the restarted worker went on from a checkpoint"
        assert store.exists(checkpoint) == 0
        assert not np.array_equal(_draw(client), _draw(client, adapter=done.adapter))
