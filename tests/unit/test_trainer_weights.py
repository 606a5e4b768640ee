"""What a run leaves for other tools: weights per task that open_clip loads as they are, `gift eval` measuring them
as the run measured them, and TensorBoard event files that TensorBoard's own reader reads back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import yaml
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from services.cli import main as cli_main
from services.testing.trainer import write_tiny_arch
from services.testing.wandb_runs import history
from services.trainer.main import run_training
from services.trainer.models import create_model

COLORS = {"a": {"red": (220, 40, 40), "green": (40, 200, 40)}, "b": {"blue": (40, 40, 220), "yellow": (230, 210, 40)}}


def make_folders(root: Path) -> None:
    rng = np.random.default_rng(0)
    for task, classes in COLORS.items():
        for split in ("train", "test"):
            for name, color in classes.items():
                (root / task / split / name).mkdir(parents=True)
                for i in range(4):
                    pixels = np.clip(np.array(color) + rng.normal(0, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
                    Image.fromarray(pixels).save(root / task / split / name / f"{i}.png")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-task fine-tuning run of the tiny CLIP (no generator: FT replays nothing), W&B offline beside
    TensorBoard."""
    folder = tmp_path_factory.mktemp("weights")
    make_folders(folder)
    write_tiny_arch(folder)
    config = {
        "output_dir": "run",
        "model": {"architecture": "gift-test-tiny.json"},
        "method": {"preset": "ft"},
        "training": {"iterations": 3, "warmup": 1, "batch_size": 4, "lr": 1e-3, "num_workers": 0},
        "evaluation": {"batch_size": 8, "num_workers": 0},
        "progress": False,
        "wandb": {"mode": "offline", "project": "gift-tests"},
        "tasks": [{"dataset": {"type": "imagefolder", "root": task}} for task in COLORS],
    }
    (folder / "run.yaml").write_text(yaml.safe_dump(config))
    run_training(folder / "run.yaml")
    return folder


def logits(model: torch.nn.Module) -> torch.Tensor:
    model.eval()
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    text = open_clip.get_tokenizer("gift-test-tiny")(["a red square.", "a photo of a dog."])
    with torch.no_grad():
        image_features, text_features, scale = model(images, text)[:3]
    return scale * image_features @ text_features.T


def test_each_task_leaves_weights_open_clip_loads_as_they_are(run: Path) -> None:
    weights = sorted((run / "run" / "weights").iterdir())
    assert [path.name for path in weights] == ["01_a.safetensors", "02_b.safetensors"]
    open_clip.add_model_config(run / "gift-test-tiny.json")
    loaded = [open_clip.create_model("gift-test-tiny", pretrained=str(path)) for path in weights]
    checkpoint = torch.load(run / "run" / "checkpoint.pt", weights_only=True)
    last = create_model(run / "gift-test-tiny.json")
    last.load_state_dict(checkpoint["engine"]["model"])  # the run's model after its last task
    torch.testing.assert_close(logits(loaded[1]), logits(last), rtol=0, atol=0)
    assert not torch.equal(logits(loaded[0]), logits(loaded[1]))  # task b's training changed the model


def test_gift_eval_measures_weights_as_the_run_measured_them(run: Path) -> None:
    trained = json.loads((run / "run" / "metrics.json").read_text())
    weights = run / "run" / "weights" / "01_a.safetensors"
    cli_main(["eval", "--config", str(run / "run.yaml"), "--checkpoint", str(weights)])
    measured = json.loads((run / "run" / "eval" / "01_a" / "metrics.json").read_text())
    assert measured["accuracy"] == [trained["accuracy"][0]] and measured["weights"] == str(weights)
    assert measured["tasks"] == ["a", "b"] and not measured["complete"]
    table = (run / "run" / "eval" / "01_a" / "results.md").read_text()
    assert "| 01_a.safetensors |" in table and "Transfer" not in table

    last = str(run / "run" / "weights" / "02_b.safetensors")
    config = str(run / "run.yaml")
    cli_main(["eval", "--config", config, "--checkpoint", last, "--tasks", "b", "--out", str(run / "only-b")])
    only_b = json.loads((run / "only-b" / "metrics.json").read_text())
    assert only_b["tasks"] == ["b"] and only_b["accuracy"] == [[trained["accuracy"][1][1]]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tasks", "c"], "--tasks: no task 'c' in the config; its tasks: a, b"),
        (["--checkpoint", "missing.safetensors"], "--checkpoint missing.safetensors: no such file"),
    ],
)
def test_gift_eval_refuses_unknown_tasks_and_files_in_one_line(
    run: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    weights = str(run / "run" / "weights" / "01_a.safetensors")
    argv = ["eval", "--config", str(run / "run.yaml"), "--checkpoint", weights, *args]
    with pytest.raises(SystemExit) as exited:
        cli_main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1 and message in err


def test_a_run_leaves_tensorboard_events_with_every_term_and_measure(run: Path) -> None:
    events = EventAccumulator(str(run / "run" / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    per_step = {"loss/task", "loss/total", "lr", "speed/images_per_s", "memory/peak_gib"}
    measured = {"accuracy/a", "accuracy/b", "metrics/Transfer", "metrics/Avg", "metrics/Last", "metrics/Forget"}
    assert per_step | measured <= scalars
    log = [json.loads(line) for line in (run / "run" / "losses.jsonl").read_text().splitlines()]
    task = events.Scalars("loss/task")
    assert [event.step for event in task] == list(range(len(log))) == list(range(6))
    assert [event.value for event in task] == pytest.approx([entry["task"] for entry in log], rel=1e-6)
    assert [event.value for event in events.Scalars("lr")] == pytest.approx([entry["lr"] for entry in log], rel=1e-6)
    metrics = json.loads((run / "run" / "metrics.json").read_text())
    on_a = events.Scalars("accuracy/a")  # zero-shot, then after each task
    expected = [metrics["zero_shot"][0], metrics["accuracy"][0][0], metrics["accuracy"][1][0]]
    assert [event.step for event in on_a] == [0, 1, 2]
    assert [event.value for event in on_a] == pytest.approx(expected, rel=1e-6)
    assert events.Scalars("metrics/Avg")[-1].value == pytest.approx(metrics["Avg"], rel=1e-6)
    assert all(event.value > 0 for event in events.Scalars("memory/peak_gib"))
    assert [image.step for image in events.Images("accuracy_matrix")] == [0, 1, 2]


def test_the_offline_wandb_run_holds_the_same_values(run: Path) -> None:
    (run_dir,) = (run / "run" / "wandb").glob("offline-run-*")
    rows = history(run_dir)
    log = [json.loads(line) for line in (run / "run" / "losses.jsonl").read_text().splitlines()]
    steps = [row for row in rows if "loss/task" in row]
    assert [row["step"] for row in steps] == list(range(len(log)))
    assert [row["loss/task"] for row in steps] == pytest.approx([entry["task"] for entry in log], rel=1e-6)
    metrics = json.loads((run / "run" / "metrics.json").read_text())
    on_a = [row for row in rows if "accuracy/a" in row]  # zero-shot, then after each task
    expected = [metrics["zero_shot"][0], metrics["accuracy"][0][0], metrics["accuracy"][1][0]]
    assert [row["tasks_trained"] for row in on_a] == [0, 1, 2]
    assert [row["accuracy/a"] for row in on_a] == pytest.approx(expected, rel=1e-6)
    assert [row["metrics/Avg"] for row in rows if "metrics/Avg" in row] == pytest.approx([metrics["Avg"]], rel=1e-6)
    pictures = [row for row in rows if "accuracy_matrix/path" in row]  # a picture's fields, flattened
    assert [row["tasks_trained"] for row in pictures] == [0, 1, 2]
    last = Image.open(run_dir / "files" / pictures[-1]["accuracy_matrix/path"])
    assert last.size == Image.open(run / "run" / "accuracy_matrix.png").size
