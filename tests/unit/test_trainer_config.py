"""Run configs: defaults, paths relative to the file, one clear line per mistake, and the shipped MTIL configs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from gift_common.errors import UserError
from services.cli import main as cli_main
from services.testing.trainer import write_tiny_arch
from services.trainer import configs as shipped_configs
from services.trainer.config import MTIL_DATASETS, EvaluationConfig, load_config, parse_config
from services.trainer.main import run_training
from services.trainer.runner import build_model, changed_settings, outcome_settings

REPO = Path(__file__).resolve().parents[2]
MINIMAL = {
    "output_dir": "runs/a",
    "model": {"architecture": "arch/tiny.json", "pretrained": "weights.pt"},
    "tasks": [{"dataset": {"type": "CIFAR100", "root": "data"}}, {"dataset": {"type": "imagefolder", "root": "pets"}}],
}


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def error_of(data: object, tmp_path: Path) -> str:
    with pytest.raises(UserError) as caught:
        load_config(write(tmp_path, data))
    return str(caught.value)


def test_defaults_and_paths_relative_to_the_config_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert config.output_dir == tmp_path / "runs/a"
    assert config.model.architecture == str(tmp_path / "arch/tiny.json")
    assert config.model.pretrained == tmp_path / "weights.pt"
    assert config.tasks[1].dataset.root == tmp_path / "pets"
    assert [task.label for task in config.tasks] == ["CIFAR100", "pets"]
    assert config.method.settings().ita == 0.25 and config.method.teacher == "cached"
    assert config.schedule(config.tasks[0]) == {"lr": 1e-5, "iterations": 1000, "warmup": 100, "batch_size": 64}
    assert config.synthetic.size == 1000


def test_a_task_overrides_the_training_defaults(tmp_path: Path) -> None:
    tasks = [{**MINIMAL["tasks"][0], "lr": 5e-5, "batch_size": 8}]
    config = parse_config({**MINIMAL, "tasks": tasks, "training": {"iterations": 10}}, base=tmp_path)
    assert config.schedule(config.tasks[0]) == {"lr": 5e-5, "iterations": 10, "warmup": 100, "batch_size": 8}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"tasks": [{"dataset": {"type": "CIFAR10", "root": "d"}}]}, "tasks[0].dataset: type: unknown dataset type"),
        ({"tasks": [{"dataset": {"type": "MNIST", "root": "d"}, "lr": -1}]}, "tasks[0].lr: input should be greater"),
        ({"tasks": [{"dataset": {"type": "MNIST", "root": "d"}, "bacth_size": 8}]}, "tasks[0].bacth_size: unknown key"),
        ({"tasks": []}, "tasks: list should have at least 1 item"),
        ({"tasks": [{"dataset": {"type": "MNIST", "root": "d"}, "templates": ["a photo"]}]}, "exactly one '{}'"),
        ({"tasks": [{"dataset": {"type": "MNIST", "root": "d"}, "templates": ["a {} {kind}"]}]}, "no other braces"),
        ({"method": {"preset": "zscl"}}, "method.preset: unknown method 'zscl'; registered: ewc, ft, gift"),
        ({"method": {"overrides": {"itaa": 1}}}, "method.overrides: unknown setting itaa; known: distill"),
        ({"method": {"overrides": {"ewc_batches": 2.5}}}, "method.overrides: ewc_batches: input should be a valid int"),
        ({"synthetic": {"height": 30}}, "synthetic.height: input should be a multiple of 8"),
        ({"device": "gpu"}, "device: string should match pattern"),
        ({"model": {}}, "model.architecture: required key missing"),
        pytest.param(
            {"tasks": [{"dataset": {"type": "tinyworld"}}]},
            "tasks[0].dataset: task: required key missing",
            marks=pytest.mark.tinyworld,
        ),
        pytest.param(
            {"tasks": [{"dataset": {"type": "tinyworld", "task": "shapes"}}]},
            "tasks[0].dataset: task: unknown tinyworld task; known: objects, textures, digits, scenes, letters",
            marks=pytest.mark.tinyworld,
        ),
        pytest.param(
            {"tasks": [{"dataset": {"type": "tinyworld", "task": "digits", "root": "d"}}]},
            "tasks[0].dataset: root: unknown key",
            marks=pytest.mark.tinyworld,
        ),
        ({"tasks": [{"dataset": {"type": "CIFAR100"}}]}, "tasks[0].dataset: root: required key missing"),
        ({"tasks": [{"dataset": {"type": "csv"}}]}, "tasks[0].dataset: root: required key missing"),
        (
            {"tasks": [{"dataset": {"type": "MNIST", "root": "d", "task": "digits"}}]},
            "tasks[0].dataset: task: unknown key",
        ),
        ({"evaluation": {"split": "train"}}, "evaluation.split: input should be 'test' or 'val'"),
        ({"evaluation": {"pretraining_probe": "imagenet"}}, "evaluation.pretraining_probe: unknown probe 'imagenet'"),
        ({"synthetic": {"source": "web"}}, "synthetic.source: unknown replay source 'web'; registered: generator"),
        ({"tasks": [{"dataset": {"root": "d"}}]}, "tasks[0].dataset: a mapping with a 'type', one of: Aircraft"),
    ],
)
def test_each_mistake_names_the_key_and_the_rule(tmp_path: Path, change: dict, expected: str) -> None:
    message = error_of({**MINIMAL, **change}, tmp_path)
    assert expected in message
    assert message.startswith(str(tmp_path / "run.yaml")) and "\n" not in message


def test_all_mistakes_in_one_message(tmp_path: Path) -> None:
    message = error_of({"model": {"architecture": "x"}, "seed": -1}, tmp_path)
    assert "output_dir: required key missing" in message
    assert "tasks: required key missing" in message
    assert "seed: input should be greater than or equal to 0 (got -1)" in message


def test_repeated_task_names_are_refused(tmp_path: Path) -> None:
    tasks = [{"dataset": {"type": "MNIST", "root": "a"}}, {"dataset": {"type": "MNIST", "root": "b"}}]
    assert "task names must be unique; repeated: MNIST" in error_of({**MINIMAL, "tasks": tasks}, tmp_path)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("tasks: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    assert "must be a mapping" in error_of(["a", "list"], tmp_path)


def test_the_command_line_prints_one_line_and_no_traceback(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, {**MINIMAL, "checkpoint_every": 0})
    with pytest.raises(SystemExit) as exited:
        cli_main(["train", "--config", str(path)])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint_every: input should be greater than or equal to 1" in err


def test_a_shipped_config_by_name_reads_its_paths_against_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config("mtil_order1")
    assert config.output_dir == tmp_path / "runs" / "mtil_order1_gift"
    assert config.model.pretrained == tmp_path / "models" / "ViT-B-16-openai" / "open_clip_pytorch_model.bin"
    assert {task.dataset.root for task in config.tasks} == {tmp_path / "data" / "mtil"}
    (tmp_path / "mtil_order1").mkdir()  # a file or folder of that name is what the user means
    with pytest.raises(UserError, match="cannot read config mtil_order1"):
        load_config("mtil_order1")


def test_an_unknown_config_name_lists_the_shipped_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        UserError, match=r"no such file, nor a shipped config of that name \(mtil_order1, mtil_order2, "
    ):
        load_config("tinyword")
    assert {"mtil_order1", "mtil_order2", "tinyworld"} <= set(shipped_configs.names())


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ({"shipped": "no-such-model"}, "model: unknown shipped CLIP model 'no-such-model'; registered: "),
        ({"shipped": "tinyworld", "pretrained": "w.pt"}, "model: shipped names the architecture and the weights"),
    ],
)
def test_shipped_model_mistakes_are_one_line(tmp_path: Path, model: dict, expected: str) -> None:
    assert expected in error_of({**MINIMAL, "model": model}, tmp_path)


def test_checking_a_config_imports_neither_torch_nor_torchvision() -> None:
    """Names are registered and implementations load when a run starts, so `gift train` refuses a bad config fast."""
    script = (
        "import sys; from services.trainer.config import load_config; load_config('mtil_order1'); "
        "print(sorted({'torch', 'torchvision', 'open_clip', 'diffusers'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


ORDER_II = ["StanfordCars", "Food", "MNIST", "OxfordPet", "Flowers", "SUN397"]
ORDER_II += ["Aircraft", "Caltech101", "DTD", "EuroSAT", "CIFAR100"]


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ({"architecture": "No-Such-Model"}, "model: unknown architecture 'No-Such-Model'"),
        ({"architecture": "missing.json"}, "model: architecture config .*missing.json not found"),
        ({"architecture": "ViT-B-16", "pretrained": "none.pt"}, "model: checkpoint .*none.pt not found"),
    ],
)
def test_model_mistakes_are_user_errors(tmp_path: Path, model: dict, expected: str) -> None:
    with pytest.raises(UserError, match=expected):
        run_training(write(tmp_path, {**MINIMAL, "model": model}))


@pytest.mark.parametrize(("name", "order"), [("mtil_order1", list(MTIL_DATASETS)), ("mtil_order2", ORDER_II)])
def test_shipped_mtil_configs_have_the_papers_settings(name: str, order: list[str]) -> None:
    config = load_config(shipped_configs.path(name))
    assert [task.dataset.type for task in config.tasks] == order
    assert config.model.architecture.startswith("ViT-B-16") and config.model.pretrained is not None
    assert config.method.preset == "gift" and config.synthetic.size == 1000
    schedules = {task.label: config.schedule(task) for task in config.tasks}
    assert {s["iterations"] for s in schedules.values()} == {1000}
    assert {s["batch_size"] for s in schedules.values()} == {64}
    assert {s["warmup"] for s in schedules.values()} == {100}  # ZSCL's and GIFT_CL's warmup_length
    assert (config.training.weight_decay, tuple(config.training.betas)) == (0.0, (0.9, 0.999))
    assert {label for label, s in schedules.items() if s["lr"] == 5e-5} == {"Aircraft", "MNIST"}
    assert {s["lr"] for s in schedules.values()} == {1e-5, 5e-5}
    assert config.evaluation.templates == "all"  # the benchmark's classifier: the mean over every template
    # the authors' sampling: SD v1.5's own scheduler (PNDM) at 50 steps, guidance 7.5
    synthetic = config.synthetic
    assert (synthetic.model, synthetic.scheduler, synthetic.steps, synthetic.guidance) == ("sd15", "directory", 50, 7.5)


def test_a_first_template_evaluation_keeps_only_the_training_template() -> None:
    templates = ["a photo of a {}.", "a drawing of a {}.", "itap of a {}."]
    assert EvaluationConfig().evaluated_templates(templates) == templates
    assert EvaluationConfig(templates="first").evaluated_templates(templates) == ["a photo of a {}."]


@pytest.mark.tinyworld
def test_tinyworld_tasks_are_named_after_their_task_and_their_concepts_get_their_own_template(tmp_path: Path) -> None:
    tasks = [{"dataset": {"type": "tinyworld", "task": "scenes"}}, {"dataset": {"type": "tinyworld", "task": "digits"}}]
    config = parse_config({**MINIMAL, "tasks": tasks, "synthetic": {"concepts": "tinyworld"}}, base=tmp_path)
    assert [task.label for task in config.tasks] == ["scenes", "digits"]
    assert config.tasks[0].dataset.seed == 0
    assert config.synthetic.concept_template == "a photo of {}."  # "a circle" carries its article
    assert config.evaluation.split == "test" and config.evaluation.pretraining_probe == "none"
    assert config.synthetic.source == "generator" and config.tasks[1].dataset.type == "tinyworld"
    own = parse_config({**MINIMAL, "synthetic": {"concepts": "tinyworld", "concept_template": "{}."}}, base=tmp_path)
    assert own.synthetic.concept_template == "{}."
    assert parse_config(MINIMAL, base=tmp_path).synthetic.concept_template == "a photo of a {}."


@pytest.mark.tinyworld
def test_the_shipped_tinyworld_config_runs_the_six_tasks_on_val_with_the_probe() -> None:
    config = load_config("tinyworld")  # its model is the plugin's, wherever the plugin is installed
    assert [task.label for task in config.tasks] == ["objects", "textures", "digits", "scenes", "letters", "sketches"]
    tinyworld = REPO / "plugins" / "tinyworld" / "tinyworld"
    assert Path(config.model.architecture).resolve() == tinyworld / "tiny-clip.json"
    assert Path(str(config.model.pretrained)).resolve() == tinyworld / "weights" / "tiny-clip.pt"
    assert config.method.preset == "gift" and config.synthetic.concepts == "tinyworld"
    settings = config.method.settings()  # the weights chosen on val: GIFT whole, AWC at a tenth of the paper's
    assert (settings.distill, settings.ita, settings.awc) == (1.0, 0.25, 0.1)
    assert config.evaluation.split == "val" and config.evaluation.pretraining_probe == "tinyworld"
    assert config.training.num_workers == config.evaluation.num_workers == 0


def test_a_resumed_run_may_move_or_change_its_operational_settings_but_not_what_it_computes(tmp_path: Path) -> None:
    saved = outcome_settings(parse_config(MINIMAL, base=tmp_path))
    moved = {**MINIMAL, "output_dir": "elsewhere/a", "progress": False,
             "training": {"num_workers": 0, "grad_checkpointing": True}}  # fmt: skip
    assert changed_settings(saved, parse_config(moved, base=tmp_path)) == []
    other = {**MINIMAL, "training": {"lr": 0.5}, "seed": 3}
    assert changed_settings(saved, parse_config(other, base=tmp_path)) == ["seed", "training"]


def test_a_run_saved_before_a_setting_existed_resumes_when_that_setting_is_at_its_default(tmp_path: Path) -> None:
    saved = outcome_settings(parse_config(MINIMAL, base=tmp_path))
    del saved["training"]["precision"]  # a checkpoint written before training.precision existed
    assert changed_settings(saved, parse_config(MINIMAL, base=tmp_path)) == []
    bf16 = {**MINIMAL, "training": {"precision": "bf16"}}
    assert changed_settings(saved, parse_config(bf16, base=tmp_path)) == ["training"]


def test_grad_checkpointing_reaches_both_towers(tmp_path: Path) -> None:
    data = {**MINIMAL, "model": {"architecture": str(write_tiny_arch(tmp_path))}}
    for on in (False, True):
        model = build_model(
            parse_config({**data, "training": {"grad_checkpointing": on}}, base=tmp_path), torch.device("cpu")
        )
        assert model.transformer.grad_checkpointing is model.visual.transformer.grad_checkpointing is on


def test_weights_that_are_not_a_state_dict_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "garbage.bin").write_bytes(bytes(range(256)) * 8)
    data = {**MINIMAL, "model": {"architecture": str(write_tiny_arch(tmp_path)), "pretrained": "garbage.bin"}}
    with pytest.raises(UserError) as refused:
        build_model(parse_config(data, base=tmp_path), torch.device("cpu"))
    assert "garbage.bin is not a weights file torch can read safely" in str(refused.value)
    assert "weights_only" not in str(refused.value) and "\n" not in str(refused.value)


def test_a_state_dict_of_other_keys_says_which(tmp_path: Path) -> None:
    torch.save({"not.a.clip.key": torch.zeros(2)}, tmp_path / "other.pt")
    data = {**MINIMAL, "model": {"architecture": str(write_tiny_arch(tmp_path)), "pretrained": "other.pt"}}
    with pytest.raises(UserError) as refused:
        build_model(parse_config(data, base=tmp_path), torch.device("cpu"))
    message = str(refused.value)
    assert "Missing key(s)" in message and not message.endswith(":") and "\n" not in message, message
