"""What a run leaves in its output folder: metrics.json, a Markdown table, a heat-map of A, and the loss curves.

Accuracies are percentages. Every file is rewritten after each task, so a long run shows its results as it goes;
the four metrics appear once the matrix is complete. Beside the matrix: which split it was measured on, the
zero-shot row (every task before any training; Transfer stays the MTIL one, over the rows after training, and the
zero-shot row's own Transfer is the reference to compare it with), and the pre-training probe where a run has one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.image import AxesImage

from gift_common.files import atomic_file, atomic_write
from gift_common.stand_in import NOTICE
from services.trainer import metrics

METRICS = "metrics.json"
TABLE = "results.md"
HEATMAP = "accuracy_matrix.png"
CURVES = "losses.png"
NOT_TERMS = {"task_name", "task_index", "step", "lr", "loss"}


@dataclass
class Results:
    """What a run has measured so far: row i of `rows` (and of `probe`) after task i, on split `split`."""

    names: list[str]
    split: str = "test"
    rows: list[list[float]] = field(default_factory=list)
    zero_shot: list[float] | None = None  # every task, before any training
    probe: list[dict[str, float]] | None = None  # per family, one per row; None = no pre-training probe
    probe_zero_shot: dict[str, float] | None = None
    stand_ins: list[str] = field(default_factory=list)  # stand-in weights the run used (gift_common.stand_in)
    weights: str | None = None  # set: one model measured (`gift eval`), its single row no matrix
    synthetic: dict[str, dict[str, Any]] = field(default_factory=dict)  # per task: its replay set (runner._replay)
    adaptation: dict[str, dict[str, Any]] = field(default_factory=dict)  # per task: its adapter (synthetic.adapt)


def summary(results: Results) -> dict[str, Any]:
    """The matrix so far (row i: after task i) and, once it is square, Transfer, Avg, Last and Forget."""
    names, rows = results.names, results.rows
    complete = len(rows) == len(names) and results.weights is None
    figures = metrics.summary(rows) if complete else {}
    zero_shot = results.zero_shot
    probe = results.probe
    return {
        **({"stand_in": NOTICE, "stand_in_weights": results.stand_ins} if results.stand_ins else {}),
        **({"weights": results.weights} if results.weights is not None else {}),
        "tasks": list(names),
        "split": results.split,
        "accuracy": [list(row) for row in rows],
        "unit": f"zero-shot top-1 accuracy on the {results.split} splits, percent; accuracy[i][j] = on task j after "
        "training task i",
        "complete": complete,
        **{key: _number(value) for key, value in figures.items()},
        "zero_shot": zero_shot,
        "zero_shot_Transfer": _number(float(np.mean(zero_shot[1:]))) if zero_shot and len(zero_shot) > 1 else None,
        "pretraining": None if probe is None else [_mean(families) for families in probe],
        "pretraining_families": probe,
        "pretraining_zero_shot": _mean(results.probe_zero_shot) if results.probe_zero_shot else None,
        "pretraining_zero_shot_families": results.probe_zero_shot,
        "synthetic": results.synthetic,
        "adaptation": results.adaptation,
    }


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value


def _mean(families: dict[str, float]) -> float:
    """The probe's figure: the mean over concept families (each family counts the same, whatever its size)."""
    return float(np.mean(list(families.values())))


def write_reports(out: Path, results: Results, log: Sequence[dict]) -> None:
    result = summary(results)
    atomic_write(out / METRICS, json.dumps(result, indent=2).encode())
    atomic_write(out / TABLE, markdown_table(result).encode())
    if results.weights is None:  # one model's row is no matrix, and it trained nothing
        accuracy_matrices(out / HEATMAP, [("", results.names, results.rows)])
        loss_curves(out / CURVES, log)


def markdown_table(result: dict[str, Any]) -> str:
    names = result["tasks"]
    lines = [f"**{result['stand_in']}**: {', '.join(result['stand_in_weights'])}", ""] if "stand_in" in result else []
    lines += [f"Zero-shot top-1 accuracy (%) on the **{result['split']}** splits.", ""]
    if "weights" in result:
        lines += [f"Weights: `{result['weights']}`.", ""]
    lines += ["| after \\ on | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    if result["zero_shot"] is not None:
        lines.append("| (zero-shot) | " + " | ".join(f"{value:.1f}" for value in result["zero_shot"]) + " |")
    for name, row in zip(_row_labels(result), result["accuracy"], strict=False):
        lines.append(f"| {name} | " + " | ".join(f"{value:.1f}" for value in row) + " |")
    if result["complete"]:
        keys = ("Transfer", "Avg", "Last", "Forget")
        lines += ["", "| " + " | ".join(keys) + " |", "|---" * len(keys) + "|"]
        lines.append("| " + " | ".join(_cell(result[k]) for k in keys) + " |")
        if result["zero_shot_Transfer"] is not None:
            lines += ["", f"Transfer of the zero-shot model (no training): {result['zero_shot_Transfer']:.1f}."]
    if result["pretraining"] is not None:
        lines += ["", *_probe_table(result)]
    return "\n".join(lines) + "\n"


def _row_labels(result: dict[str, Any]) -> list[str]:
    """What each row measured: the model after each task, or the weights file `gift eval` was given."""
    return [Path(result["weights"]).name] if "weights" in result else list(result["tasks"])


def _probe_table(result: dict[str, Any]) -> list[str]:
    """Pre-training probe: zero-shot accuracy on held-out world images per concept family, and their mean."""
    rows = list(zip(_row_labels(result), result["pretraining_families"], strict=False))
    if result["pretraining_zero_shot_families"] is not None:
        rows.insert(0, ("(zero-shot)", result["pretraining_zero_shot_families"]))
    families = list(dict.fromkeys(family for _, row in rows for family in row))
    lines = ["Pre-training probe (held-out world images, zero-shot per concept family, %):", ""]
    lines += ["| after | mean | " + " | ".join(families) + " |", "|---" * (len(families) + 2) + "|"]
    for name, row in rows:
        cells = [_cell(row.get(family)) for family in families]
        lines.append(f"| {name} | {_mean(row):.1f} | " + " | ".join(cells) + " |")
    return lines


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


# An accuracy matrix to draw: its title, the task names, and the rows measured so far (after each task trained).
Matrix = tuple[str, Sequence[str], Sequence[Sequence[float]]]


def accuracy_matrices(path: Path, matrices: Sequence[Matrix]) -> None:
    """Heat-maps of accuracy matrices side by side on one colour scale: a run's own, or runs to compare."""
    size = 1.5 + 0.6 * max(len(names) for _, names, _ in matrices)
    fig, axes = plt.subplots(
        1, len(matrices), figsize=((size + 1.5) * len(matrices), size), squeeze=False, layout="constrained"
    )
    for ax, (title, names, rows) in zip(axes[0], matrices, strict=True):
        image = _draw_matrix(ax, names, rows)
        ax.set_title(title)
    fig.colorbar(image, ax=axes[0].tolist(), label="top-1 accuracy (%)")
    save_figure(fig, path)


def _draw_matrix(ax: plt.Axes, names: Sequence[str], rows: Sequence[Sequence[float]]) -> AxesImage:
    matrix = np.full((len(names), len(names)), np.nan)
    if rows:  # none yet after the zero-shot evaluation
        matrix[: len(rows)] = rows
    image = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=100)
    for (i, j), value in np.ndenumerate(matrix):
        if not np.isnan(value):
            ax.text(
                j, i, f"{value:.1f}", ha="center", va="center", fontsize=8, color="white" if value < 60 else "black"
            )
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("evaluated on")
    ax.set_ylabel("after training")
    return image


def loss_curves(path: Path, log: Sequence[dict]) -> None:
    """One panel per loss term (and the total) over the run's steps, task boundaries dashed."""
    terms = [key for key in dict.fromkeys(k for entry in log for k in entry) if key not in NOT_TERMS] + ["loss"]
    fig, axes = plt.subplots(len(terms), 1, figsize=(8, 2 + 1.6 * len(terms)), sharex=True, squeeze=False)
    boundaries = [i for i in range(1, len(log)) if log[i]["task_index"] != log[i - 1]["task_index"]]
    for ax, term in zip(axes[:, 0], terms, strict=True):
        steps = [i for i, entry in enumerate(log) if term in entry]
        ax.plot(steps, [log[i][term] for i in steps], linewidth=0.8)
        for boundary in boundaries:
            ax.axvline(boundary, color="grey", linestyle="--", linewidth=0.6)
        ax.set_ylabel(term)
    axes[-1, 0].set_xlabel("training step (all tasks)")
    save_figure(fig, path)


def save_figure(fig: plt.Figure, path: Path) -> None:
    """The figure as a PNG at `path`, written atomically (a page may be read while a run rewrites it); closes it."""
    with atomic_file(path) as file:
        fig.savefig(file, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
