"""The results page: mean and deviation over seeds of every figure, the aims checked on seed-paired differences,
Transfer task by task, and a bar chart per task order."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np

from gift_common.manifest import find_manifest, sha256_file
from services import run_configs
from services.experiments.records import PageRecord
from services.experiments.sweep import ALL_METHODS, ORDERS, Cell
from services.run_configs import base_config
from services.trainer import metrics
from services.trainer.config import ModelConfig
from services.trainer.reports import save_figure

LABELS = {key: method.label for key, method in ALL_METHODS.items()}
TINY_WORLD_TITLE = "Tiny world: continual fine-tuning of the tiny CLIP"
NO_REPLAY = ("l2", "ewc", "lwf")  # the baselines that see no data of earlier tasks or of pre-training
# GIFT's parts, each checked by taking it out of a whole method (issue 25): (part, whole, the whole without it)
PARTS = (
    ("distillation", "gift_paper", "gift_no_distill"),
    ("ITA", "gift_paper", "gift_no_ita"),
    ("AWC", "gift_paper", "gift_no_awc"),
    ("AWC at the config's weight", "gift", "gift_no_awc"),
)
KEEPS = 0.9  # the aim: GIFT keeps at least this share of the Transfer that FT loses
ZERO_SHOT = "zero_shot"  # the pre-trained model itself: the reference row of the page
MTIL = ("Transfer", "Avg", "Last", "Forget")
# learnt: mean accuracy on each task right after training it (what a method lets the model learn);
# pretraining: the pre-training probe after the last task (what it keeps of pre-training)
FIGURES = (*MTIL, "learnt", "pretraining")
TASK_TRANSFER = "Transfer on "  # + a task's name: mean accuracy on it of the models trained before it


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
    kept = {"pretraining": result["pretraining"][-1]} if result.get("pretraining") else {}  # a run with a probe
    return ({key: result[key] for key in MTIL} | {"learnt": learnt} | kept
            | {TASK_TRANSFER + task: value for task, value in per_task})  # fmt: skip


def zero_shot_figures(result: dict[str, Any]) -> dict[str, float]:
    """The pre-trained model as a method that never trains: every row of its matrix is the zero-shot row."""
    row, probe = result["zero_shot"], result.get("pretraining_zero_shot")
    return run_figures({**metrics.summary([row] * len(row)), "accuracy": [row] * len(row), "tasks": result["tasks"],
                        "pretraining": [probe] if probe is not None else []})  # fmt: skip


def schedule_line(training: dict[str, Any]) -> str:
    """What every run of a page shares: the embedded default's weights, schedule and synthetic sets, as the sweep
    runs them. The weights are named by their manifest's SHA-256, so that a rebuild starts a page of its own. (The
    config's old path in the line is kept: pages already begun compare their line with it.)"""
    config = base_config()
    training, synthetic = config["training"] | training, config["synthetic"]
    model = ModelConfig.model_validate(config["model"], context={"base": run_configs.BASE_CONFIG.parent})
    manifest = find_manifest(model.pretrained) if model.pretrained else None
    weights = f"tiny world weights {sha256_file(manifest)[:12]}" if manifest else "weights without a manifest"
    return (f"`configs/tinyworld.yaml` ({weights}), {training['iterations']} iterations per task, batch "
            f"{training['batch_size']}, lr {training['lr']:g}; {synthetic['size']} synthetic pairs per task drawn in "
            f"{synthetic['steps']} DPM-Solver++ steps")  # fmt: skip


def settings_line(record: PageRecord) -> str:
    changed = "".join(f"; {name}: {weights}" for name, weights in record.weights.items() if weights)
    return f"Every run: {record.schedule}{changed}."


def results_page(
    table: Table,
    split: str,
    out: Path,
    settings: str = "",
    title: str = TINY_WORLD_TITLE,
    orders: Mapping[int, Sequence[str]] = ORDERS,
    labels: Mapping[str, str] = LABELS,
) -> str:
    lines = [f"# {title} ({split} splits)", "", settings, ""]
    for order, methods in sorted(table.items()):
        figures = [key for key in FIGURES if key in methods[ZERO_SHOT]]  # no probe, no pretraining column
        lines += [f"## Order {order}: {' → '.join(orders[order])}", ""]
        lines += ["| method | seeds | " + " | ".join(figures) + " |", "|---|---:" + "|---:" * len(figures) + "|"]
        for method in _rows(methods, labels):
            cells = [_mean_sd(methods[method][key].values()) for key in figures]
            lines.append(f"| {labels.get(method, 'zero-shot (no training)')} | {len(methods[method]['Avg'])} | "
                         + " | ".join(cells) + " |")  # fmt: skip
        lines += ["", *bar_lines(methods, labels), "", *part_lines(methods), "", *kept_lines(methods, labels), ""]
        lines += [*transfer_lines(methods, labels), ""]
        chart = out / f"results-order{order}.png"
        bar_chart(chart, methods, order, labels)
        lines += [f"![order {order}]({chart.name})", ""]
    lines.append("Mean ± standard deviation over seeds (differences: over seed-paired runs). learnt = mean accuracy on "
                 "each task right after training it; pretraining = zero-shot accuracy on held-out world images, mean "
                 "over concept families, after the last task (before any training for the zero-shot row); Transfer "
                 "on a task = mean accuracy on it of the models trained before it.")  # fmt: skip
    return "\n".join(lines) + "\n"


def _rows(methods: Mapping[str, object], labels: Mapping[str, str]) -> list[str]:
    """The methods of a table in the page's order, the pre-trained model last."""
    return [m for m in (*labels, ZERO_SHOT) if m in methods]


def transfer_lines(methods: dict[str, dict[str, dict[int, float]]], labels: Mapping[str, str] = LABELS) -> list[str]:
    """Transfer task by task, mean over seeds: on which unseen tasks a method loses what the pre-trained model had."""
    tasks = [key.removeprefix(TASK_TRANSFER) for key in methods[ZERO_SHOT] if key.startswith(TASK_TRANSFER)]
    lines = ["| Transfer on | " + " | ".join(tasks) + " |", "|---" + "|---:" * len(tasks) + "|"]
    for method in _rows(methods, labels):
        values = [np.mean(list(methods[method][TASK_TRANSFER + task].values())) for task in tasks]
        lines.append(f"| {labels.get(method, 'zero-shot (no training)')} | " + " | ".join(f"{v:.1f}" for v in values)
                     + " |")  # fmt: skip
    return lines


def bar_lines(methods: dict[str, dict[str, dict[int, float]]], labels: Mapping[str, str] = LABELS) -> list[str]:
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
            lines.append(f"| {key} over {labels.get(method, method)} {aim} | {_mean_sd(differences)} | {met} |")
    return lines


def part_lines(methods: dict[str, dict[str, dict[int, float]]]) -> list[str]:
    """Each part of GIFT earns its place when taking it out costs Avg or Transfer by more than the seed-paired spread
    of that cost (its standard deviation over seeds)."""
    lines = ["| part | taken out of | Avg it adds | Transfer it adds | earns its place |", "|---|---|---:|---:|:---:|"]
    for part, whole, without in PARTS:
        if whole not in methods or without not in methods:
            continue
        costs = [_paired(methods[whole][key], methods[without][key]) for key in ("Avg", "Transfer")]
        if not all(costs):
            continue
        earns = any(np.mean(c) > np.std(c, ddof=1) for c in costs) if len(costs[0]) > 1 else None
        verdict = "needs two seeds" if earns is None else "yes" if earns else "no"
        lines.append(f"| {part} | {LABELS[whole]} | {_mean_sd(costs[0])} | {_mean_sd(costs[1])} | {verdict} |")
    return lines if len(lines) > 2 else []


def kept_lines(methods: dict[str, dict[str, dict[int, float]]], labels: Mapping[str, str] = LABELS) -> list[str]:
    """The share of the Transfer FT loses (against the pre-trained model) that a replaying method keeps, per seed:
    (method − FT) / (zero-shot − FT)."""
    if "ft" not in methods or ZERO_SHOT not in methods:
        return []
    zero_shot, ft = methods[ZERO_SHOT]["Transfer"], methods["ft"]["Transfer"]
    lines = [f"| Transfer FT loses, kept by | share (aim ≥ {KEEPS:.0%}) | met |", "|---|---:|:---:|"]
    for method in _rows(methods, labels):
        if method in (ZERO_SHOT, "ft", *NO_REPLAY):
            continue
        own = methods[method]["Transfer"]
        shares = [100 * (own[s] - ft[s]) / (zero_shot[s] - ft[s]) for s in sorted(own.keys() & ft.keys())
                  if zero_shot[s] > ft[s]]  # fmt: skip
        if shares:
            met = "yes" if np.mean(shares) >= 100 * KEEPS else "no"
            lines.append(f"| {labels.get(method, method)} | {_mean_sd(shares)}% | {met} |")
    return lines if len(lines) > 2 else []


def _paired(whole: Mapping[int, float], without: Mapping[int, float]) -> list[float]:
    return [whole[seed] - without[seed] for seed in sorted(whole.keys() & without.keys())]


def _mean_sd(values: Iterable[float]) -> str:
    values = list(values)
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.1f}"


def bar_chart(
    path: Path, methods: dict[str, dict[str, dict[int, float]]], order: int, labels: Mapping[str, str] = LABELS
) -> None:
    """Mean ± deviation per method and figure, the pre-trained model's own figure as a dashed line over each group."""
    keys = [key for key in ("Transfer", "Avg", "Last", "learnt", "pretraining") if key in methods[ZERO_SHOT]]
    trained = [m for m in methods if m != ZERO_SHOT]
    fig, ax = plt.subplots(figsize=(12, 4.2))
    width = 0.8 / len(trained)
    for i, method in enumerate(trained):
        values = [list(methods[method][k].values()) for k in keys]
        errors = [np.std(v, ddof=1) if len(v) > 1 else 0 for v in values]
        ax.bar(np.arange(len(keys)) + i * width, [np.mean(v) for v in values], width, yerr=errors,
               label=labels.get(method, method), capsize=2)  # fmt: skip
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
