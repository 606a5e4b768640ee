"""synthetic.adapt in a tiny-world run against a stub generator: after the first task the generator is asked for an
adapter of it (its most confident images, captioned with their class prompts), the second task's set names that
adapter for the first task's classes, and a run stopped after the adaptation resumes without adapting again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tinyworld import tasks as tinyworld

from gift_common.adaptation_archive import read_archive
from services.testing.fake_generator import FakeGenerator
from services.testing.trainer import run_until_killed
from services.trainer import runner as runner_module
from services.trainer import synthetic
from services.trainer.config import parse_config
from services.trainer.runner import run

pytestmark = [pytest.mark.tinyworld, pytest.mark.usefixtures("one_torch_thread")]
ADAPTER = "c" * 64


class AdaptingGenerator(FakeGenerator):
    """The stub generator with the adaptation calls: every adaptation succeeds with ADAPTER."""

    def __init__(self) -> None:
        super().__init__()
        self.archives_sent: list[bytes] = []

    def adapt(self, archive: bytes, model: str | None = None, **_: object) -> object:
        self.archives_sent.append(archive)
        return type("Status", (), {"id": f"adaptation-{len(self.archives_sent)}", "adapter": None})()

    def wait_adaptation(self, adaptation_id: str, **_: object) -> object:
        return type("Status", (), {"id": adaptation_id, "adapter": ADAPTER})()


@pytest.fixture
def generator(monkeypatch: pytest.MonkeyPatch) -> AdaptingGenerator:
    for split, size in {"train": 24, "val": 12, "test": 12}.items():
        monkeypatch.setitem(tinyworld.SPLIT_SIZES, split, size)
    fake = AdaptingGenerator()
    monkeypatch.setattr(synthetic, "GeneratorClient", lambda url: fake)
    monkeypatch.setattr(runner_module, "GeneratorClient", lambda url: fake)
    return fake


def config(tmp_path: Path, output_dir: str) -> dict:
    return {
        "output_dir": output_dir,
        "model": {"shipped": "tinyworld"},
        "method": {"preset": "gift"},
        "training": {"iterations": 2, "warmup": 1, "batch_size": 8, "lr": 1e-3, "num_workers": 0},
        "synthetic": {"size": 32, "concepts": "tinyworld", "cache_dir": f"cache-{output_dir}",
                      "adapt": {"fraction": 0.5, "scale": 0.75}},
        "evaluation": {"split": "val", "templates": "first", "num_workers": 0},
        "checkpoint_every": 1,
        "progress": False,
        "tasks": [{"dataset": {"type": "tinyworld", "task": "objects"}},
                  {"dataset": {"type": "tinyworld", "task": "scenes"}}],
    }  # fmt: skip


def test_the_second_task_replays_the_first_tasks_classes_with_its_adapter(
    tmp_path: Path, generator: AdaptingGenerator
) -> None:
    result = run(parse_config(config(tmp_path, "out"), base=tmp_path), resume=False, device=torch.device("cpu"))
    objects = tinyworld.TASKS["objects"]
    prompts = [objects.templates[0].format(name) for name in objects.classnames]
    (sent,) = generator.archives_sent  # the last task's adapter would serve no later task
    captions = [caption for _, caption in read_archive(sent)]
    assert set(captions) == set(prompts)  # every class, each image with its class prompt
    assert len(captions) < 24  # the confident half of each class
    assert list(result["adaptation"]) == ["objects"]
    record = result["adaptation"]["objects"]
    assert (record["adapter"], record["images"], record["adaptation"]) == (ADAPTER, len(captions), "adaptation-1")
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["adaptation"] == result["adaptation"]

    first, *second = generator.jobs.values()
    assert first.adapter is None and first.seeds is None  # the first task's set: as without adapt
    assert {job.adapter for job in second} == {None, ADAPTER}
    for job in second:
        learnt = [prompt in prompts for prompt in job.prompts]
        assert all(learnt) if job.adapter == ADAPTER else not any(learnt)
        assert job.adapter_scale == (0.75 if job.adapter else None)
    assert sum(len(job.prompts) for job in second) == 32


def test_a_resumed_run_does_not_adapt_again(tmp_path: Path, generator: AdaptingGenerator) -> None:
    stopped = parse_config(config(tmp_path, "stopped"), base=tmp_path)
    run_until_killed(stopped, steps=3)  # after the second task's first step
    assert len(generator.archives_sent) == 1
    resumed = run(stopped, resume=True, device=torch.device("cpu"))
    assert len(generator.archives_sent) == 1 and resumed["adaptation"]["objects"]["adapter"] == ADAPTER
