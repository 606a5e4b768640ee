"""synthetic.adapt end to end: a two-task tiny-world run against a real stack (Redis, the API, a worker and the tiny
pipeline). After the first task the worker trains a LoRA of the pipeline on that task's most confident images, and
the second task's set is made with it for the first task's classes and with the base model for the concepts."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from gift_common.client import GeneratorClient
from services.stack import LocalStack
from services.testing.generator import FAST_ENV
from services.trainer.config import parse_config
from services.trainer.runner import run

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, model_home: Path) -> Iterator[LocalStack]:
    env = {"GIFT_HOME": str(model_home), **FAST_ENV}
    with LocalStack(tmp_path_factory.mktemp("adapt-run"), env=env) as running:
        yield running.start(workers=1)


def test_a_run_adapts_the_generator_to_its_first_task_and_replays_with_it(
    stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tinyworld import tasks

    for split, size in {"train": 24, "val": 12, "test": 12}.items():
        monkeypatch.setitem(tasks.SPLIT_SIZES, split, size)
    data = {
        "output_dir": "out",
        "model": {"shipped": "tinyworld"},
        "method": {"preset": "gift"},
        "training": {"iterations": 2, "warmup": 1, "batch_size": 8, "lr": 1e-3, "num_workers": 0},
        "synthetic": {"size": 16, "steps": 4, "model": "tinyworld", "concepts": "tinyworld", "cache_dir": "cache",
                      "generator_url": stack.api_url,
                      "adapt": {"fraction": 0.5, "max_images": 16, "steps": 4, "rank": 2, "learning_rate": 0.05}},
        "evaluation": {"split": "val", "templates": "first", "num_workers": 0},
        "progress": False,
        "tasks": [{"dataset": {"type": "tinyworld", "task": "scenes"}},
                  {"dataset": {"type": "tinyworld", "task": "objects"}}],
    }  # fmt: skip
    result = run(parse_config(data, base=tmp_path), resume=False, device=torch.device("cpu"))

    assert result["complete"] and list(result["adaptation"]) == ["scenes"]
    record = result["adaptation"]["scenes"]
    assert re.fullmatch(r"[0-9a-f]{64}", record["adapter"]) and record["images"] == 16  # 2 of each class's 3
    with GeneratorClient(stack.api_url) as client:
        assert record["adapter"] in {adapter.id for adapter in client.adapters()}
        assert client.adaptation(record["adaptation"]).adapter == record["adapter"]
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["adaptation"] == result["adaptation"]

    scenes = tasks.TASKS["scenes"]
    learnt = {scenes.templates[0].format(name) for name in scenes.classnames}
    jobs = [json.loads(path.read_text())["request"] for path in (tmp_path / "cache" / "sets").glob("*.json")]
    assert len(jobs) == 3  # the first task's set, the second's in two jobs
    adapted = [job for job in jobs if "adapter" in job]
    assert [job["adapter"] for job in adapted] == [record["adapter"]] and set(adapted[0]["prompts"]) <= learnt
    assert sum(len(job["prompts"]) for job in jobs) == 32
