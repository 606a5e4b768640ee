"""LoRA adapters with real parts: Redis, the API, a worker and the tiny pipeline. An adapter made with peft is uploaded,
named by jobs of two tenants, refused in its spoiled forms, and deleted while jobs that name it wait."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from gift_common.client import GeneratorClient, GeneratorHTTPError, JobFailed
from gift_common.schemas import JobRequest, JobState
from services.stack import LocalStack
from services.testing.adapters import lora_file, pickled, renamed, reshaped
from services.testing.generator import FAST_ENV, drop_cache, pixels

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]
ALICE, BOB = "alice-key", "bob-key"
LIMITS = {"GIFT_MAX_ADAPTER_RANK": "8", "GIFT_MAX_ADAPTER_BYTES": "400000"}
DRAW = {"prompts": ["a red circle on grey"], "seed": 21, "num_inference_steps": 4}


@pytest.fixture(scope="module")
def model_dir(model_home: Path) -> Path:
    from tinyworld.pipeline import default_model_dir

    return default_model_dir(model_home)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, model_home: Path) -> Iterator[LocalStack]:
    keys = {"GIFT_API_KEYS": f"alice:{ALICE},bob:{BOB}"}
    env = {"GIFT_HOME": str(model_home), **FAST_ENV, **keys, **LIMITS}
    with LocalStack(tmp_path_factory.mktemp("adapters"), env=env) as running:
        yield running.start(workers=1)


@pytest.fixture(scope="module")
def unet(model_dir: Path) -> object:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(model_dir / "unet")


def _upload(stack: LocalStack, key: str, data: bytes, **params: object) -> httpx.Response:
    return httpx.post(f"{stack.api_url}/v1/adapters", params={"model": "tinyworld", **params}, content=data,
                      headers={"Authorization": f"Bearer {key}"}, timeout=30)  # fmt: skip


def _call(stack: LocalStack, method: str, path: str, key: str) -> httpx.Response:
    return httpx.request(method, f"{stack.api_url}{path}", headers={"Authorization": f"Bearer {key}"})


def _draw(stack: LocalStack, key: str, **fields: object) -> np.ndarray:
    with GeneratorClient(stack.api_url, key) as client:
        _, (png,) = client.generate(JobRequest(**{**DRAW, **fields}), progress=False)
    return pixels(png)


def _refused(stack: LocalStack, request: JobRequest) -> None:
    """Bob's job naming an adapter he may not use: a 422 at submission, naming the field."""
    with GeneratorClient(stack.api_url, BOB, retries=0) as client, pytest.raises(GeneratorHTTPError) as refused:
        client.submit(request)
    assert refused.value.status_code == 422 and str(refused.value.detail).startswith("adapter: no adapter")


def _direct(model_dir: Path, data: bytes, tmp_path: Path, scale: float) -> np.ndarray:
    """The image a plain diffusers call makes with the adapter, on the worker's sampler (DPM-Solver++ 2M)."""
    from diffusers import DiffusionPipeline, DPMSolverMultistepScheduler

    pipeline = DiffusionPipeline.from_pretrained(model_dir, local_files_only=True)
    config = {**pipeline.scheduler.config, "algorithm_type": "dpmsolver++", "solver_order": 2}
    pipeline.scheduler = DPMSolverMultistepScheduler.from_config(config)
    (tmp_path / "lora.safetensors").write_bytes(data)
    pipeline.load_lora_weights(str(tmp_path / "lora.safetensors"), adapter_name="direct")
    pipeline.set_adapters(["direct"], adapter_weights=[scale])
    image = pipeline(prompt=DRAW["prompts"], num_inference_steps=DRAW["num_inference_steps"], output_type="np",
                     generator=[torch.Generator("cpu").manual_seed(DRAW["seed"])]).images[0]  # fmt: skip
    return (np.clip(image, 0, 1) * 255).round().astype(np.int16)


def _metric(stack: LocalStack, name: str) -> float:
    for line in httpx.get(f"{stack.api_url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_a_job_with_an_adapter_draws_what_diffusers_draws_with_it(stack, unet, model_dir, tmp_path):
    data = lora_file(unet, rank=4, seed=1)
    first = _upload(stack, ALICE, data, name="circles")
    assert first.status_code == 201, first.text
    info = first.json()
    assert (info["rank"], info["layers"], info["bytes"], info["shared"]) == (4, 32, len(data), False)
    again = _upload(stack, ALICE, data)
    assert again.status_code == 200 and again.json()["id"] == info["id"], "the same file is the same adapter"
    listed = _call(stack, "GET", "/v1/adapters", ALICE).json()
    assert [adapter["id"] for adapter in listed] == [info["id"]]

    base = _draw(stack, ALICE)
    adapted = _draw(stack, ALICE, adapter=info["id"])
    assert np.abs(adapted - base).mean() > 1, "the adapter must change the image"
    assert np.array_equal(adapted, _direct(model_dir, data, tmp_path, 1.0))
    half = _draw(stack, ALICE, adapter=info["id"], adapter_scale=0.5)
    assert np.array_equal(half, _direct(model_dir, data, tmp_path, 0.5))
    assert not np.array_equal(half, adapted) and not np.array_equal(half, base)
    drop_cache(stack.redis_url)  # drawn again, not served from the cache
    assert np.array_equal(_draw(stack, ALICE), base), "the base model is itself again after an adapter"
    assert _metric(stack, "gift_adapter_loads_total") == 1, "one load; the scale and the base are switches"
    assert _metric(stack, "gift_adapter_switch_seconds_count") == 3
    assert _metric(stack, "gift_adapter_cache_hits_total") == 1, "the call at scale 0.5 found it loaded"

    openai = httpx.post(f"{stack.api_url}/v1/images/generations", headers={"Authorization": f"Bearer {ALICE}"},
                        json={"prompt": DRAW["prompts"][0], "seed": DRAW["seed"], "num_inference_steps": 4,
                              "adapter": info["id"], "response_format": "b64_json"}, timeout=60)  # fmt: skip
    assert openai.status_code == 200, openai.text
    assert np.array_equal(pixels(base64.b64decode(openai.json()["data"][0]["b64_json"])), adapted)


@pytest.mark.parametrize(
    ("spoil", "status", "detail"),
    [
        (pickled, 422, "the file: the file is a pickle or a torch.save archive"),
        (lambda data: b"\x00" * 64, 422, "the file: not a safetensors file: "),
        (lambda data: renamed(data, "unet.", "unet.other."), 422, "layer(s) are not layers of model 'tinyworld'"),
        (lambda data: reshaped(data, transpose=True), 422, "do not fit its weight"),
        (lambda data: reshaped(data, grow_rank=6), 422, "rank 10 is over this server's limit of 8"),
        (lambda data: renamed(data, "unet.", "lora_unet_"), 422, "kohya-style names are not accepted"),
        (lambda data: data + b"\x00" * 400_000, 413, "larger than this server's limit of 400000 bytes"),
    ],
)
def test_a_spoiled_upload_is_refused_naming_the_fault_and_nothing_is_kept(stack, unet, spoil, status, detail):
    answer = _upload(stack, BOB, spoil(lora_file(unet, rank=4, seed=3)))
    assert answer.status_code == status and detail in answer.json()["detail"], answer.text
    assert _call(stack, "GET", "/v1/adapters", BOB).json() == []


def test_an_unknown_model_or_adapter_is_refused(stack, unet):
    answer = _upload(stack, BOB, lora_file(unet, rank=4, seed=3), model="nope")
    assert answer.status_code == 422 and answer.json()["detail"].startswith("model: unknown model 'nope'")
    _refused(stack, JobRequest(**DRAW, adapter="0" * 64))


def test_tenants_see_their_own_and_the_shared_adapters_only(stack, unet):
    with GeneratorClient(stack.api_url, ALICE) as alice, GeneratorClient(stack.api_url, BOB) as bob:
        own = alice.upload_adapter(lora_file(unet, rank=2, seed=4), name="alice's own").id
        shared = alice.upload_adapter(lora_file(unet, rank=2, seed=5), model="tinyworld", shared=True).id
        for method in ("GET", "DELETE"):
            answer = _call(stack, method, f"/v1/adapters/{own}", BOB)
            assert answer.status_code == 404 and "not found" in answer.json()["detail"]
        _refused(stack, JobRequest(**DRAW, adapter=own))
        assert [(adapter.id, adapter.shared) for adapter in bob.adapters()] == [(shared, True)]
        assert _draw(stack, BOB, adapter=shared).shape == (32, 32, 3)
        assert _call(stack, "DELETE", f"/v1/adapters/{shared}", BOB).status_code == 403
        assert alice.delete_adapter(own).name == "alice's own"
        assert own not in [adapter.id for adapter in alice.adapters()]
        assert _call(stack, "GET", f"/v1/adapters/{own}", ALICE).status_code == 404


def test_deleting_an_adapter_fails_its_queued_jobs_and_nothing_else(stack, unet):
    doomed = _upload(stack, ALICE, lora_file(unet, rank=4, seed=6)).json()["id"]
    kept = _upload(stack, ALICE, lora_file(unet, rank=4, seed=7)).json()["id"]
    stack.workers[0].stop()  # the jobs below wait in the queue
    with GeneratorClient(stack.api_url, ALICE) as client:
        requests = {"doomed": JobRequest(**{**DRAW, "seed": 40}, adapter=doomed),
                    "kept": JobRequest(**{**DRAW, "seed": 40}, adapter=kept),
                    "base": JobRequest(**{**DRAW, "seed": 40})}  # fmt: skip
        jobs = {name: client.submit(request).id for name, request in requests.items()}
        assert _call(stack, "DELETE", f"/v1/adapters/{doomed}", ALICE).status_code == 200
        stack.start_worker()
        with pytest.raises(JobFailed) as failed:
            client.wait(jobs["doomed"], timeout=120, progress=False)
        assert failed.value.job.error == f"adapter {doomed} was deleted while the job was queued"
        for name in ("kept", "base"):
            assert client.wait(jobs[name], timeout=120, progress=False).status == JobState.succeeded
