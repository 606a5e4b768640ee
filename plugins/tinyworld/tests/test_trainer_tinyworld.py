"""The trainer on the tiny world: its tasks as datasets, val splits, its concepts as the synthetic pool, real-image
replay, the pre-training probe, and a whole two-task run without a generator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tinyworld import tasks as tinyworld
from tinyworld.plugin import WorldSets
from tinyworld.plugin import probe as concept_probe
from tinyworld.replay import conditioned_pair, facts_of
from tinyworld.world import CONCEPT_NAMES, FAMILIES

from services.trainer import datasets, reports
from services.trainer.config import SyntheticConfig, TaskConfig, parse_config
from services.trainer.evaluation import probe_accuracies, zero_shot_accuracy
from services.trainer.models import TINY_TEST_ARCHITECTURE, create_model, create_tokenizer, image_transforms
from services.trainer.runner import run
from services.trainer.streams import in_order
from services.trainer.synthetic import SyntheticPairs, concept_names, prompt_pool, set_request

pytestmark = [pytest.mark.tinyworld, pytest.mark.usefixtures("one_torch_thread")]
SMALL = {"train": 24, "val": 12, "test": 12}


@pytest.fixture
def small_splits(monkeypatch: pytest.MonkeyPatch) -> None:
    for split, size in SMALL.items():
        monkeypatch.setitem(tinyworld.SPLIT_SIZES, split, size)


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)


def world_task(name: str, **fields) -> TaskConfig:
    return TaskConfig(dataset={"type": "tinyworld", "task": name}, **fields)


def test_a_tinyworld_task_is_its_split_with_the_trainers_transform(small_splits: None) -> None:
    spec = world_task("scenes")
    names = datasets.classnames(spec)
    assert names == list(tinyworld.TASKS["scenes"].classnames)
    assert datasets.templates(spec)[0] == "a centered satellite photo of {}."
    val = datasets.load_split(spec, names, "val", to_tensor)
    image, label = val[3]
    assert len(val) == SMALL["val"] and image.shape == (3, 32, 32) and label == 3
    expected = tinyworld.load_split("scenes", "val")
    assert torch.equal(image, to_tensor(expected[3][0]))
    train = datasets.load_split(spec, names, "train", to_tensor, hold_out_val=True)  # val is its own: nothing to carve
    assert len(train) == SMALL["train"]


def test_val_is_a_fixed_part_of_train_left_out_only_when_evaluating_on_val(tmp_path: Path) -> None:
    for name, colour in (("cat", (200, 0, 0)), ("dog", (0, 0, 200))):
        for i in range(15):
            folder = tmp_path / "pets" / "train" / name
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), colour).save(folder / f"{i}.png")
    spec = TaskConfig(dataset={"type": "imagefolder", "root": tmp_path / "pets", "val_fraction": 0.2})
    names = datasets.classnames(spec)
    whole = datasets.load_split(spec, names, "train", to_tensor)
    train = datasets.load_split(spec, names, "train", to_tensor, hold_out_val=True)
    val = datasets.load_split(spec, names, "val", to_tensor)
    again = datasets.load_split(spec, names, "val", to_tensor)
    assert (len(whole), len(train), len(val)) == (30, 24, 6)
    assert set(train.indices).isdisjoint(val.indices) and set(train.indices) | set(val.indices) == set(range(30))
    assert val.indices == again.indices and val.classes == ["cat", "dog"]


def test_the_world_concepts_are_a_synthetic_pool() -> None:
    assert concept_names("tinyworld") == list(CONCEPT_NAMES)
    settings = SyntheticConfig.model_validate({"concepts": "tinyworld"})
    pool = prompt_pool(concept_names("tinyworld"), settings.concept_template, [])
    assert "a photo of a red thing." in pool and "a photo of grass." in pool and len(pool) == len(CONCEPT_NAMES)


def world_sets(size: int = 40) -> WorldSets:
    """The sets of a sketches, objects, scenes sequence: world concepts, then earlier tasks' classes too."""
    settings = SyntheticConfig.model_validate({"concepts": "tinyworld", "size": size, "source": "tinyworld"})
    order = [tinyworld.TASKS[name] for name in ("sketches", "objects", "scenes")]
    requests = {}
    for index, task in enumerate(order):
        previous = [(t.classnames, t.templates[0]) for t in order[:index]]
        pool = prompt_pool(concept_names("tinyworld"), settings.concept_template, previous)
        requests[task.name] = set_request(pool, settings, index)
    return WorldSets(requests, settings)


def test_real_replay_pairs_each_prompt_with_a_world_image_showing_what_it_names() -> None:
    sets = world_sets()
    prompts = sets.requests["scenes"].prompts
    images = sets.images("scenes")
    assert images.shape == (40, 32, 32, 3) and images.dtype == np.uint8 and sets.ready("scenes")
    assert any(p.startswith("a photo of a red ") for p in prompts)  # objects' classes in their template, not concepts
    start = sets.requests["scenes"].seed  # the generator's seeds: the third task's follow the first two's images
    assert start == 2 * 40
    for i, prompt in enumerate(prompts):
        facts = facts_of(prompt)
        pair = conditioned_pair(facts, start + i)
        assert facts.items() <= pair.facts.items(), prompt
        assert np.array_equal(pair.image, images[i]), prompt
    assert np.array_equal(world_sets().images("scenes"), images)  # a rerun draws the same images


def test_replay_pairs_take_images_in_memory() -> None:
    images = world_sets(8).images("objects")
    pairs = SyntheticPairs(images, torch.arange(8)[:, None], to_tensor)
    image, tokens, index = pairs[5]
    assert torch.equal(image, to_tensor(Image.fromarray(images[5]))) and tokens.item() == 5 and index == 5


def test_real_replay_refuses_prompts_outside_the_world() -> None:
    settings = SyntheticConfig.model_validate({"size": 4, "source": "tinyworld"})  # ImageNet concepts
    request = set_request(prompt_pool(["tench", "goldfish"], settings.concept_template, []), settings, 0)
    with pytest.raises(Exception, match="synthetic set of task t \\(source tinyworld\\): prompt 'a photo of a"):
        WorldSets({"t": request}, settings).images("t")


def test_the_probe_is_concept_probes_with_every_image_encoded_once() -> None:
    torch.manual_seed(0)
    model = create_model(TINY_TEST_ARCHITECTURE)
    tokenizer, (_, transform) = create_tokenizer(TINY_TEST_ARCHITECTURE), image_transforms(model)
    probe = concept_probe("val", 150, transform)
    reference = tinyworld.concept_probes(150)
    assert set(probe.labels) == set(reference) == set(FAMILIES)
    measured = probe_accuracies(model, tokenizer, in_order(probe.images, 64), probe)
    for family, split in reference.items():
        split.transform = transform
        expected = zero_shot_accuracy(model, tokenizer, in_order(split, 64), split.classnames, split.templates)
        assert measured[family] == pytest.approx(expected), family
    test = concept_probe("test", 150)
    assert not np.array_equal(test.images.images, probe.images.images)  # reports use other held-out images


def test_the_probe_is_recorded_per_row_and_in_the_table() -> None:
    results = reports.Results(["a", "b"], "val", [[50.0, 20.0], [40.0, 60.0]], zero_shot=[10.0, 20.0],
                              probe=[{"shape": 30.0, "colour": 50.0}, {"shape": 20.0, "colour": 40.0}],
                              probe_zero_shot={"shape": 40.0, "colour": 60.0})  # fmt: skip
    summary = reports.summary(results)
    assert summary["split"] == "val" and summary["zero_shot"] == [10.0, 20.0] and summary["zero_shot_Transfer"] == 20
    assert summary["Transfer"] == 20.0  # the MTIL Transfer: rows after training only
    assert summary["pretraining"] == [40.0, 30.0] and summary["pretraining_zero_shot"] == 50.0
    assert summary["pretraining_families"][1] == {"shape": 20.0, "colour": 40.0}
    table = reports.markdown_table(summary)
    assert "on the **val** splits" in table and "| (zero-shot) | 10.0 | 20.0 |" in table
    assert "| after | mean | shape | colour |" in table and "| b | 30.0 | 20.0 | 40.0 |" in table
    plain = reports.summary(reports.Results(["a"], rows=[[50.0]]))
    assert plain["split"] == "test" and plain["pretraining"] is None and plain["zero_shot"] is None
    assert "Pre-training" not in reports.markdown_table(plain)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_run_of_two_world_tasks_with_real_replay_needs_no_generator_and_resumes(
    precision: str, small_splits: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = {
        "output_dir": "out",
        "model": {"architecture": str(TINY_TEST_ARCHITECTURE)},
        "method": {"preset": "gift"},
        "training": {"iterations": 3, "warmup": 1, "batch_size": 8, "lr": 1e-3, "num_workers": 0,
                     "precision": precision},
        "synthetic": {"size": 16, "source": "tinyworld", "concepts": "tinyworld", "generator_url": "http://127.0.0.1:1"},
        "evaluation": {"split": "val", "pretraining_probe": "tinyworld", "probe_size": 120, "num_workers": 0},
        "progress": False,
        "tasks": [{"dataset": {"type": "tinyworld", "task": "scenes"}},
                  {"dataset": {"type": "tinyworld", "task": "sketches"}}],
    }  # fmt: skip
    config = parse_config(data, base=tmp_path)
    result = run(config, resume=False, device=torch.device("cpu"))
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["tasks"] == ["scenes", "sketches"] and saved["split"] == "val" and saved["complete"]
    assert np.array(saved["accuracy"]).shape == (2, 2) and len(saved["zero_shot"]) == 2
    assert len(saved["pretraining"]) == 2 and 0 <= saved["pretraining_zero_shot"] <= 100
    assert set(saved["pretraining_families"][1]) == set(saved["pretraining_zero_shot_families"])
    assert "**val**" in (tmp_path / "out" / "results.md").read_text()
    log = [json.loads(line) for line in (tmp_path / "out" / "losses.jsonl").read_text().splitlines()]
    assert len(log) == 6 and {"distill", "ita", "awc"} <= set(log[-1])

    stopped = parse_config({**data, "output_dir": "stopped"}, base=tmp_path)
    write_reports = reports.write_reports

    def stop_after_the_first_task(out: Path, results: reports.Results, log: list) -> None:
        write_reports(out, results, log)
        if results.rows:
            raise KeyboardInterrupt  # after the task's checkpoint, as a kill there would

    monkeypatch.setattr(reports, "write_reports", stop_after_the_first_task)
    with pytest.raises(KeyboardInterrupt):
        run(stopped, resume=False, device=torch.device("cpu"))
    monkeypatch.setattr(reports, "write_reports", write_reports)
    orphan = tmp_path / "stopped" / ".checkpoint.pt.0123456789ab.tmp"
    orphan.write_bytes(b"half a checkpoint")  # as a kill in the middle of the next one's write leaves it
    assert run(stopped, resume=True, device=torch.device("cpu")) == result  # the same images replayed, same results
    assert not orphan.exists()
