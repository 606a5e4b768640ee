"""An adaptation's training on the tiny pipeline, in process: a job stopped at a checkpoint and resumed from it
ends with the very file an uninterrupted run makes, and the pipeline is left as it was."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from services.generator.adaptations import Adaptation
from services.generator.worker.adapters import AdapterCache
from services.generator.worker.synthesis import LoadedModel, generate, load_model
from services.generator.worker.training import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")
JOB = Adaptation("ad-" + "0" * 32, "alice", "tinyworld", steps=6, rank=2, learning_rate=0.01, seed=5, shared=False,
                 name=None)  # fmt: skip
PAIRS = [(Image.new("RGB", (40, 24), (30 * n, 200 - 20 * n, 90)), f"a colour numbered {n}") for n in range(5)]


@pytest.fixture(scope="module")
def model(model_home: Path) -> LoadedModel:
    from tinyworld.pipeline import default_model_dir

    return load_model("tinyworld", default_model_dir(model_home), torch.device("cpu"))


def _draw(model: LoadedModel) -> np.ndarray:
    drawn = generate(model, prompts=["a red circle"], negative_prompts=[None], seeds=[3], num_inference_steps=3,
                     guidance_scale=7.5, height=model.height, width=model.width)  # fmt: skip
    return np.frombuffer(drawn.pngs[0], dtype=np.uint8)


def _recorder(steps: list[int], until: int | None = None) -> Callable[[int], bool]:
    """A report that notes each step and says stop after ``until``."""

    def report(step: int) -> bool:
        steps.append(step)
        return until is None or step < until

    return report


def _nowhere(step: int, data: bytes) -> None:
    """A checkpoint's save that keeps nothing."""


def test_a_resumed_training_ends_where_an_uninterrupted_one_does_and_leaves_the_pipeline_as_it_was(
    model: LoadedModel,
) -> None:
    before = _draw(model)
    saved: dict[int, bytes] = {}
    straight = train(model, PAIRS, JOB, resume=None, every=2, report=lambda step: True, save=saved.__setitem__)
    assert straight is not None and sorted(saved) == [2, 4], "a checkpoint every 2 steps, none at the end"

    steps: list[int] = []
    stopped = train(model, PAIRS, JOB, resume=None, every=2, report=_recorder(steps, until=3), save=_nowhere)
    assert stopped is None and steps == [1, 2, 3], "a stop is honoured after the step it is asked at"
    resumed_steps: list[int] = []
    resumed = train(model, PAIRS, JOB, resume=saved[4], every=2, report=_recorder(resumed_steps), save=_nowhere)
    assert resumed_steps == [4, 5, 6], "the resumed run reports its checkpoint's step, then goes on from there"
    assert resumed == straight, "the same LoRA, bit for bit, as the uninterrupted run"

    other = train(model, PAIRS, Adaptation(**{**JOB.__dict__, "seed": 6}), resume=None, every=10,
                  report=lambda step: True, save=_nowhere)  # fmt: skip
    assert other != straight, "the seed draws the training"
    assert not [name for name, _ in model.pipeline.unet.named_parameters() if "lora" in name], "no LoRA is left"
    assert np.array_equal(_draw(model), before), "the pipeline draws what it drew before any training"


def test_training_beside_a_loaded_adapter_ignores_it_and_leaves_it_working(model: LoadedModel, tmp_path: Path) -> None:
    from services.testing.adapters import lora_file

    straight = train(model, PAIRS, JOB, resume=None, every=10, report=lambda step: True, save=_nowhere)
    data = lora_file(model.pipeline.unet, rank=2, seed=1)
    cache = AdapterCache(lambda adapter: data, tmp_path, max_count=2, max_bytes=10**8)
    cache.activate(model, "a" * 64, 1.0)
    adapted = _draw(model)
    cache.base(model)  # what the worker does around a training
    beside = train(model, PAIRS, JOB, resume=None, every=10, report=lambda step: True, save=_nowhere)
    cache.base(model)
    assert beside == straight, "the loaded adapter took no part in the training"
    cache.activate(model, "a" * 64, 1.0)
    assert np.array_equal(_draw(model), adapted), "the loaded adapter draws as before"
    cache.activate(model, None, 0.0)
