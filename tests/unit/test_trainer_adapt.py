"""synthetic.adapt, the trainer's side: its config, the images an adapter learns from and their captions, the call to
the generator, and a later set's prompts grouped into one job per adapter with the seeds they have without adapt."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from gift_common.adaptation_archive import read_archive
from gift_common.client import GeneratorError, GeneratorUnavailable
from gift_common.errors import UserError
from gift_common.schemas import JobRequest
from services.testing.fake_generator import FakeGenerator, png
from services.trainer import adaptation
from services.trainer.config import AdaptConfig, SyntheticConfig, parse_config
from services.trainer.precision import FP32
from services.trainer.registries import REPLAY_SOURCES
from services.trainer.synthetic import SetCache, SyntheticSets, prompt_pool, set_request, split_by_adapter, whole

A, B = "a" * 64, "b" * 64  # adapter ids


# --- config ----------------------------------------------------------------------------------------------------


def test_adapt_is_off_by_default_and_confident_keeps_half_unless_told() -> None:
    assert SyntheticConfig().adapt is None
    assert SyntheticConfig.model_validate({"adapt": {}}).adapt == AdaptConfig()
    assert AdaptConfig().share == 0.5 and AdaptConfig(fraction=0.25).share == 0.25
    assert AdaptConfig(select="all").share == 1.0


@pytest.mark.parametrize(
    ("adapt", "message"),
    [
        ({"select": "all", "fraction": 0.5}, "synthetic.adapt: fraction chooses among confident images"),
        ({"select": "best"}, "synthetic.adapt.select: input should be 'confident' or 'all'"),
        ({"fraction": 0}, "synthetic.adapt.fraction: input should be greater than 0"),
        ({"fraction": 1.5}, "synthetic.adapt.fraction: input should be less than or equal to 1"),
        ({"scale": 5}, "synthetic.adapt.scale: input should be less than or equal to 4"),
        ({"rank": 0}, "synthetic.adapt.rank: input should be greater than or equal to 1"),
        ({"steps": 10, "epochs": 2}, "synthetic.adapt.epochs: unknown key"),
    ],
)
def test_a_bad_adapt_setting_is_named(tmp_path: Path, adapt: dict, message: str) -> None:
    data = {"output_dir": "out", "model": {"architecture": "ViT-B-16"}, "synthetic": {"adapt": adapt},
            "tasks": [{"dataset": {"type": "imagefolder", "root": str(tmp_path)}}]}  # fmt: skip
    with pytest.raises(UserError, match=message.replace(".", r"\.").replace("(", r"\(")):
        parse_config(data, base=tmp_path)


def test_adapt_needs_the_generator_as_its_replay_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(REPLAY_SOURCES._builtins, "real", lambda requests, settings: None)
    with pytest.raises(ValueError, match="adapt trains adapters of the generator; the replay source 'real' makes no"):
        SyntheticConfig.model_validate({"source": "real", "adapt": {}})
    assert SyntheticConfig.model_validate({"source": "real"}).adapt is None


# --- the images an adapter learns from -------------------------------------------------------------------------


def test_confident_keeps_the_top_share_of_every_class() -> None:
    labels = [0, 0, 0, 0, 1, 1, 2]
    confidence = torch.tensor([0.1, 0.9, 0.5, 0.7, 0.2, 0.3, 0.01])
    assert adaptation.chosen(labels, confidence, 0.5, 100) == [1, 3, 5, 6]  # class 2's one image stays
    assert adaptation.chosen(labels, confidence, 1.0, 100) == list(range(7))
    assert adaptation.chosen(labels, confidence, 0.1, 100) == [1, 5, 6]  # at least one a class


def test_max_images_lets_the_classes_take_turns_best_first() -> None:
    labels = [0, 0, 0, 1, 1, 1, 2]
    confidence = torch.tensor([0.1, 0.9, 0.5, 0.8, 0.7, 0.6, 0.3])
    assert adaptation.chosen(labels, confidence, 1.0, 3) == [1, 3, 6]  # each class's best
    assert adaptation.chosen(labels, confidence, 1.0, 5) == [1, 2, 3, 4, 6]  # then each class's second


def test_all_takes_every_image_in_order_up_to_the_limit() -> None:
    labels = [1, 0, 1, 0, 1]
    assert adaptation.chosen(labels, None, 1.0, 100) == [0, 1, 2, 3, 4]
    assert adaptation.chosen(labels, None, 1.0, 3) == [0, 1, 3]  # class 0 takes its turn before class 1 its second


class StubClip(nn.Module):
    """Images are 2×2 pictures whose red channel is their embedding; class k's prompt (token row [k + 1]) embeds as
    the k-th axis."""

    def __init__(self) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def encode_image(self, images: Tensor) -> Tensor:
        return images

    def encode_text(self, tokens: Tensor) -> Tensor:
        return F.one_hot(tokens[:, 0] - 1, 4).float()


def red(image: Image.Image) -> Tensor:
    return torch.tensor(np.asarray(image)[..., 0].reshape(-1), dtype=torch.float32)


@dataclass
class Pictures:
    """A dataset of (PIL image, label), as the runner loads a task's train split for adaptation."""

    rows: np.ndarray
    labels: list[int]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        pixels = np.zeros((2, 2, 3), dtype=np.uint8)
        pixels[..., 0] = self.rows[index].reshape(2, 2)
        return Image.fromarray(pixels), self.labels[index]


def test_confidence_is_the_true_class_probability_among_the_tasks_prompts() -> None:
    rows = np.array([[200, 10, 0, 0], [60, 200, 0, 0], [0, 0, 90, 90], [5, 5, 5, 200], [0, 150, 0, 30]])
    images = Pictures(rows, [0, 0, 2, 3, 1])
    confidence, labels = adaptation.confidences(StubClip(), images, torch.tensor([[k + 1] for k in range(4)]), red,
                                                torch.device("cpu"), FP32, batch_size=2)  # fmt: skip
    cos = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    weights = np.exp(10 * cos)
    expected = weights[np.arange(5), images.labels] / weights.sum(axis=1)
    assert labels == images.labels
    np.testing.assert_allclose(confidence.numpy(), expected, rtol=1e-5)
    assert adaptation.labels(images) == images.labels


def test_the_archive_captions_each_image_with_its_class_prompt() -> None:
    rows = np.arange(16).reshape(4, 4) * 10
    images = Pictures(rows, [1, 0, 1, 0])
    prompts = ["a photo of a cat.", "a photo of a dog."]
    pairs = read_archive(adaptation.archive(images, [0, 3], prompts))
    assert [caption for _, caption in pairs] == ["a photo of a dog.", "a photo of a cat."]
    assert [np.asarray(image)[..., 0].reshape(-1).tolist() for image, _ in pairs] == [
        rows[0].tolist(),
        rows[3].tolist(),
    ]


# --- the generator's adaptation job ----------------------------------------------------------------------------


@dataclass
class Status:
    id: str
    adapter: str | None


class StubAdapting:
    """The client's adaptation calls: records what was asked, answers with `adapter` once waited for."""

    def __init__(self, adapter: str | None = A) -> None:
        self.adapter, self.asked, self.waited = adapter, [], []

    def adapt(self, archive: bytes, model: str | None = None, **options: object) -> Status:
        self.asked.append((archive, model, options))
        return Status("job-1", None)

    def wait_adaptation(self, adaptation_id: str, **options: object) -> Status:
        self.waited.append((adaptation_id, options))
        return Status(adaptation_id, self.adapter)

    def close(self) -> None:
        pass


def test_the_adapter_is_asked_for_with_the_settings_and_waited_for() -> None:
    settings = SyntheticConfig.model_validate({"model": "sd15", "seed": 3, "adapt": {"steps": 50, "rank": 8,
                                               "learning_rate": 2e-4, "timeout": 60}})  # fmt: skip
    assert settings.adapt is not None
    client = StubAdapting()
    assert adaptation.adapt(client, b"tar", settings, settings.adapt, "gift cars", False) == ("job-1", A)
    assert client.asked == [(b"tar", "sd15", {"steps": 50, "rank": 8, "learning_rate": 2e-4, "seed": 3,
                                              "name": "gift cars"})]  # fmt: skip
    assert client.waited == [("job-1", {"timeout": 60, "progress": False})]
    with pytest.raises(UserError, match="adaptation job-1 \\(gift cars\\) ended without an adapter"):
        adaptation.adapt(StubAdapting(adapter=None), b"tar", settings, settings.adapt, "gift cars", True)


class FailingAdaptation(StubAdapting):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def wait_adaptation(self, adaptation_id: str, **options: object) -> Status:
        raise self.error


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (GeneratorError("adaptation job-1 failed: no image"), "adapter of gift cars: adaptation job-1 failed"),
        (GeneratorUnavailable("http://127.0.0.1:1", "ConnectError", 1), "adapter of gift cars: .*start the generator"),
    ],
)
def test_a_failed_adaptation_is_one_line_naming_the_task(error: Exception, message: str) -> None:
    settings = SyntheticConfig.model_validate({"adapt": {}})
    assert settings.adapt is not None
    with pytest.raises(UserError, match=message):
        adaptation.adapt(FailingAdaptation(error), b"tar", settings, settings.adapt, "gift cars", False)


# --- replay with the adapters ----------------------------------------------------------------------------------


def a_set() -> JobRequest:
    settings = SyntheticConfig(size=40, steps=4, seed=5)
    pool = prompt_pool(["tree"], settings.concept_template, [(["red", "blue"], "a {} thing."), (["cat"], "a {}.")])
    return set_request(pool, settings, 2)


def test_each_earlier_tasks_classes_go_to_its_adapter() -> None:
    prompts = adaptation.adapter_prompts([(["red", "blue"], "a {} thing.", A), (["cat", "red"], "a {}.", B)])
    assert prompts == {"a red thing.": A, "a blue thing.": A, "a cat.": B, "a red.": B}
    assert adaptation.adapter_prompts([(["red"], "a {}.", A), (["red"], "a {}.", B)]) == {"a red.": B}  # the later


def test_a_set_becomes_one_job_per_adapter_with_the_seeds_it_had() -> None:
    request = a_set()
    adapters = adaptation.adapter_prompts([(["red", "blue"], "a {} thing.", A), (["cat"], "a {}.", B)])
    parts = split_by_adapter(request, adapters, 0.8)
    assert sorted(i for part in parts for i in part.indices) == list(range(40))
    by_adapter = {part.request.adapter: part for part in parts}
    assert set(by_adapter) == {None, A, B}
    for adapter, part in by_adapter.items():
        job = part.request
        assert job.prompts == [request.prompts[i] for i in part.indices]
        assert job.seeds == [request.seed_of(i) for i in part.indices]  # each image its seed without adapt
        assert all(adapters.get(prompt) == adapter for prompt in job.prompts)
        assert job.adapter_scale == (None if adapter is None else 0.8)
        assert (job.num_inference_steps, job.model, job.guidance_scale) == (4, None, 7.5)


def test_a_set_no_adapter_applies_to_is_the_request_of_a_run_without_adapt() -> None:
    request = a_set()
    assert split_by_adapter(request, {}, 1.0) == whole(request)
    assert split_by_adapter(request, {"a prompt not drawn.": A}, 1.0)[0].request is request


def test_the_cache_key_includes_the_adapter_and_its_scale() -> None:
    request = a_set()
    base = split_by_adapter(request, {prompt: A for prompt in request.prompts}, 1.0)[0].request
    keys = {SetCache.key(request), SetCache.key(base),
            SetCache.key(base.model_copy(update={"adapter": B})),
            SetCache.key(base.model_copy(update={"adapter_scale": 0.5}))}  # fmt: skip
    assert len(keys) == 4


def test_a_set_of_several_jobs_comes_back_in_prompt_order_and_is_cached(tmp_path: Path) -> None:
    request = a_set()
    parts = split_by_adapter(request, adaptation.adapter_prompts([(["red", "blue"], "a {} thing.", A)]), 1.0)
    generator = FakeGenerator()
    generator.replaced = 1
    sets = SyntheticSets({"three": request}, SetCache(tmp_path), lambda: generator, parts={"three": parts})
    try:
        paths = sets.paths("three")
        assert sets.replaced("three") == 2  # one a job
    finally:
        sets.close()
    assert generator.calls["submit"] == 2 and len(generator.jobs) == 2
    expected = [png(prompt, request.seed_of(i)) for i, prompt in enumerate(request.prompts)]
    assert [path.read_bytes() for path in paths] == expected  # the fake's pixels depend on prompt and seed alone
    again = SyntheticSets({"three": request}, SetCache(tmp_path), lambda: FakeGenerator(), parts={"three": parts})
    try:
        assert again.paths("three") == paths
    finally:
        again.close()
    for part in parts:
        assert SetCache(tmp_path).load(part.request) is not None


def test_png_keeps_the_pixels() -> None:
    image = Image.new("RGB", (3, 2), (10, 20, 30))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(adaptation.png(image)))), np.asarray(image))
