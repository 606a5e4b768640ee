"""synthetic.filter with the tiny world's CLIP: it keeps the pairs whose image shows what their prompt says, and a run
records what each task kept, stores the teacher's pass beside the sets, and resumes to the same results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tinyworld import tasks as tinyworld
from tinyworld.plugin import WorldSets
from tinyworld.shipped import clip_files

from services.testing.trainer import run_until_killed
from services.trainer import filtering
from services.trainer.config import FilterConfig, SyntheticConfig, parse_config
from services.trainer.engine import frozen_copy
from services.trainer.models import create_model, create_tokenizer, image_transforms
from services.trainer.precision import FP32
from services.trainer.runner import run
from services.trainer.synthetic import SyntheticPairs, concept_names, prompt_pool, set_request

pytestmark = [pytest.mark.tinyworld, pytest.mark.usefixtures("one_torch_thread")]


def test_the_worlds_clip_keeps_pairs_that_match_and_drops_pairs_that_do_not(tmp_path: Path) -> None:
    """64 world pairs of the scenes task's pool; the prompts of the second half shuffled among themselves, so that
    30 of those images show something else than their prompt says."""
    architecture, weights = clip_files()
    teacher, tokenizer = frozen_copy(create_model(architecture, weights)), create_tokenizer(architecture)
    settings = SyntheticConfig.model_validate({"concepts": "tinyworld", "size": 64, "source": "tinyworld"})
    objects = tinyworld.TASKS["objects"]
    pool = prompt_pool(concept_names("tinyworld"), settings.concept_template, [(objects.classnames,
                                                                                 objects.templates[0])])  # fmt: skip
    request = set_request(pool, settings, 1)
    images, prompts = WorldSets({"scenes": request}, settings).images("scenes"), list(request.prompts)
    shuffled = prompts[:32] + [prompts[32 + i] for i in np.random.default_rng(0).permutation(32)]
    wrong = {i for i, (given, shown) in enumerate(zip(shuffled, prompts, strict=True)) if given != shown}
    assert len(wrong) == 30
    pairs = SyntheticPairs(images, tokenizer(shuffled), image_transforms(teacher)[1])
    how = filtering.Pass(torch.device("cpu"), FP32, batch_size=32)
    store = filtering.TeacherStore(tmp_path)
    choice = filtering.choose(teacher, pairs, tokenizer(pool), FilterConfig(keep=0.5), store, "key", how)
    assert len(wrong & set(choice.kept.tolist())) <= 3  # 1 on the shipped weights (2026-12-08)
    mismatched = torch.tensor(sorted(wrong))
    assert choice.confidence[mismatched].mean() < 0.1 * choice.confidence[:32].mean()
    assert choice.summary()["kept_confidence"] > 1.5 * choice.summary()["confidence"]


def test_a_run_records_what_each_task_kept_and_resumes_to_the_same_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for split, size in {"train": 24, "val": 12, "test": 12}.items():
        monkeypatch.setitem(tinyworld.SPLIT_SIZES, split, size)
    data = {
        "output_dir": "out",
        "model": {"shipped": "tinyworld"},
        "method": {"preset": "gift"},
        "training": {"iterations": 2, "warmup": 1, "batch_size": 8, "lr": 1e-3, "num_workers": 0},
        "synthetic": {"size": 32, "source": "tinyworld", "concepts": "tinyworld", "cache_dir": "cache",
                      "filter": {"keep": 0.5}},
        "evaluation": {"split": "val", "templates": "first", "num_workers": 0},
        "checkpoint_every": 1,
        "progress": False,
        "tasks": [{"dataset": {"type": "tinyworld", "task": "objects"}},
                  {"dataset": {"type": "tinyworld", "task": "scenes"}}],
    }  # fmt: skip
    result = run(parse_config(data, base=tmp_path), resume=False, device=torch.device("cpu"))
    kept = result["synthetic"]
    assert list(kept) == ["objects", "scenes"]
    for task in kept.values():
        assert task["pairs"] == 32 and task["kept"] == 16 and task["replaced"] is None  # world images: never redrawn
        assert 0 < task["confidence"] < task["kept_confidence"] <= 1
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["synthetic"] == kept
    assert len(list((tmp_path / "cache" / "teacher").glob("*.safetensors"))) == 2  # one pass per set and teacher

    stopped = parse_config({**data, "output_dir": "stopped", "synthetic": {**data["synthetic"], "cache_dir": "other"}},
                           base=tmp_path)  # fmt: skip
    run_until_killed(stopped, steps=3)  # after the second task's first step
    assert run(stopped, resume=True, device=torch.device("cpu")) == result
    assert len(list((tmp_path / "other" / "teacher").glob("*.safetensors"))) == 2  # the resumed task read its pass
