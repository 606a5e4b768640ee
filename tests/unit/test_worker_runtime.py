"""The worker's runtime choices: per-model batch sizes, the scheduler swap, and a fingerprint per variant."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from gift_common.errors import UserError
from services.generator.worker.batcher import Backlog, Shape, Task
from services.generator.worker.main import ModelSpec, parse_model_spec
from services.generator.worker.synthesis import RuntimeOptions, fingerprint, generate, load_model
from services.testing.standins import SD15_NAME


def test_a_model_spec_may_carry_its_batch_size() -> None:
    assert parse_model_spec("sd=/m/sd") == ModelSpec("sd", Path("/m/sd"), None)
    assert parse_model_spec("sd=/m/a@b/sd@32") == ModelSpec("sd", Path("/m/a@b/sd"), 32)
    assert parse_model_spec("sd=/m/a@b/sd") == ModelSpec("sd", Path("/m/a@b/sd"), None)
    for bad in ("sd", "sd=", "sd=/m@", "sd=/m@0", "sd=/m@x", "=/m@4"):
        with pytest.raises(UserError, match="NAME=DIR@BATCH"):
            parse_model_spec(bad)


def test_a_batch_takes_its_models_own_size() -> None:
    backlog = Backlog()
    for model in ("big", "small"):
        shape = Shape(model, 2, 7.5, 8, 8)
        backlog.add_chunk([Task(model, "e", i, "p", None, i, shape, f"{model}{i}") for i in range(10)])
    assert [len(backlog.next_batch(4, {"big": 2})) for _ in range(3)] == [2, 4, 2]


def test_dpm_solver_replaces_the_directorys_scheduler_and_changes_the_fingerprint(
    tiny_standins: dict[str, Path],
) -> None:
    directory = tiny_standins[SD15_NAME]
    cpu = torch.device("cpu")
    swapped = load_model("sd", directory, cpu, batch_size=3)
    native = load_model("sd", directory, cpu, RuntimeOptions(scheduler="directory"))
    assert type(swapped.pipeline.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert swapped.pipeline.scheduler.config.algorithm_type == "dpmsolver++"
    assert type(native.pipeline.scheduler).__name__ == "PNDMScheduler"
    assert swapped.stand_in and swapped.batch_size == 3 and swapped.variant["attention"] == "sdpa"
    assert len({swapped.fingerprint, native.fingerprint, fingerprint(directory)}) == 3
    assert load_model("sd", directory, cpu).fingerprint == swapped.fingerprint  # deterministic: the cache still hits
    # either worker keys each scheduler a job may name as the other keys its own
    assert swapped.fingerprints == native.fingerprints == {"dpmsolver++": swapped.fingerprint,
                                                           "directory": native.fingerprint}  # fmt: skip
    args = dict(prompts=["a cat"], negative_prompts=[None], seeds=[0], num_inference_steps=3, guidance_scale=5.0)
    size = dict(height=swapped.height, width=swapped.width)
    dpm, own = generate(swapped, **args, **size), generate(native, **args, **size)
    assert dpm != own  # why the variant is in the key
    assert generate(native, **args, **size, scheduler="dpmsolver++") == dpm  # a job may name the other one
    assert generate(native, **args, **size) == own  # and the next job that names none has the worker's again


@pytest.mark.slow  # inductor compiles C++ for the UNet: minutes on a CPU (4 min 46 s beside other work)
@pytest.mark.timeout(1800)
def test_a_compiled_unet_warms_up_at_load_draws_the_same_picture_and_has_its_own_key(
    tiny_standins: dict[str, Path],
) -> None:
    from PIL import Image

    directory = tiny_standins[SD15_NAME]
    cpu = torch.device("cpu")
    eager = load_model("sd", directory, cpu)
    compiled = load_model("sd", directory, cpu, RuntimeOptions(compile_unet=True))  # warm_up compiles here
    assert isinstance(compiled.pipeline.unet, torch._dynamo.eval_frame.OptimizedModule)
    assert compiled.variant["compile_unet"] and compiled.fingerprint != eager.fingerprint
    args = dict(prompts=["a cat", "a dog"], negative_prompts=[None, None], seeds=[0, 1], num_inference_steps=3,
                guidance_scale=5.0, height=eager.height, width=eager.width)  # fmt: skip
    pictures = [[np.asarray(Image.open(io.BytesIO(png)), dtype=int) for png in generate(model, **args).pngs]
                for model in (eager, compiled)]  # fmt: skip
    for picture, twin in zip(*pictures, strict=True):  # fused kernels round differently: a level or two at most
        assert np.abs(picture - twin).max() <= 2
