"""The tiny world's sweep: each cell's config, resumability, and the results page from finished runs."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

import services.run_configs
from services.experiments import plan
from services.experiments import sweep as sweeping
from services.experiments.cli import main
from services.experiments.page import (
    ZERO_SHOT,
    bar_lines,
    collect,
    kept_lines,
    part_lines,
    results_page,
    schedule_line,
    settings_line,
)
from services.experiments.records import PageRecord, finished
from services.experiments.sweep import (
    METHODS,
    ORDERS,
    Cell,
    Overrides,
    cell_config,
    method_overrides,
    method_weights,
    sweep,
)
from services.trainer.config import parse_config


def test_a_cell_runs_the_embedded_default_with_its_method_seed_order_and_split(tmp_path: Path) -> None:
    config = cell_config(Cell(2, 1, "replay_distill"), tmp_path, "val", "http://api:1", Overrides({"lr": 0.001}))
    checked = parse_config(config, base=tmp_path)
    assert [task.label for task in checked.tasks] == list(ORDERS[2])
    assert checked.seed == checked.synthetic.seed == 1
    assert checked.method.preset == "replay_distill" and checked.synthetic.source == "tinyworld"
    assert checked.evaluation.split == "val" and checked.training.lr == 0.001
    assert checked.output_dir == tmp_path / "runs" / "order2-seed1-replay_distill"
    assert set(METHODS) >= {"ft", "l2", "ewc", "lwf", "gift", "gift_no_awc"}
    real = parse_config(
        cell_config(Cell(1, 0, "gift_real"), tmp_path, "val", "http://api:1", Overrides()), base=tmp_path
    )
    assert real.method.preset == "gift" and real.synthetic.source == "tinyworld"


def write_metrics(
    out: Path, cell: Cell, avg: float, complete: bool = True, settings: dict[str, float] | None = None
) -> None:
    """A run folder as `gift train` leaves it: its config (the method's chosen weights unless `settings`) and its
    metrics."""
    folder = out / "runs" / cell.name
    folder.mkdir(parents=True)
    weights = method_weights([cell.method], {}) if settings is None else {cell.method: settings}
    config = parse_config(cell_config(cell, out, out.name, None, Overrides(methods=weights)), base=folder)
    (folder / "config.json").write_text(config.model_dump_json())
    figures = {"Transfer": avg - 5, "Avg": avg, "Last": avg + 5, "Forget": -1.0, "pretraining": [60.0, 50.0],
               "accuracy": [[avg + 10, avg - 5], [0.0, avg + 20]], "tasks": ["objects", "textures"]}  # fmt: skip
    before = {"zero_shot": [20.0, 40.0], "zero_shot_Transfer": 40.0, "pretraining_zero_shot": 70.0}
    (folder / "metrics.json").write_text(json.dumps({"complete": complete, **figures, **before}))


def test_the_page_gives_mean_and_deviation_over_finished_seeds_only(tmp_path: Path) -> None:
    cells = [Cell(1, seed, method) for seed in (0, 1, 2) for method in ("ft", "gift")]
    tmp_path = tmp_path / "test"
    write_metrics(tmp_path, cells[0], 30.0)
    write_metrics(tmp_path, cells[2], 34.0)
    write_metrics(tmp_path, cells[1], 40.0)
    write_metrics(tmp_path, cells[3], 44.0)
    write_metrics(tmp_path, cells[5], 99.0, complete=False)  # an unfinished run is neither counted nor skipped

    def ended(cell: Cell) -> dict | None:
        weights = Overrides(methods=method_weights([cell.method], {}))
        return finished(tmp_path, cell, cell_config(cell, tmp_path, "test", None, weights))

    assert ended(cells[0]) and not ended(cells[5]) and not ended(cells[4])
    record = PageRecord("test", schedule_line({"iterations": 7}))
    for cell in cells:
        if result := ended(cell):
            record.add(cell, result, {"awc": 0.3} if cell.method == "gift" else {})
    table = collect(record.cells())
    assert table[1]["ft"]["Avg"] == {0: 30.0, 1: 34.0} and table[1]["gift"]["pretraining"] == {0: 50.0, 1: 50.0}
    page = results_page(table, "test", tmp_path, settings_line(record))
    assert "7 iterations per task" in page and "gift: {'awc': 0.3}." in page
    assert page.count(": {") == 1  # FT's weights are as defined: no entry
    assert "| FT | 2 | 27.0 ± 2.8 | 32.0 ± 2.8 |" in page
    assert "| GIFT | 2 | 37.0 ± 2.8 | 42.0 ± 2.8 |" in page
    # the pre-trained model's row: its matrix is the zero-shot row repeated, it forgets nothing
    assert (
        "| zero-shot (no training) | 2 | 40.0 ± 0.0 | 30.0 ± 0.0 | 30.0 ± 0.0 | 0.0 ± 0.0 | 30.0 ± 0.0 | 70.0 ± 0.0 |"
        in page
    )
    assert "| FT | 2 | 27.0 ± 2.8 | 32.0 ± 2.8 | 37.0 ± 2.8 | -1.0 ± 0.0 | 47.0 ± 2.8 | 50.0 ± 0.0 |" in page
    # the aims, on seed-paired differences: GIFT is 10 ahead of FT in every figure, the bar needs 5 and 3
    assert "| Transfer over FT ≥ 5 | 10.0 ± 0.0 | yes |" in page and "| Avg over FT ≥ 3 | 10.0 ± 0.0 | yes |" in page
    # Transfer task by task: on textures, the only task after the first, the model trained on objects scores avg − 5
    assert "| Transfer on | textures |" in page and "| FT | 27.0 |" in page
    assert "| zero-shot (no training) | 40.0 |" in page
    assert (tmp_path / "results-order1.png").is_file()


def test_method_settings_are_set_per_method_and_checked_before_anything_runs(tmp_path: Path) -> None:
    overrides = Overrides(methods=method_overrides(["gift.awc=0.3", "gift.ita=0"]))
    gift = parse_config(cell_config(Cell(1, 0, "gift"), tmp_path, "val", "http://api:1", overrides), base=tmp_path)
    ft = parse_config(cell_config(Cell(1, 0, "ft"), tmp_path, "val", "http://api:1", overrides), base=tmp_path)
    assert (gift.method.settings().awc, gift.method.settings().ita) == (0.3, 0.0)
    assert ft.method.settings().awc == 0.0  # FT is left as it is
    wrong = {"gift.awc": "METHOD.SETTING=VALUE", "sgd.awc=1": "METHOD.SETTING=VALUE", "gift.awc=x": "not a number",
             "gift.momentum=1": "unknown setting momentum"}  # fmt: skip
    for text, message in wrong.items():
        with pytest.raises(ValueError, match=message):
            method_overrides([text])


def test_an_aim_is_met_only_when_the_seed_paired_gain_reaches_it() -> None:
    methods = {
        "gift": {"Transfer": {0: 32.0, 1: 33.0}, "Avg": {0: 40.0, 1: 41.0}},
        "ft": {"Transfer": {0: 28.0, 1: 28.0}, "Avg": {0: 36.0, 1: 38.0}},
        "ewc": {"Avg": {0: 41.0, 1: 41.0, 2: 99.0}},  # seed 2 has no GIFT run to pair with: left out
    }
    lines = bar_lines(methods)
    assert "| Transfer over FT ≥ 5 | 4.5 ± 0.7 | no |" in lines
    assert "| Avg over FT ≥ 3 | 3.5 ± 0.7 | yes |" in lines
    assert "| Avg over EWC > 0 | -0.5 ± 0.7 | no |" in lines
    assert not any("L2" in line for line in lines)  # no L2 runs, no L2 line


def test_a_part_earns_its_place_when_taking_it_out_costs_more_than_the_cost_s_spread() -> None:
    methods = {
        "gift_paper": {"Avg": {0: 60.0, 1: 61.0, 2: 62.0}, "Transfer": {0: 43.0, 1: 44.0, 2: 45.0}},
        "gift_no_ita": {"Avg": {0: 59.0, 1: 62.0, 2: 61.0}, "Transfer": {0: 40.0, 1: 41.0, 2: 43.0}},
        "gift_no_awc": {"Avg": {0: 62.0, 1: 60.0, 2: 62.0}, "Transfer": {0: 44.0, 1: 43.0, 2: 45.0}},
    }
    lines = part_lines(methods)
    assert "| ITA | GIFT, paper's weights | 0.3 ± 1.2 | 2.7 ± 0.6 | yes |" in lines  # Transfer: 2.7 > 0.6
    assert "| AWC | GIFT, paper's weights | -0.3 ± 1.5 | 0.0 ± 1.0 | no |" in lines
    assert not any(line.startswith("| distillation") for line in lines)  # no run without distillation
    one_seed = {method: {key: {0: values[0]} for key, values in figures.items()} for method, figures in methods.items()}
    assert "| ITA | GIFT, paper's weights | 1.0 ± 0.0 | 3.0 ± 0.0 | needs two seeds |" in part_lines(one_seed)


def test_the_kept_share_of_ft_s_transfer_loss_is_per_seed_and_leaves_out_methods_without_replay() -> None:
    methods = {
        ZERO_SHOT: {"Transfer": {0: 42.0, 1: 42.0}},
        "ft": {"Transfer": {0: 32.0, 1: 34.0}},
        "gift": {"Transfer": {0: 41.0, 1: 41.6}},
        "ewc": {"Transfer": {0: 40.0, 1: 40.0}},
    }
    lines = kept_lines(methods)
    assert "| GIFT | 92.5 ± 3.5% | yes |" in lines  # 90% and 95%
    assert not any("EWC" in line for line in lines)


def test_runs_of_the_configs_preset_take_its_chosen_weights_and_set_wins() -> None:
    names = ["gift", "gift_real", "gift_no_ita", "gift_paper", "ft"]
    chosen = method_weights(names, method_overrides(["gift.awc=0.5"]))
    assert chosen == {"gift": {"awc": 0.5}, "gift_real": {"awc": 0.1}}
    assert method_weights(names, method_overrides(["gift_paper.ita=0.1"]))["gift_paper"] == {"ita": 0.1}


def test_page_only_writes_the_page_from_finished_runs_and_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plan, "sweep", lambda *args: pytest.fail("--page-only started runs"))
    for seed in (0, 1):
        write_metrics(tmp_path / "test", Cell(1, seed, "ft"), 30.0 + seed)
    main(["--out", str(tmp_path), "--orders", "1", "--methods", "ft", "gift", "--page-only"])
    page = (tmp_path / "test" / "results.md").read_text()
    assert "| FT | 2 | 25.5 ± 0.7 | 30.5 ± 0.7 |" in page and "| GIFT |" not in page


def test_the_page_keeps_its_runs_so_a_later_sweep_runs_only_what_it_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[list[Cell]] = []
    monkeypatch.setattr(plan, "sweep", lambda todo, *args, **kwargs: asked.append(list(todo)))
    page = tmp_path / "page"
    write_metrics(tmp_path / "first" / "test", Cell(1, 0, "ft"), 30.0)
    main(["--out", str(tmp_path / "first"), "--page", str(page), "--orders", "1", "--seeds", "0", "1",
          "--methods", "ft"])  # fmt: skip
    assert asked == [[Cell(1, 1, "ft")]]
    # the run folders are gone (a new machine): the page still holds seed 0, and the sweep adds seed 1's run
    write_metrics(tmp_path / "second" / "test", Cell(1, 1, "ft"), 34.0)
    main(["--out", str(tmp_path / "second"), "--page", str(page), "--orders", "1", "--seeds", "0", "1",
          "--methods", "ft"])  # fmt: skip
    assert asked[-1] == []
    assert "| FT | 2 | 27.0 ± 2.8 | 32.0 ± 2.8 |" in (page / "results.md").read_text()
    assert json.loads((page / "runs.json").read_text())["runs"].keys() == {"order1-seed0-ft", "order1-seed1-ft"}


def test_the_sweep_runs_method_by_method_so_a_cut_short_sweep_leaves_whole_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[list[Cell]] = []
    monkeypatch.setattr(plan, "sweep", lambda todo, *args, **kwargs: asked.append(list(todo)))
    main(["--out", str(tmp_path), "--orders", "1", "2", "--seeds", "0", "--methods", "gift", "ft"])
    assert asked == [[Cell(1, 0, "gift"), Cell(2, 0, "gift"), Cell(1, 0, "ft"), Cell(2, 0, "ft")]]


def test_a_page_refuses_runs_made_with_other_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_metrics(tmp_path / "test", Cell(1, 0, "gift"), 30.0)
    common = ["--out", str(tmp_path), "--orders", "1", "--seeds", "0", "--page-only"]
    main([*common, "--methods", "gift", "ft"])
    for other in (["--methods", "gift", "--set", "gift.awc=0.5"], ["--methods", "ft", "--iterations", "5"]):
        with pytest.raises(SystemExit):
            main([*common, *other])
        assert "runs.json holds" in capsys.readouterr().err
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.md").write_text("a page made before pages kept their runs")
    with pytest.raises(SystemExit):
        main([*common, "--methods", "ft", "--page", str(tmp_path / "old")])
    assert "without its runs" in capsys.readouterr().err
    assert (tmp_path / "old" / "results.md").read_text() == "a page made before pages kept their runs"


def test_a_finished_run_made_with_other_settings_is_refused_not_put_on_the_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_metrics(tmp_path / "test", Cell(1, 0, "gift"), 30.0, settings={"awc": 0.5, "ita": 0.0})
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--orders", "1", "--seeds", "0", "--methods", "gift", "--page-only"])
    assert "order1-seed0-gift holds a finished run with other settings (method)" in capsys.readouterr().err
    assert not (tmp_path / "test" / "runs.json").exists()
    (tmp_path / "test" / "runs" / "order1-seed0-gift" / "config.json").unlink()  # a run whose settings are unknown
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--orders", "1", "--seeds", "0", "--methods", "gift", "--page-only"])
    assert "without a readable config.json" in capsys.readouterr().err


def test_the_sweep_hands_on_each_run_that_ends_well_and_names_the_one_that_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Stack:  # the generator stack the runs would talk to
        api_url = "http://api:1"

        def __enter__(self) -> Stack:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def start(self, workers: int) -> None:
            pass

    def start_run(name: str, config: dict, folder: Path, **kwargs: object) -> SimpleNamespace:
        code = 1 if name.endswith("-ft") else 0  # the FT run fails
        process = SimpleNamespace(alive=lambda: False, popen=SimpleNamespace(returncode=code), log=folder / name)
        return SimpleNamespace(name=name, process=process, total_steps=6, steps_done=lambda: 6)

    monkeypatch.setattr(sweeping, "LocalStack", lambda *args, **kwargs: Stack())
    monkeypatch.setattr(sweeping, "start_run", start_run)
    monkeypatch.setattr(sweeping.time, "sleep", lambda seconds: None)
    ended: list[Cell] = []
    todo = [Cell(1, 0, "gift"), Cell(1, 0, "ft"), Cell(2, 0, "gift")]
    sweep(todo, tmp_path, 2, lambda cell, url: cell_config(cell, tmp_path, "test", url, Overrides()), ended.append)
    assert ended == [Cell(1, 0, "gift"), Cell(2, 0, "gift")]
    assert "run order1-seed0-ft failed" in capsys.readouterr().out


def test_a_page_names_the_weights_it_was_made_with_so_a_rebuild_starts_a_page_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = yaml.safe_load(services.run_configs.BASE_CONFIG.read_text())
    config["model"] = {"architecture": "tiny-clip.json", "pretrained": str(tmp_path / "weights" / "tiny-clip.pt")}
    (tmp_path / "weights").mkdir()
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setattr(services.run_configs, "BASE_CONFIG", tmp_path / "config.yaml")
    (tmp_path / "weights" / "MANIFEST.json").write_text('{"files": {"tiny-clip.pt": "aa"}}')
    first = schedule_line({})
    (tmp_path / "weights" / "MANIFEST.json").write_text('{"files": {"tiny-clip.pt": "bb"}}')
    assert "tiny world weights" in first and schedule_line({}) != first
    PageRecord("test", first).save(tmp_path)
    with pytest.raises(ValueError, match="give this sweep its own --page"):
        PageRecord.open(tmp_path, "test", schedule_line({}), {})
