"""synthetic.adapt's replay side with real parts (Redis, the API, a worker, the tiny pipeline): a set whose earlier
task's prompts name an uploaded adapter is made as one job per adapter, and comes back in prompt order; its base-model
images are those of the same set without adapt, its adapted images are not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gift_common.client import GeneratorClient
from services.stack import LocalStack
from services.testing.adapters import lora_file
from services.testing.generator import FAST_ENV, pixels
from services.trainer.adaptation import adapter_prompts
from services.trainer.config import SyntheticConfig
from services.trainer.synthetic import SetCache, SyntheticSets, prompt_pool, set_request, split_by_adapter

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]
CLASSES, TEMPLATE = ["red circle", "blue square"], "a {} on grey."


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, model_home: Path) -> Iterator[LocalStack]:
    env = {"GIFT_HOME": str(model_home), **FAST_ENV}
    with LocalStack(tmp_path_factory.mktemp("adapted-sets"), env=env) as running:
        yield running.start(workers=1)


@pytest.fixture(scope="module")
def adapter(stack: LocalStack, model_home: Path) -> str:
    from diffusers import UNet2DConditionModel
    from tinyworld.pipeline import default_model_dir

    unet = UNet2DConditionModel.from_pretrained(default_model_dir(model_home) / "unet")
    with GeneratorClient(stack.api_url) as client:
        return client.upload_adapter(lora_file(unet, std=0.5), model="tinyworld", name="task one").id


def obtain(stack: LocalStack, cache: Path, request, parts=None) -> list[np.ndarray]:
    sets = SyntheticSets({"two": request}, SetCache(cache), lambda: GeneratorClient(stack.api_url),
                         parts=None if parts is None else {"two": parts})  # fmt: skip
    try:
        return [pixels(path.read_bytes()) for path in sets.paths("two")]
    finally:
        sets.close()


def test_a_set_with_an_adapter_keeps_its_base_images_and_changes_the_adapted_ones(
    stack: LocalStack, adapter: str, tmp_path: Path
) -> None:
    settings = SyntheticConfig(size=8, steps=4, seed=3, model="tinyworld", concept_template="a photo of {}.")
    request = set_request(prompt_pool(["grass", "sky"], settings.concept_template, [(CLASSES, TEMPLATE)]), settings, 1)
    adapters = adapter_prompts([(CLASSES, TEMPLATE, adapter)])
    adapted = [i for i, prompt in enumerate(request.prompts) if prompt in adapters]
    assert 0 < len(adapted) < len(request.prompts)  # both kinds drawn

    parts = split_by_adapter(request, adapters, 1.0)
    assert len(parts) == 2
    plain = obtain(stack, tmp_path / "plain", request)
    mixed = obtain(stack, tmp_path / "mixed", request, parts)
    for index, (before, after) in enumerate(zip(plain, mixed, strict=True)):
        if index in adapted:
            assert np.abs(before.astype(int) - after.astype(int)).mean() > 1, f"image {index} is unchanged"
        else:
            assert np.array_equal(before, after), f"base image {index} differs"
