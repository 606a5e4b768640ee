"""`gift train` end to end: two tasks, a tiny random open_clip model, the real generator stack, every output; then a
run killed after its first checkpoint and resumed, which must end where the uninterrupted run ended."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import torch
import yaml
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gift_common import redis_keys
from gift_common.client import GeneratorClient
from gift_common.errors import UserError
from gift_common.schemas import JobRequest, JobStatus
from services.stack import LocalStack, free_port
from services.testing.trainer import write_tiny_arch
from services.trainer.main import run_training
from services.trainer.synthetic import SetCache, SyntheticSets

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
COLORS = {"red": (220, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 220), "yellow": (230, 210, 40)}
ITERATIONS, CHECKPOINT_EVERY, SYNTHETIC = 6, 2, 16


def noisy_square(path: Path, color: tuple[int, int, int], rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.clip(np.array(color) + rng.normal(0, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)


def make_data(root: Path) -> None:
    """Task 1 an ImageFolder (red/green), task 2 CSV lists (blue/yellow): 8 train and 4 test images per class."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("test", 4)):
        for name in ("red", "green"):
            for i in range(count):
                noisy_square(root / "colors" / split / name / f"{i}.png", COLORS[name], rng)
        rows = ["path,label"]
        for label, name in enumerate(("blue", "yellow")):
            for i in range(count):
                noisy_square(root / "more" / "img" / f"{split}-{name}-{i}.png", COLORS[name], rng)
                rows.append(f"img/{split}-{name}-{i}.png,{label if i % 2 else name}")
        (root / "more" / f"{split}.csv").write_text("\n".join(rows) + "\n")


def write_config(folder: Path, output: str, generator_url: str) -> Path:
    config = {
        "output_dir": output,
        "model": {"architecture": "gift-test-tiny.json"},
        "method": {"preset": "gift"},
        "training": {"iterations": ITERATIONS, "warmup": 2, "batch_size": 8, "lr": 1e-3, "num_workers": 0},
        "synthetic": {"size": SYNTHETIC, "steps": 4, "generator_url": generator_url, "cache_dir": "synthetic-cache"},
        "evaluation": {"batch_size": 16, "num_workers": 0},
        "checkpoint_every": CHECKPOINT_EVERY,
        "tasks": [
            {"dataset": {"type": "imagefolder", "root": "colors"}},
            {"name": "more colors", "dataset": {"type": "csv", "root": "more"}, "classnames": ["blue", "yellow"],
             "templates": ["a {} square.", "a photo of a {} thing."]},
        ],
    }  # fmt: skip
    path = folder / f"{output}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def train_in_process(config: Path, resume: bool = False) -> None:
    """`gift train` without a new interpreter (importing torch costs more than this training); one thread, as in
    the subprocess, so that every run does the same arithmetic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_training(config, resume=resume)
    finally:
        torch.set_num_threads(threads)


def train_subprocess(config: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "services.cli", "train", "--config", str(config)]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, stack: LocalStack) -> Path:
    """Data, architecture, and one uninterrupted run against the real generator."""
    folder = tmp_path_factory.mktemp("e2e")
    make_data(folder)
    write_tiny_arch(folder)
    train_in_process(write_config(folder, "whole", stack.api_url))
    return folder


def test_a_run_writes_every_output(folder: Path) -> None:
    out = folder / "whole"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tasks"] == ["colors", "more colors"] and metrics["complete"]
    assert np.array(metrics["accuracy"]).shape == (2, 2)
    assert all(0 <= value <= 100 for row in metrics["accuracy"] for value in row)
    for key in ("Transfer", "Avg", "Last", "Forget"):
        assert isinstance(metrics[key], float)
    sets = {"pairs": SYNTHETIC, "replaced": 0}  # as the jobs reported: the test pipeline has no safety checker
    assert metrics["synthetic"] == {"colors": sets, "more colors": sets}
    table = (out / "results.md").read_text()
    assert "| colors |" in table and "| Transfer | Avg | Last | Forget |" in table
    for image in ("accuracy_matrix.png", "losses.png"):
        assert Image.open(out / image).size[0] > 100
    log = [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]
    assert len(log) == 2 * ITERATIONS
    assert {"task", "distill", "ita", "awc", "loss", "lr"} <= set(log[0]) and log[-1]["task_name"] == "more colors"
    assert json.loads((out / "config.json").read_text())["checkpoint_every"] == CHECKPOINT_EVERY
    assert torch.load(out / "checkpoint.pt", weights_only=False)["engine"]["tasks_done"] == 2
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    for k, task in enumerate(["colors", "more colors"]):  # each set's grid, before its task trains
        (grid,) = events.Images(f"synthetic/{task}")
        assert grid.step == k and (grid.width, grid.height) == (8 * 96, 2 * (96 + 40))  # 16 pairs, 8 a row


def test_synthetic_sets_follow_the_pools(folder: Path) -> None:
    manifests = [json.loads(p.read_text()) for p in (folder / "synthetic-cache" / "sets").glob("*.json")]
    assert sorted(len(m["images"]) for m in manifests) == [SYNTHETIC, SYNTHETIC]
    first, second = sorted(manifests, key=lambda m: m["request"]["seed"])
    assert all(prompt.startswith("a photo of a ") for prompt in first["request"]["prompts"])
    earlier_classes = {"a photo of a red.", "a photo of a green."}  # task 1's classes in task 1's template
    assert not earlier_classes & set(first["request"]["prompts"])
    assert all(p.startswith("a photo of a ") for p in second["request"]["prompts"])  # task 2's own classes never
    assert second["request"]["seed"] == SYNTHETIC and second["request"]["num_inference_steps"] == 4
    assert first["replaced"] == second["replaced"] == 0  # the jobs' safety-checker redraws, kept with each set
    cache = SetCache(folder / "synthetic-cache")
    assert all(cache.image_path(sha).is_file() for m in manifests for sha in m["images"])


def test_a_set_evicted_between_its_job_and_its_download_is_made_again(stack: LocalStack, tmp_path: Path) -> None:
    """The server drops an image's bytes (its memory limit) right after the job ends: the archive answers 410, and
    the trainer submits the request again, which makes the image again."""
    store = redis.Redis.from_url(stack.redis_url)
    jobs: list[JobStatus] = []

    class EvictingClient(GeneratorClient):
        def wait(self, job_id: str, **kwargs: Any) -> JobStatus:
            jobs.append(job := super().wait(job_id, **kwargs))
            if len(jobs) == 1:
                assert store.delete(redis_keys.png(job.images[1].sha256)) == 1
            return job

    request = JobRequest(prompts=["a photo of a red.", "a photo of a blue.", "a photo of a red."], seed=77,
                         num_inference_steps=2)  # fmt: skip
    sets = SyntheticSets({"one": request}, SetCache(tmp_path), lambda: EvictingClient(stack.api_url), timeout=300)
    paths = sets.paths("one")
    sets.close()
    assert len(jobs) == 2 and jobs[0].id != jobs[1].id and jobs[1].cached == 2  # only the evicted image made again
    first, again = ([info.sha256 for info in sorted(job.images, key=lambda info: info.index)] for job in jobs)
    assert [path.stem for path in paths] == again and again[0::2] == first[0::2]  # the kept images served again
    assert all(hashlib.sha256(path.read_bytes()).hexdigest() == path.stem for path in paths)


def test_a_killed_run_resumes_to_the_same_results_without_the_generator(folder: Path) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"  # the sets must come from the local cache
    config = write_config(folder, "killed", nowhere)
    process = train_subprocess(config)
    checkpoint = folder / "killed" / "checkpoint.pt"
    while not checkpoint.exists():
        assert process.poll() is None, process.communicate()[0][-3000:]
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert torch.load(checkpoint, weights_only=False)["engine"]["tasks_done"] == 0  # killed inside task 1

    train_in_process(config, resume=True)
    whole, resumed = (json.loads((folder / run / "metrics.json").read_text()) for run in ("whole", "killed"))
    log_whole, log_resumed = ((folder / run / "losses.jsonl").read_text().splitlines() for run in ("whole", "killed"))
    assert resumed["accuracy"] == whole["accuracy"]
    assert [json.loads(line) for line in log_resumed] == [json.loads(line) for line in log_whole]
    weights = [
        torch.load(folder / run / "checkpoint.pt", weights_only=False)["engine"]["model"] for run in ("whole", "killed")
    ]
    assert max((weights[0][k] - weights[1][k]).abs().max().item() for k in weights[0]) == 0.0


def test_resuming_with_other_settings_is_refused(folder: Path) -> None:
    config = yaml.safe_load((folder / "whole.yaml").read_text())
    config["synthetic"]["generator_url"] = "http://127.0.0.1:1"  # where the generator is may change
    config["training"]["lr"] = 2e-3  # what the run computes may not
    changed = folder / "changed.yaml"
    changed.write_text(yaml.safe_dump(config))
    with pytest.raises(UserError, match=r"the config changed since the checkpoint in .*whole \(training\)"):
        run_training(changed, resume=True)


def test_a_second_run_in_the_same_folder_needs_resume(folder: Path) -> None:
    with pytest.raises(UserError, match="holds a run already: pass --resume"):
        run_training(write_config(folder, "whole", "http://127.0.0.1:1"))
