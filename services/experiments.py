"""The tiny world's evidence: every method, several seeds, two task orders, one results page.

    python -m services.experiments --out runs/experiments [--seeds 0 1 2] [--orders 1 2] [--split test]

Each run is a `gift train` process from the embedded default's config (configs/tinyworld.yaml) with the method,
seed, order and split set (runs of the config's own method keep its val-chosen weights); two run at a time, and
one generator stack serves the GIFT runs' synthetic sets. The page (`results.md`) gives mean and standard deviation
over seeds of Transfer, Avg, Last, Forget and what each method kept of pre-training, with a bar chart; settings are
chosen with `--split val`, and the page reported with `--split test`.

The page keeps every finished run's metrics beside it (`runs.json`, rewritten as each run ends), so it outlives the
run folders: a sweep into the same page, with the same settings, runs only what the page does not hold yet.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
import yaml
from tqdm import tqdm

from gift_common.errors import UserError
from gift_common.files import atomic_write
from gift_common.manifest import find_manifest, sha256_file
from services.demo import BASE_CONFIG, ONE_THREAD, method_section, stop_on_signals
from services.runs import Run, start_run, stop_all
from services.stack import LocalStack
from services.trainer import metrics
from services.trainer.config import method_settings, parse_config
from services.trainer.reports import save_figure
from services.trainer.runner import CONFIG, changed_settings, outcome_settings


@dataclass(frozen=True)
class Method:
    """A column of the page: a method preset of the trainer, fed by the generator or by real world images; `chosen`
    runs the config's own preset with the config's val-chosen weights, else with the preset's definition."""

    label: str
    preset: str
    source: str = "generator"
    chosen: bool = True


# The page's methods: the baselines, GIFT, the reference with real images, GIFT's ablations.
METHODS: dict[str, Method] = {
    "gift": Method("GIFT", "gift"),
    "ft": Method("FT", "ft"),
    "l2": Method("L2", "l2"),
    "ewc": Method("EWC", "ewc"),
    "lwf": Method("LwF", "lwf"),
    "replay_distill": Method("real-image distillation", "replay_distill", "tinyworld"),
    # the ablations take out one part of GIFT as the paper weighs it, so that GIFT is on the page too
    "gift_paper": Method("GIFT, paper's weights", "gift", chosen=False),
    "gift_no_distill": Method("GIFT w/o distillation", "gift_no_distill"),
    "gift_no_ita": Method("GIFT w/o ITA", "gift_no_ita"),
    "gift_no_awc": Method("GIFT w/o AWC", "gift_no_awc"),
}
# Diagnostics, run on request: GIFT's whole loss on real world images isolates what the synthetic images cost.
DIAGNOSTICS: dict[str, Method] = {"gift_real": Method("GIFT on real images", "gift", "tinyworld")}
ALL_METHODS = METHODS | DIAGNOSTICS
ORDERS = {
    1: ("objects", "textures", "digits", "scenes", "letters", "sketches"),
    2: ("letters", "scenes", "objects", "sketches", "digits", "textures"),
}
LABELS = {key: method.label for key, method in ALL_METHODS.items()}
NO_REPLAY = ("l2", "ewc", "lwf")  # the baselines that see no data of earlier tasks or of pre-training
ZERO_SHOT = "zero_shot"  # the pre-trained model itself: the reference row of the page
RECORD = "runs.json"
MTIL = ("Transfer", "Avg", "Last", "Forget")
# learnt: mean accuracy on each task right after training it (what a method lets the model learn);
# pretraining: the pre-training probe after the last task (what it keeps of pre-training)
FIGURES = (*MTIL, "learnt", "pretraining")
TASK_TRANSFER = "Transfer on "  # + a task's name: mean accuracy on it of the models trained before it


@dataclass(frozen=True)
class Cell:
    """One run of the sweep."""

    order: int
    seed: int
    method: str

    @property
    def name(self) -> str:
        return f"order{self.order}-seed{self.seed}-{self.method}"


@dataclass(frozen=True)
class Overrides:
    """What a sweep changes in the embedded default's config: every task's schedule, and settings of some methods
    (``{"gift": {"awc": 0.3}}``), e.g. while choosing them on the val splits."""

    training: dict[str, Any] = field(default_factory=dict)
    methods: dict[str, dict[str, float]] = field(default_factory=dict)


def run_config(cell: Cell, out: Path, split: str, api_url: str | None, overrides: Overrides) -> dict[str, Any]:
    """configs/tinyworld.yaml with the cell's method, seed and order, the split, and the overrides."""
    method = ALL_METHODS[cell.method]
    config = yaml.safe_load(BASE_CONFIG.read_text())
    config["training"] = {**config["training"], **overrides.training}
    config["model"] = {key: str((BASE_CONFIG.parent / value).resolve()) for key, value in config["model"].items()}
    config["output_dir"] = str(out / "runs" / cell.name)
    config["seed"] = cell.seed
    config["method"] = {
        **config["method"],
        "preset": method.preset,
        "overrides": overrides.methods.get(cell.method, {}),
    }
    config["synthetic"] = {
        **config["synthetic"],
        "source": method.source,
        "seed": cell.seed,
        "generator_url": api_url,
        "cache_dir": str(out / "synthetic"),
    }
    config["evaluation"] = {**config["evaluation"], "split": split}
    config["tasks"] = [{"dataset": {"type": "tinyworld", "task": task}} for task in ORDERS[cell.order]]
    config["progress"] = False
    return config


def method_overrides(assignments: Sequence[str]) -> dict[str, dict[str, float]]:
    """``["gift.awc=0.3", ...]`` as ``{"gift": {"awc": 0.3}}``, each checked against its method's settings."""
    methods: dict[str, dict[str, float]] = {}
    for text in assignments:
        key, _, value = text.partition("=")
        name, _, setting = key.partition(".")
        if name not in ALL_METHODS or not setting or not value:
            raise ValueError(f"--set {text!r}: expected METHOD.SETTING=VALUE with METHOD one of "
                             f"{', '.join(ALL_METHODS)}, e.g. gift.awc=0.3")  # fmt: skip
        try:
            methods.setdefault(name, {})[setting] = float(value)
        except ValueError:
            raise ValueError(f"--set {text!r}: {value!r} is not a number") from None
    for name, settings in methods.items():
        try:
            method_settings(ALL_METHODS[name].preset, settings)
        except ValueError as error:
            raise ValueError(f"--set {name}: {error}") from None
    return methods


def method_weights(names: Sequence[str], chosen: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Each method's changed settings: the config's own (chosen on val) for runs of the config's preset, then
    ``--set``'s. The other presets, GIFT's ablations among them, start from their definitions."""
    base = yaml.safe_load(BASE_CONFIG.read_text())["method"]
    weights = {}
    for name in names:
        method = ALL_METHODS[name]
        own = method_section(method.preset, base).get("overrides", {}) if method.chosen else {}
        if changed := {**own, **chosen.get(name, {})}:
            weights[name] = changed
    return weights


def finished(out: Path, cell: Cell, expected: dict[str, Any]) -> dict[str, Any] | None:
    """The metrics of the cell's run in `out`, if it ran to the end; a finished run with other settings than
    `expected` (the cell's `run_config`) is refused rather than put on a page it does not belong to."""
    folder = out / "runs" / cell.name
    path = folder / "metrics.json"
    result = json.loads(path.read_text()) if path.is_file() else {}
    if not result.get("complete", False):
        return None
    try:
        saved = outcome_settings(parse_config(json.loads((folder / CONFIG).read_text()), base=folder))
    except (OSError, ValueError, UserError) as error:  # no config, not JSON, or not a run config
        raise ValueError(f"{folder} holds finished metrics without a readable {CONFIG} ({error}), so its settings "
                         "cannot be checked: give this sweep its own --out") from None  # fmt: skip
    if changed := changed_settings(saved, parse_config(expected, base=folder)):
        raise ValueError(f"{folder} holds a finished run with other settings ({', '.join(changed)}) than this "
                         "sweep's: give this sweep its own --out")  # fmt: skip
    return result


@dataclass
class PageRecord:
    """Every finished run of a page (`runs.json` beside it). Runs belong on one page only under the same split,
    schedule and weights per method, so a sweep with other settings is refused rather than mixed in."""

    split: str
    schedule: str
    weights: dict[str, dict[str, float]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # cell name -> {"cell": ..., "metrics": ...}

    @classmethod
    def open(cls, folder: Path, split: str, schedule: str, weights: dict[str, dict[str, float]]) -> PageRecord:
        """The record in `folder` (a new one if none), checked against the settings about to be run."""
        path = folder / RECORD
        if not path.is_file() and (folder / "results.md").is_file():
            raise ValueError(f"{folder} holds a page without its runs ({RECORD}); it would be overwritten: give this "
                             "sweep its own --page")  # fmt: skip
        record = cls(**json.loads(path.read_text())) if path.is_file() else cls(split, schedule)
        if (record.split, record.schedule) != (split, schedule):
            raise ValueError(f"{path} holds runs on {record.split} with '{record.schedule}', not on {split} with "
                             f"'{schedule}': give this sweep its own --page")  # fmt: skip
        for method, own in weights.items():
            if method in record.weights and record.weights[method] != own:
                raise ValueError(f"{path} holds {method} runs with settings {record.weights[method] or 'as defined'}"
                                 f", not {own or 'as defined'}: give this sweep its own --page")  # fmt: skip
        return record

    def __contains__(self, cell: Cell) -> bool:
        return cell.name in self.runs

    def add(self, cell: Cell, metrics: dict[str, Any], weights: dict[str, float]) -> None:
        self.runs[cell.name] = {"cell": asdict(cell), "metrics": metrics}
        self.weights[cell.method] = weights

    def cells(self) -> list[tuple[Cell, dict[str, Any]]]:
        return [(Cell(**run["cell"]), run["metrics"]) for _, run in sorted(self.runs.items())]

    def save(self, folder: Path) -> None:
        atomic_write(folder / RECORD, json.dumps(asdict(self), indent=1).encode())


def sweep(
    todo: Sequence[Cell], out: Path, split: str, parallel: int, overrides: Overrides, on_finish: Callable[[Cell], None]
) -> None:
    """Run the cells, ``parallel`` at a time, against one generator stack, calling `on_finish` as each run ends
    well; a failed run is reported and the others go on."""
    stop_on_signals()
    if not todo:
        return
    by_name = {cell.name: cell for cell in todo}
    with LocalStack(out / "logs", redis_url=os.environ.get("GIFT_REDIS_URL"), env=ONE_THREAD) as stack:
        stack.start(workers=1)
        configs = [run_config(cell, out, split, stack.api_url, overrides) for cell in todo]
        steps = sum(len(c["tasks"]) * c["training"]["iterations"] for c in configs)
        running: list[Run] = []
        done_steps = 0
        with tqdm(total=steps, desc="experiments", unit="step", dynamic_ncols=True) as bar:
            try:
                while configs or running:
                    while configs and len(running) < parallel:
                        config = configs.pop(0)
                        name = Path(config["output_dir"]).name
                        running.append(start_run(name, config, out / "configs", env=ONE_THREAD, resume=True))
                    for run in [r for r in running if not r.process.alive()]:
                        running.remove(run)
                        done_steps += run.total_steps
                        if run.process.popen.returncode != 0:
                            tqdm.write(f"experiments: run {run.name} failed; see {run.process.log}")
                        else:
                            on_finish(by_name[run.name])
                    bar.update(done_steps + sum(r.steps_done() for r in running) - bar.n)
                    time.sleep(1.0)
            finally:
                stop_all(running)


Table = dict[int, dict[str, dict[str, dict[int, float]]]]  # order -> method -> figure -> seed -> value


def collect(runs: Iterable[tuple[Cell, dict[str, Any]]]) -> Table:
    """Every run's figures, and the pre-trained model's own (`ZERO_SHOT`) from the runs' zero-shot rows."""
    table: Table = {}
    for cell, result in runs:
        methods = table.setdefault(cell.order, {})
        for method, values in ((cell.method, run_figures(result)), (ZERO_SHOT, zero_shot_figures(result))):
            for key, value in values.items():
                methods.setdefault(method, {}).setdefault(key, {})[cell.seed] = value
    return table


def run_figures(result: dict[str, Any]) -> dict[str, float]:
    """The page's figures, and Transfer task by task (keys `TASK_TRANSFER` + task)."""
    learnt = float(np.mean(np.diag(result["accuracy"])))
    per_task = zip(result["tasks"][1:], metrics.transfer_per_task(result["accuracy"]), strict=True)
    return ({key: result[key] for key in MTIL} | {"learnt": learnt, "pretraining": result["pretraining"][-1]}
            | {TASK_TRANSFER + task: value for task, value in per_task})  # fmt: skip


def zero_shot_figures(result: dict[str, Any]) -> dict[str, float]:
    """The pre-trained model as a method that never trains: every row of its matrix is the zero-shot row."""
    row = result["zero_shot"]
    return run_figures({**metrics.summary([row] * len(row)), "accuracy": [row] * len(row), "tasks": result["tasks"],
                        "pretraining": [result["pretraining_zero_shot"]]})  # fmt: skip


def schedule_line(training: dict[str, Any]) -> str:
    """What every run of a page shares: the embedded default's weights, schedule and synthetic sets, as the sweep
    runs them. The weights are named by their manifest's SHA-256, so that a rebuild starts a page of its own."""
    config = yaml.safe_load(BASE_CONFIG.read_text())
    training, synthetic = config["training"] | training, config["synthetic"]
    manifest = find_manifest(BASE_CONFIG.parent / config["model"]["pretrained"])
    weights = f"tiny world weights {sha256_file(manifest)[:12]}" if manifest else "weights without a manifest"
    return (f"`configs/tinyworld.yaml` ({weights}), {training['iterations']} iterations per task, batch "
            f"{training['batch_size']}, lr {training['lr']:g}; {synthetic['size']} synthetic pairs per task drawn in "
            f"{synthetic['steps']} DPM-Solver++ steps")  # fmt: skip


def settings_line(record: PageRecord) -> str:
    changed = "".join(f"; {name}: {weights}" for name, weights in record.weights.items() if weights)
    return f"Every run: {record.schedule}{changed}."


def results_page(table: Table, split: str, out: Path, settings: str = "") -> str:
    lines = [f"# Tiny world: continual fine-tuning of the tiny CLIP ({split} splits)", "", settings, ""]
    for order, methods in sorted(table.items()):
        lines += [f"## Order {order}: {' → '.join(ORDERS[order])}", ""]
        lines += ["| method | seeds | " + " | ".join(FIGURES) + " |", "|---|---:" + "|---:" * len(FIGURES) + "|"]
        for method in [m for m in (*LABELS, ZERO_SHOT) if m in methods]:
            cells = [_mean_sd(methods[method][key].values()) for key in FIGURES]
            lines.append(f"| {LABELS.get(method, 'zero-shot (no training)')} | {len(methods[method]['Avg'])} | "
                         + " | ".join(cells) + " |")  # fmt: skip
        lines += ["", *bar_lines(methods), "", *transfer_lines(methods), ""]
        chart = out / f"results-order{order}.png"
        bar_chart(chart, methods, order)
        lines += [f"![order {order}]({chart.name})", ""]
    lines.append("Mean ± standard deviation over seeds (differences: over seed-paired runs). learnt = mean accuracy on "
                 "each task right after training it; pretraining = zero-shot accuracy on held-out world images, mean "
                 "over concept families, after the last task (before any training for the zero-shot row); Transfer "
                 "on a task = mean accuracy on it of the models trained before it.")  # fmt: skip
    return "\n".join(lines) + "\n"


def transfer_lines(methods: dict[str, dict[str, dict[int, float]]]) -> list[str]:
    """Transfer task by task, mean over seeds: on which unseen tasks a method loses what the pre-trained model had."""
    tasks = [key.removeprefix(TASK_TRANSFER) for key in methods[ZERO_SHOT] if key.startswith(TASK_TRANSFER)]
    lines = ["| Transfer on | " + " | ".join(tasks) + " |", "|---" + "|---:" * len(tasks) + "|"]
    for method in [m for m in (*LABELS, ZERO_SHOT) if m in methods]:
        values = [np.mean(list(methods[method][TASK_TRANSFER + task].values())) for task in tasks]
        lines.append(f"| {LABELS.get(method, 'zero-shot (no training)')} | " + " | ".join(f"{v:.1f}" for v in values)
                     + " |")  # fmt: skip
    return lines


def bar_lines(methods: dict[str, dict[str, dict[int, float]]]) -> list[str]:
    """The aim, checked on seed-paired differences: GIFT − FT on Transfer (≥ 5) and Avg (≥ 3), and GIFT − each
    baseline that replays no data on Avg (> 0)."""
    if "gift" not in methods:
        return []
    lines = ["| aim | GIFT − method | met |", "|---|---:|:---:|"]
    checks = [("ft", "Transfer", 5.0), ("ft", "Avg", 3.0)] + [(m, "Avg", 0.0) for m in NO_REPLAY]
    for method, key, bar in checks:
        if method not in methods:
            continue
        gift, other = methods["gift"][key], methods[method][key]
        differences = [gift[seed] - other[seed] for seed in sorted(gift.keys() & other.keys())]
        if differences:
            gain = float(np.mean(differences))
            met = "yes" if (gain >= bar if bar else gain > 0) else "no"
            aim = f"≥ {bar:g}" if bar else "> 0"
            lines.append(f"| {key} over {LABELS[method]} {aim} | {_mean_sd(differences)} | {met} |")
    return lines


def _mean_sd(values: Iterable[float]) -> str:
    values = list(values)
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.1f}"


def bar_chart(path: Path, methods: dict[str, dict[str, dict[int, float]]], order: int) -> None:
    """Mean ± deviation per method and figure, the pre-trained model's own figure as a dashed line over each group."""
    keys = ("Transfer", "Avg", "Last", "learnt", "pretraining")
    trained = [m for m in methods if m != ZERO_SHOT]
    fig, ax = plt.subplots(figsize=(12, 4.2))
    width = 0.8 / len(trained)
    for i, method in enumerate(trained):
        values = [list(methods[method][k].values()) for k in keys]
        errors = [np.std(v, ddof=1) if len(v) > 1 else 0 for v in values]
        ax.bar(np.arange(len(keys)) + i * width, [np.mean(v) for v in values], width, yerr=errors,
               label=LABELS[method], capsize=2)  # fmt: skip
    if ZERO_SHOT in methods:
        for k, key in enumerate(keys):
            level = np.mean(list(methods[ZERO_SHOT][key].values()))
            ax.hlines(level, k - width, k + 0.8, colors="black", linestyles="dashed", linewidth=1,
                      label="zero-shot (no training)" if k == 0 else None)  # fmt: skip
    ax.set_xticks(np.arange(len(keys)) + 0.4 - width / 2, keys)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"order {order}")
    ax.legend(fontsize=7, ncol=3)
    save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.experiments", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/experiments"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--orders", type=int, nargs="+", choices=sorted(ORDERS), default=sorted(ORDERS))
    parser.add_argument("--methods", nargs="+", choices=list(ALL_METHODS), default=list(METHODS))
    parser.add_argument("--split", choices=("val", "test"), default="test")
    parser.add_argument("--page", type=Path, help="where results.md and its charts go (default: OUT/SPLIT)")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--lr", type=float, help="every task's learning rate (default: the config's)")
    parser.add_argument("--iterations", type=int, help="every task's iterations (default: the config's)")
    parser.add_argument("--set", action="append", default=[], metavar="METHOD.SETTING=VALUE",
                        help="a method's setting, e.g. gift.awc=0.3 (repeatable; one --out per choice)")  # fmt: skip
    parser.add_argument("--page-only", action="store_true", help="write the page from the runs finished so far")
    args = parser.parse_args(argv)
    out = args.out.resolve() / args.split
    page_dir = (args.page or out).resolve()
    training = {key: getattr(args, key) for key in ("lr", "iterations") if getattr(args, key) is not None}
    try:
        overrides = Overrides(training, method_weights(args.methods, method_overrides(args.set)))
        weights = {method: overrides.methods.get(method, {}) for method in args.methods}
        record = PageRecord.open(page_dir, args.split, schedule_line(training), weights)
    except ValueError as error:
        parser.error(str(error))
    # method by method, in the order given: a sweep cut short leaves whole columns on the page
    cells = [Cell(o, s, m) for m in args.methods for o in args.orders for s in args.seeds]

    def done(cell: Cell) -> dict[str, Any] | None:
        return finished(out, cell, run_config(cell, out, args.split, None, overrides))

    def publish(*ended: Cell) -> None:
        """Take finished runs into the record, and write it and the page again."""
        for cell in ended:
            if (metrics := done(cell)) is not None:
                record.add(cell, metrics, weights[cell.method])
        record.save(page_dir)
        page = results_page(collect(record.cells()), args.split, page_dir, settings_line(record))
        atomic_write(page_dir / "results.md", page.encode())

    try:
        publish(*[cell for cell in cells if cell not in record and done(cell)])
    except ValueError as error:
        parser.error(str(error))
    todo = [cell for cell in cells if cell not in record]
    print(f"experiments: {len(cells) - len(todo)} of {len(cells)} runs on the page already; {len(todo)} to run",
          flush=True)  # fmt: skip
    if not args.page_only:
        sweep(todo, out, args.split, args.parallel, overrides, on_finish=publish)
    print((page_dir / "results.md").read_text(), flush=True)


if __name__ == "__main__":
    main()
