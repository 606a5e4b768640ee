"""Composed run configs: `base:` chains, `--set` overrides checked by the schema, and `gift config show`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gift_common.errors import UserError
from services.cli import main as cli_main
from services.trainer import configs as shipped_configs
from services.trainer.config import load_config, parse_config

BASE = {
    "output_dir": "runs/base",
    "model": {"architecture": "RN50", "pretrained": "weights.pt"},
    "training": {"lr": 1e-5, "iterations": 10},
    "tasks": [{"dataset": {"type": "CIFAR100", "root": "data"}}, {"dataset": {"type": "MNIST", "root": "data"}}],
}


def write(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_config_extends_a_file_and_merges_mappings_key_by_key(tmp_path: Path) -> None:
    write(tmp_path / "bases" / "base.yaml", BASE)
    child = write(tmp_path / "run.yaml", {"base": "bases/base.yaml", "training": {"lr": 3e-5}, "seed": 4})
    config = load_config(child)
    assert config.training.lr == 3e-5 and config.training.iterations == 10  # merged, not replaced
    assert config.seed == 4 and config.output_dir == tmp_path / "runs/base"  # paths: from the named config's folder
    assert [task.dataset.type for task in config.tasks] == ["CIFAR100", "MNIST"]


def test_a_list_replaces_the_bases_and_chains_go_deeper(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", BASE)
    write(tmp_path / "b.yaml", {"base": "a.yaml", "tasks": [{"dataset": {"type": "DTD", "root": "d"}}]})
    config = load_config(write(tmp_path / "c.yaml", {"base": "b.yaml", "training": {"iterations": 3}}))
    assert [task.dataset.type for task in config.tasks] == ["DTD"]
    assert config.training.iterations == 3 and config.training.lr == 1e-5


def test_bases_that_loop_or_are_missing_are_one_line_errors(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", {**BASE, "base": "b.yaml"})
    write(tmp_path / "b.yaml", {"base": "a.yaml"})
    with pytest.raises(UserError, match="extend each other in a loop"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(UserError, match=r"base: .*nowhere.yaml is no file, nor 'nowhere.yaml' a shipped config"):
        load_config(write(tmp_path / "c.yaml", {"base": "nowhere.yaml"}))
    with pytest.raises(UserError, match="base: a config file or a shipped config's name, not 3"):
        load_config(write(tmp_path / "d.yaml", {"base": 3}))


def test_mtil_order2_says_only_what_differs_from_order1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    raw = yaml.safe_load(shipped_configs.path("mtil_order2").read_text())
    assert raw["base"] == "mtil_order1" and set(raw) == {"base", "output_dir", "tasks"}
    one, two = load_config("mtil_order1"), load_config("mtil_order2")
    assert two.output_dir == tmp_path / "runs/mtil_order2_gift"
    for section in ("model", "method", "training", "synthetic", "evaluation"):
        assert getattr(one, section) == getattr(two, section), section
    assert {task.label: task.lr for task in one.tasks} == {task.label: task.lr for task in two.tasks}
    # a copy elsewhere still finds its shipped base by name
    copy = tmp_path / "mine" / "order2.yaml"
    copy.parent.mkdir()
    copy.write_text(shipped_configs.path("mtil_order2").read_text())
    assert load_config(copy).output_dir == copy.parent / "runs/mtil_order2_gift"


def test_overrides_are_yaml_values_checked_by_the_schema(tmp_path: Path) -> None:
    path = write(tmp_path / "run.yaml", BASE)
    sets = ["training.lr=2e-5", "tasks.1.dataset.root=/data/mnist", "training.betas=[0.8, 0.9]", "progress=false"]
    config = load_config(path, [*sets, "method.overrides.ita=0.5", "tasks.0.lr=5e-5"])
    assert config.training.lr == 2e-5 and config.training.betas == (0.8, 0.9) and config.progress is False
    assert config.tasks[1].dataset.root == Path("/data/mnist") and config.tasks[0].lr == 5e-5
    assert config.method.settings().ita == 0.5
    assert load_config(path).training.lr == 1e-5  # the file is unchanged


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.lrr=1e-5", "training.lrr: unknown key"),
        ("training.lr=-1", "training.lr: input should be greater than 0"),
        ("training.lr=fast", "training.lr: input should be a valid number"),
        ("tasks.5.lr=1e-5", "--set tasks.5.lr: no item 5 in a list of 2"),
        ("training.lr.x=1", "--set training.lr.x: 'x' is inside a value"),
        ("training.lr", "--set training.lr: expected KEY.PATH=VALUE"),
        ("training.lr=[1", "--set training.lr: the value is not valid YAML"),
    ],
)
@pytest.mark.parametrize("command", [["config", "show"], ["train"]])
def test_a_bad_override_is_a_one_line_error_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, message: str, command: list[str]
) -> None:
    path = write(tmp_path / "run.yaml", BASE)
    with pytest.raises(SystemExit) as exited:
        cli_main([*command, "--config", str(path), "--set", override])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.startswith("gift: error: ") and err.count("\n") == 1
    assert message in err


def test_config_show_prints_every_default_and_loads_back_as_the_same_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "run.yaml", BASE)
    cli_main(["config", "show", "--config", str(path), "--set", "training.lr=4e-5"])
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["training"]["lr"] == 4e-5 and shown["training"]["warmup"] == 100  # a default, printed
    assert shown["synthetic"]["steps"] == 25 and shown["evaluation"]["split"] == "test"
    assert shown["tasks"][0]["dataset"]["root"] == str(tmp_path / "data")
    assert parse_config(shown, base=Path("/elsewhere")) == load_config(path, ["training.lr=4e-5"])
