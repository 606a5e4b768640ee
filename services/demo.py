"""``gift demo``: the embedded default end to end, every part a separate process, all stopped at the end.

It starts a private Redis (unless GIFT_REDIS_URL is set), the generator API and a worker serving the tiny world's
text-to-image model, then fine-tunes the tiny CLIP on the tiny world's task sequence twice, with FT and with GIFT,
as two `gift train` processes side by side; the GIFT run asks the generator for its synthetic pairs over HTTP.
It prints the table of Transfer, Avg, Last and Forget, and writes into DIR:

    summary.json               {"zero-shot" | "ft" | "gift": {"transfer", "avg", "last", "forget", "pretraining"}};
                               GIFT's also "transfer_loss_kept": the share of the Transfer FT loses that GIFT keeps
    summary.md                 the same table and share, and where everything else is
    accuracy_matrices.png      the accuracy matrices side by side
    synthetic_samples.png      GIFT's synthetic images for the last task, with their prompts
    runs/<method>/             each run's own reports, checkpoints and log
    logs/                      the generator stack's logs

The schedule is the embedded default's (the shipped config tinyworld, chosen on the validation splits), with smaller
synthetic sets and probe so the demo takes minutes; the figures are measured on the test splits.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gift_common.contact_sheet import contact_sheet
from gift_common.errors import UserError
from gift_common.files import atomic_write
from services.run_configs import run_config
from services.runs import Run, start_run, stop_all, wait_for
from services.stack import ONE_THREAD, LocalStack
from services.trainer.reports import accuracy_matrices

METHODS = ("ft", "gift")
METRIC_KEYS = {"transfer": "Transfer", "avg": "Avg", "last": "Last", "forget": "Forget"}


@dataclass(frozen=True)
class DemoSettings:
    """How much the demo trains: small enough for minutes on a laptop CPU. Tests shrink it further."""

    iterations: int | None = None  # None: the config's, so the demo moves the weights as far as the config does
    synthetic_size: int = 128
    synthetic_steps: int = 10  # as the config tinyworld: DPM-Solver++ draws the tiny world as well in 10 as in 25
    probe_size: int = 1000
    tasks: int | None = None  # the first N tasks of the sequence; None = all
    overrides: dict[str, Any] = field(default_factory=dict)  # config keys set last, e.g. {"model": {...}}


def demo_config(method: str, out_dir: Path, api_url: str, settings: DemoSettings) -> dict[str, Any]:
    """The embedded default's config for one method, pointed at this demo's generator and folders."""
    config = run_config(
        out_dir,
        method,
        api_url,
        method,
        training={"num_workers": 0, **({"iterations": settings.iterations} if settings.iterations else {})},
        synthetic={"size": settings.synthetic_size, "steps": settings.synthetic_steps},
        evaluation={"split": "test", "probe_size": settings.probe_size},
    )
    config["tasks"] = config["tasks"][: settings.tasks]
    return {**config, **settings.overrides}


def run_demo(out_dir: Path, settings: DemoSettings = DemoSettings()) -> dict[str, dict[str, float | None]]:
    """Everything the module docstring says; returns summary.json's content."""
    stop_on_signals()
    out_dir = out_dir.resolve()
    shutil.rmtree(out_dir / "runs", ignore_errors=True)  # a rerun trains afresh; its synthetic cache is kept
    out_dir.mkdir(parents=True, exist_ok=True)
    say(f"starting the generator stack (logs in {out_dir / 'logs'})")
    runs: list[Run] = []
    with LocalStack(out_dir / "logs", redis_url=os.environ.get("GIFT_REDIS_URL"), env=ONE_THREAD) as stack:
        stack.start(workers=1)
        say(f"generator API at {stack.api_url}; training FT and GIFT side by side")
        try:
            for method in METHODS:
                config = demo_config(method, out_dir, stack.api_url, settings)
                runs.append(start_run(method, config, out_dir / "runs", env=ONE_THREAD))
            wait_for(runs)
        finally:
            stop_all(runs)  # also on Ctrl-C: no trainer outlives the demo
    summary = {"zero-shot": zero_shot_figures(runs[0].metrics())}
    summary |= {run.name: figures(run.metrics()) for run in runs}
    summary["gift"]["transfer_loss_kept"] = transfer_loss_kept(summary)
    write_outputs(out_dir, runs, summary)
    return summary


def stop_on_signals() -> None:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt, so the demo stops everything it started. Set explicitly: a shell
    starts background jobs with SIGINT ignored, and Python then never turns Ctrl-C into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def figures(metrics: dict[str, Any]) -> dict[str, float | None]:
    """summary.json's entry for one run: the four MTIL figures and what it kept of pre-training."""
    if not metrics.get("complete"):
        raise UserError("a run ended without a complete accuracy matrix; see its log in runs/")
    entry = {key: metrics[name] for key, name in METRIC_KEYS.items()}
    entry["pretraining"] = metrics["pretraining"][-1] if metrics.get("pretraining") else None
    return entry


def zero_shot_figures(metrics: dict[str, Any]) -> dict[str, float | None]:
    """The pre-trained model's row: what it scores before any training (it forgets nothing)."""
    mean = float(sum(metrics["zero_shot"]) / len(metrics["zero_shot"]))
    row = {"transfer": metrics["zero_shot_Transfer"], "avg": mean, "last": mean, "forget": 0.0}
    return row | {"pretraining": metrics.get("pretraining_zero_shot")}


def transfer_loss_kept(summary: dict[str, dict[str, float | None]]) -> float | None:
    """(GIFT − FT) / (zero-shot − FT) on Transfer: 1 keeps all that FT loses, 0 none (the paper: 0.996 on MTIL
    Order I). None where FT loses nothing."""
    zero_shot, ft, gift = (summary[name]["transfer"] for name in ("zero-shot", "ft", "gift"))
    if zero_shot is None or ft is None or gift is None or zero_shot <= ft:
        return None
    return (gift - ft) / (zero_shot - ft)


def kept_line(summary: dict[str, dict[str, float | None]]) -> str:
    share = summary["gift"].get("transfer_loss_kept")
    figures = ", ".join(f"{name} {_cell(summary[name]['transfer'])}" for name in ("zero-shot", "ft", "gift"))
    if share is None:
        return f"FT lost no Transfer against the zero-shot model (Transfer: {figures})."
    return f"GIFT kept {100 * share:.0f}% of the Transfer that FT lost (Transfer: {figures})."


def write_outputs(out_dir: Path, runs: list[Run], summary: dict[str, dict[str, float | None]]) -> None:
    atomic_write(out_dir / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    table = summary_table(summary)
    matrices = accuracy_figure(out_dir / "accuracy_matrices.png", runs)
    samples = synthetic_samples(out_dir / "synthetic_samples.png", out_dir / "synthetic")
    lines = [table, "", kept_line(summary), "", f"Accuracy matrices: {matrices}"]
    lines.append(f"Per run: {out_dir / 'runs'}/<method>/results.md")
    if samples:
        lines.append(f"Synthetic images: {samples}")
    atomic_write(out_dir / "summary.md", ("\n".join(lines) + "\n").encode())
    print("\n" + "\n".join(lines), flush=True)


def summary_table(summary: dict[str, dict[str, float | None]]) -> str:
    header = "| method | Transfer | Avg | Last | Forget | pre-training kept |"
    rows = [header, "|---|---:|---:|---:|---:|---:|"]
    for method, entry in summary.items():
        cells = [_cell(entry[key]) for key in (*METRIC_KEYS, "pretraining")]
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    note = "Zero-shot accuracy (%) on the test splits; pre-training kept = mean over concept families of held-out " \
           "world images; zero-shot = the pre-trained model before any training."  # fmt: skip
    return note + "\n\n" + "\n".join(rows)


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def accuracy_figure(path: Path, runs: list[Run]) -> Path:
    """The runs' accuracy matrices side by side, on one colour scale."""
    matrices = []
    for run in runs:
        metrics = run.metrics()
        title = f"{run.name}: Avg {metrics['Avg']:.1f}, Last {metrics['Last']:.1f}"
        matrices.append((title, metrics["tasks"], metrics["accuracy"]))
    accuracy_matrices(path, matrices)
    return path


def synthetic_samples(path: Path, cache_dir: Path, count: int = 48) -> Path | None:
    """A contact sheet of the largest synthetic set the GIFT run used (the last task's: concepts and old classes)."""
    sets = [json.loads(p.read_text()) for p in sorted((cache_dir / "sets").glob("*.json"))]
    if not sets:
        return None
    chosen = max(sets, key=lambda s: (len(set(s["request"]["prompts"])), s["request"]["seed"]))
    prompts, shas = chosen["request"]["prompts"][:count], chosen["images"][:count]
    pngs = [(cache_dir / "images" / sha[:2] / f"{sha}.png").read_bytes() for sha in shas]
    contact_sheet(pngs, prompts, columns=8).save(path)
    return path


def say(message: str) -> None:
    print(f"gift demo: {message}", flush=True)
