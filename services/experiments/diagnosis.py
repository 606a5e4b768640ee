"""Why GIFT's weight consolidation costs the tiny world's tasks what they learn: one variant, one or two tasks, val.

    python -m services.experiments.diagnosis VARIANT [--tasks 1] [--out runs/diagnosis]

Each variant is GIFT at the paper's weights (distillation 1, ITA 0.25, AWC 1) with one thing changed, or a
reference (FT, GIFT without AWC). The run is the embedded default's config (the shipped config `tinyworld`, order 1, val
splits, seed 0) with replay on real world images (`synthetic.source: tinyworld`: the same prompts, no generator),
driven task by task through the trainer's own Runner and Engine, so that the loss, the step and the evaluation are
the trainer's. Only the first `--tasks` tasks are trained; every task is evaluated, so the untrained ones measure
Transfer. AWC is replaced by `ObservedAWC`, which computes the same loss (or the variant's importance) and records:

- the token table's importance on the class-word rows of the task being learnt (their share of the table's mass,
  and how many times the row average they weigh);
- each tensor's share of the consolidation gradient's squared norm, Σ (2 F (θ − θ_{t−1}))²;
- how well one step's importance agrees with the task's mean importance (cosine), early and late in the task;
- Adam's second moment on the class-word rows at the task's end (against the same rows under GIFT without AWC).

The JSON it writes (`OUT/VARIANT.json`) holds the accuracy rows, the pre-training probe, each task's displacement
‖θ_t − θ_{t−1}‖ / ‖θ_{t−1}‖ (whole model and token table) and those records; docs/results/2026-12-07-gift-diagnosis.md
reads them.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gift_common.files import atomic_write
from services.devices import describe
from services.run_configs import run_config
from services.trainer import losses
from services.trainer.config import parse_config
from services.trainer.context import StepContext
from services.trainer.methods import AWC
from services.trainer.runner import Runner
from services.trainer.synthetic import concept_names

TOKEN_TABLE = "token_embedding.weight"
ORDER = ("objects", "textures", "digits", "scenes", "letters", "sketches")
PAPER = {"distill": 1.0, "ita": 0.25, "awc": 1.0}
RECORD_EVERY = 10  # steps between two importance records (each reads every parameter)
COSINE_STEPS = (0, 1, 5, 20, 50, 100, 200)  # steps whose importance is compared with the task's mean


@dataclass(frozen=True)
class Variant:
    """What a run changes from GIFT at the paper's weights."""

    weights: Mapping[str, float] = field(default_factory=lambda: PAPER)
    training: Mapping[str, Any] = field(default_factory=dict)
    importance: str = "step"  # step (the paper's), no_token_table, ema
    pool_without_task_words: bool = False
    measure_overlap: bool = False  # one more backward pass every RECORD_EVERY steps


VARIANTS: dict[str, Variant] = {
    "ft": Variant(weights={"distill": 0.0, "ita": 0.0, "awc": 0.0}),
    "no_awc": Variant(weights={**PAPER, "awc": 0.0}),
    "paper": Variant(),
    "awc_0.03": Variant(weights={**PAPER, "awc": 0.03}),
    "awc_0.01": Variant(weights={**PAPER, "awc": 0.01}),
    "awc_0.003": Variant(weights={**PAPER, "awc": 0.003}),
    "no_token_table": Variant(importance="no_token_table"),
    "pool_without_task_words": Variant(pool_without_task_words=True),
    "ema": Variant(importance="ema"),
    "lr1e-4_x3": Variant(training={"lr": 1e-4, "iterations": 900, "warmup": 30}),
    "no_awc_lr1e-4_x3": Variant(weights={**PAPER, "awc": 0.0}, training={"lr": 1e-4, "iterations": 900, "warmup": 30}),
    # AWC too weak to act (1e-6), to read the pull that weight 1 would exert along distillation and ITA's path
    "awc_1e-6": Variant(weights={**PAPER, "awc": 1e-6}),
    "awc_1e-6_mtil_sum_lr": Variant(weights={**PAPER, "awc": 1e-6}, training={"lr": 3.3e-5}),
    # where the task's gradient falls on the importance, along the path of distillation and ITA alone
    "overlap": Variant(weights={**PAPER, "awc": 1e-6}, training={"iterations": 100}, measure_overlap=True),
    "overlap_pool_without_task_words": Variant(
        weights={**PAPER, "awc": 1e-6}, training={"iterations": 100}, pool_without_task_words=True, measure_overlap=True
    ),
    # Σ lr of MTIL's tasks at 1e-5 (5.0e-3) instead of the tiny world's 4.5e-2: lr 3e-4 × 5.0/45.3
    "mtil_sum_lr": Variant(training={"lr": 3.3e-5}),
    "ft_mtil_sum_lr": Variant(weights={"distill": 0.0, "ita": 0.0, "awc": 0.0}, training={"lr": 3.3e-5}),
    # MTIL's schedule itself (lr 1e-5, 1,000 steps, 100 warm-up): can the world's tasks be learnt at its displacement?
    "ft_mtil_schedule": Variant(
        weights={"distill": 0.0, "ita": 0.0, "awc": 0.0}, training={"lr": 1e-5, "iterations": 1000, "warmup": 100}
    ),
    "no_awc_mtil_sum_lr": Variant(weights={**PAPER, "awc": 0.0}, training={"lr": 3.3e-5}),
}
EMA_DECAY = 0.99  # the moving average's memory: about 100 steps, a third of a task


class ObservedAWC(AWC):
    """AWC as the trainer computes it, with its importance optionally changed, recording what the module says."""

    def __init__(
        self, weight: float, importance: str, class_rows: Callable[[], Tensor], measure_overlap: bool = False
    ) -> None:
        super().__init__(weight)
        self.importance = importance
        self.measure_overlap = measure_overlap
        self.class_rows = class_rows  # the token ids of the current task's class words
        self.step = 0
        self.ema: dict[str, Tensor] = {}
        self.records: list[dict[str, Any]] = []
        self.snapshots: dict[int, Tensor] = {}
        self.total: Tensor | None = None

    def begin_task(self) -> None:
        self.step, self.ema, self.snapshots, self.total = 0, {}, {}, None

    def value(self, ctx: StepContext) -> Tensor:
        fisher = self.fisher(ctx)
        if self.step % RECORD_EVERY == 0:
            self.records.append(self.record(ctx, fisher))
        flat = torch.cat([f.reshape(-1) for f in fisher.values()])
        self.total = flat.clone() if self.total is None else self.total.add_(flat)
        if self.step in COSINE_STEPS:
            self.snapshots[self.step] = flat
        self.step += 1
        return losses.consolidation_loss(ctx.params, ctx.anchor, fisher)

    def fisher(self, ctx: StepContext) -> dict[str, Tensor]:
        if self.importance == "ema":  # a moving average of the squared gradient, then the paper's normalisation
            for name, p in ctx.params.items():
                if p.grad is not None:
                    square = p.grad.detach().square()
                    self.ema[name] = square if name not in self.ema else self.ema[name].lerp_(square, 1 - EMA_DECAY)
            return losses.normalise_importance(self.ema, ctx.params)
        fisher = losses.awc_fisher(ctx.params, ctx.grad_scale)
        if self.importance == "no_token_table":
            fisher[TOKEN_TABLE] = torch.zeros_like(fisher[TOKEN_TABLE])
        return fisher

    def record(self, ctx: StepContext, fisher: dict[str, Tensor]) -> dict[str, Any]:
        table, rows = fisher[TOKEN_TABLE], self.class_rows()
        row_mass = table.sum(dim=1)
        pulls = {n: (2 * fisher[n] * (p.detach() - ctx.anchor[n])).square().sum().item() for n, p in ctx.params.items()}
        total_pull = sum(pulls.values()) or 1.0
        top = sorted(pulls.items(), key=lambda kv: -kv[1])[:3]
        return {
            "step": self.step,
            "class_rows_share": (row_mass[rows].sum() / row_mass.sum().clamp_min(1e-30)).item(),
            "class_row_weight": (row_mass[rows].mean() / row_mass.mean().clamp_min(1e-30)).item(),
            "rows_with_importance": int((row_mass > 0).sum()),
            "token_table_pull_share": pulls[TOKEN_TABLE] / total_pull,
            "penalty": losses.consolidation_loss(ctx.params, ctx.anchor, fisher).item(),  # unweighted
            "top_pull_shares": {n: v / total_pull for n, v in top},
            **self.overlap(ctx, fisher),
        }

    def overlap(self, ctx: StepContext, fisher: dict[str, Tensor]) -> dict[str, float]:
        """Σ F g² / Σ g² for the task loss's gradient g: 1 where the task's gradient ignores the importance (whose
        mean is 1 in each tensor), far above 1 where the task must move the very weights replay marks important."""
        if not self.measure_overlap:
            return {}
        names = list(ctx.params)
        task = losses.task_loss(ctx.task_logits, ctx.labels)
        grads = torch.autograd.grad(task, [ctx.params[n] for n in names], retain_graph=True, allow_unused=True)
        weighted = {
            n: (fisher[n] * g.square()).sum().item() for n, g in zip(names, grads, strict=True) if g is not None
        }
        plain = {n: g.square().sum().item() for n, g in zip(names, grads, strict=True) if g is not None}
        towers = [n for n in plain if n != TOKEN_TABLE]
        return {
            "task_overlap": sum(weighted.values()) / sum(plain.values()),
            "task_overlap_towers": sum(weighted[n] for n in towers) / sum(plain[n] for n in towers),
        }

    def agreement(self) -> dict[int, float]:
        """Cosine between the importance of each snapshotted step and the task's mean importance."""
        if self.total is None:
            return {}
        return {
            s: torch.nn.functional.cosine_similarity(f, self.total, dim=0).item() for s, f in self.snapshots.items()
        }


def class_word_ids(tokenizer: Callable[[Sequence[str]], Tensor], prompts: Sequence[str], template: str) -> Tensor:
    """The token ids of a task's prompts that its template does not hold: the rows its class words look up."""
    ids = set(tokenizer(list(prompts)).unique().tolist())
    ids -= set(tokenizer([template.format("")]).unique().tolist())
    return torch.tensor(sorted(ids))


def config_for(name: str, variant: Variant, out: Path) -> dict[str, Any]:
    config = run_config(
        out,
        name,
        None,
        "gift",
        weights=dict(variant.weights),
        tasks=ORDER,
        training=dict(variant.training),
        synthetic={"source": "tinyworld"},
        evaluation={"split": "val"},
    )
    return config


def pool_concepts(runner: Runner, trained: int, out: Path) -> Path:
    """A concept list without any concept whose prompt shares a class word with the tasks to be trained."""
    settings = runner.config.synthetic
    words: set[int] = set()
    for task in runner.tasks[:trained]:
        words |= set(class_word_ids(runner.tokenizer, task.prompts, task.templates[0]).tolist())
    kept = [c for c in concept_names(settings.concepts)
            if not words & set(runner.tokenizer([settings.concept_template.format(c)]).unique().tolist())]  # fmt: skip
    path = out / "concepts-without-task-words.txt"
    path.write_text("\n".join(kept) + "\n")
    return path


def displacement(before: Mapping[str, Tensor], after: Mapping[str, Tensor], rows: Tensor) -> dict[str, float]:
    """‖θ_t − θ_{t−1}‖ / ‖θ_{t−1}‖ for the whole model, the token table, and the task's class-word rows of it."""

    def norm(tensors: Sequence[Tensor]) -> float:
        return torch.cat([t.reshape(-1) for t in tensors]).norm().item()

    names = list(before)
    return {
        "model": norm([after[n] - before[n] for n in names]) / norm([before[n] for n in names]),
        "token_table": (after[TOKEN_TABLE] - before[TOKEN_TABLE]).norm().item() / before[TOKEN_TABLE].norm().item(),
        "class_rows": (after[TOKEN_TABLE][rows] - before[TOKEN_TABLE][rows]).norm().item()
        / before[TOKEN_TABLE][rows].norm().item(),
    }


def run(name: str, trained: int, out: Path) -> dict[str, Any]:
    variant = VARIANTS[name]
    config = config_for(name, variant, out)
    if variant.pool_without_task_words:
        probe_runner = Runner(parse_config(config, out), torch.device("cpu"))
        config["synthetic"]["concepts"] = str(pool_concepts(probe_runner, trained, out))
    runner = Runner(parse_config(config, out), torch.device("cpu"))
    engine, current = runner.engine, {"rows": torch.empty(0, dtype=torch.long)}
    observed = next((t for t in engine.terms if isinstance(t, AWC)), None)
    if observed is not None:
        observed = ObservedAWC(observed.weight, variant.importance, lambda: current["rows"], variant.measure_overlap)
        engine.terms = [observed if isinstance(t, AWC) else t for t in engine.terms]
    result: dict[str, Any] = {"variant": name, "config": {k: config[k] for k in ("method", "training")}}
    result["zero_shot"], result["probe_zero_shot"] = runner._evaluate(), probe_mean(runner)
    synthetic = runner._start_synthetic() if runner.needs_replay else None
    result["tasks"] = []
    for index in range(trained):
        data = runner.tasks[index]
        current["rows"] = class_word_ids(runner.tokenizer, data.prompts, data.templates[0])
        if observed is not None:
            observed.begin_task()
        before = {n: p.detach().clone() for n, p in runner.model.named_parameters() if p.requires_grad}
        started = time.monotonic()
        log = engine.train_task(runner._task(index, synthetic))
        after = {n: p.detach() for n, p in runner.model.named_parameters() if n in before}
        task: dict[str, Any] = {
            "name": data.name,
            "seconds": round(time.monotonic() - started),
            "row": runner._evaluate(),
            "probe": probe_mean(runner),
            "displacement": displacement(before, after, current["rows"]),
            "class_rows_adam_v": None,
            "last_losses": {k: sum(s[k] for s in log[-20:]) / len(log[-20:]) for k in log[-1]},
        }
        state = engine.optimizer.state.get(dict(runner.model.named_parameters())[TOKEN_TABLE], {})
        if "exp_avg_sq" in state:
            task["class_rows_adam_v"] = state["exp_avg_sq"][current["rows"]].sqrt().mean().item()
        if observed is not None:
            task["importance"] = observed.records
            task["agreement_with_task_mean"] = observed.agreement()
            observed.records = []
        result["tasks"].append(task)
        print(json.dumps({k: v for k, v in task.items() if k != "importance"}), flush=True)
    return result


def probe_mean(runner: Runner) -> float | None:
    if runner.probe is None:
        return None
    families = runner._evaluate_probe()
    return sum(families.values()) / len(families)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m services.experiments.diagnosis", description=__doc__.splitlines()[0]
    )
    parser.add_argument("variant", nargs="?", choices=list(VARIANTS))
    parser.add_argument("--tasks", type=int, default=1, choices=range(1, len(ORDER) + 1), help="tasks to train")
    parser.add_argument("--out", type=Path, default=Path("runs/diagnosis"))
    parser.add_argument("--table", action="store_true", help="print the table of every run in OUT, and run nothing")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if args.table:
        print(table(sorted(out.glob("*task.json"))))
        return
    if args.variant is None:
        parser.error("give a variant, or --table")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    result = run(args.variant, args.tasks, out) | {"machine": machine()}
    atomic_write(out / f"{args.variant}-{args.tasks}task.json", json.dumps(result, indent=1).encode())


def table(paths: Sequence[Path]) -> str:
    """One line per trained task of each run: what it learnt, what the untrained tasks and pre-training kept, how far
    it moved, and (GIFT's AWC) the class-word rows' importance and Adam's second moment there."""
    lines = [
        "| run | task | learnt | earlier tasks | Transfer | probe | ‖Δθ‖/‖θ‖ | token table | class rows "
        "| √v class rows | class rows' share (× row mean) | token table's pull | penalty at the end |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for path in paths:
        result = json.loads(path.read_text())
        if path == paths[0]:
            zero, probe = result["zero_shot"], result["probe_zero_shot"]
            lines.append(f"| zero-shot | | {zero[0]:.1f} | | {_mean(zero[1:]):.1f} | {probe:.1f} | | | | | | | |")
        for index, task in enumerate(result["tasks"]):
            row, moved = task["row"], task["displacement"]
            later = [r for r in task.get("importance", []) if r["step"] >= 100]  # once the anchor is left behind
            share = _mean([r["class_rows_share"] for r in later])
            weight = _mean([r["class_row_weight"] for r in later])
            pull = _mean([r["token_table_pull_share"] for r in later])
            end = _end_penalty(task, result["config"]["method"]["overrides"].get("awc", 0.0))
            awc = "" if share is None else f"{100 * share:.0f}% ({weight:.0f}×)"
            lines.append(
                f"| {path.stem} | {task['name']} | {row[index]:.1f} | {_number(_mean(row[:index]))} "
                f"| {_mean(row[len(result['tasks']) :]):.1f} "
                f"| {task['probe']:.1f} | {100 * moved['model']:.2f}% | {100 * moved['token_table']:.2f}% "
                f"| {_percent(moved.get('class_rows'))} | {task['class_rows_adam_v']:.3f} | {awc} "
                f"| {'' if pull is None else f'{100 * pull:.0f}%'} | {_number(end)} |"
            )
    return "\n".join(lines)


def _end_penalty(task: dict[str, Any], weight: float) -> float | None:
    """The unweighted Σ F (θ − θ_{t−1})² over a task's last steps: its records of the last 50, or else the logged
    AWC term of the last 20 divided by its weight (runs made before the records held it)."""
    records = [r["penalty"] for r in task.get("importance", [])[-5:] if "penalty" in r]
    if records:
        return _mean(records)
    logged = task["last_losses"].get("awc")
    return None if logged is None or not weight else logged / weight


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def machine() -> str:
    return describe(torch.device("cpu"))


if __name__ == "__main__":
    main()
