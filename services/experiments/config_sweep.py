"""`gift sweep`: any run config's methods over seeds, one results page, resumable.

    gift sweep --config mtil_order1 --methods gift ft --seeds 0 1 2 --set training.lr=2e-5 --out runs/sweeps/lr2e-5

Each cell (method, seed) is a `gift train --resume` process on the resolved config (bases merged, `--set` applied,
paths absolute) with the method's preset, the seed of the run and of its synthetic sets, and its output in
OUT/runs/order1-seedS-METHOD; the config's own method keeps its `method.overrides`, another preset runs as defined.
The page (plan.py) gives mean and deviation over seeds of Transfer, Avg, Last, Forget, what each method learnt and,
with a probe, kept of pre-training; a finished run is never run again, a stopped one goes on from its checkpoint.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gift_common.errors import UserError
from services.experiments.page import LABELS
from services.experiments.plan import Plan, run_plan
from services.experiments.sweep import Cell
from services.trainer.config import RunConfig, load_config
from services.trainer.registries import METHODS


def config_plan(
    config: str, overrides: Sequence[str], methods: Sequence[str], seeds: Sequence[int], out: Path, local: bool
) -> Plan:
    """The sweep of `config` (a file or a shipped config's name) with `overrides` over `methods` and `seeds`."""
    resolved = load_config(config, overrides)
    if unknown := [method for method in methods if method not in METHODS]:
        raise UserError(f"--methods: unknown method {', '.join(unknown)}; registered: {', '.join(METHODS.names())}")
    base = json.loads(resolved.model_dump_json())
    own = resolved.method
    weights = {method: dict(own.overrides) if method == own.preset else {} for method in methods}

    def config_of(cell: Cell, api_url: str | None) -> dict[str, Any]:
        run = copy.deepcopy(base)
        run["output_dir"] = str(out / "runs" / cell.name)
        run["method"] |= {"preset": cell.method, "overrides": weights[cell.method]}
        run["seed"] = run["synthetic"]["seed"] = cell.seed
        run["progress"] = False  # the sweep draws its own progress
        if api_url is not None:
            run["synthetic"]["generator_url"] = api_url
        return run

    return Plan(
        title=f"{Path(config).stem}: continual fine-tuning",
        cells=[Cell(1, seed, method) for method in methods for seed in seeds],
        config_of=config_of,
        orders={1: [task.label for task in resolved.tasks]},
        labels={method: LABELS.get(method, method) for method in methods},
        split=resolved.evaluation.split,
        schedule=schedule_line(config, overrides, resolved),
        weights=weights,
        local_generator=local,
        env={},
    )


def schedule_line(config: str, overrides: Sequence[str], resolved: RunConfig) -> str:
    """What every run of the page shares: the config, its overrides, and the schedule and sets they give."""
    training, synthetic = resolved.training, resolved.synthetic
    changed = f" with {', '.join(overrides)}" if overrides else ""
    return (f"`{config}`{changed}: {training.iterations} iterations per task, batch {training.batch_size}, "
            f"lr {training.lr:g}; {synthetic.size} synthetic pairs per task drawn in {synthetic.steps} steps, "
            f"scheduler {synthetic.scheduler or 'of the worker'}")  # fmt: skip


def run_config_sweep(
    config: str,
    overrides: Sequence[str],
    methods: Sequence[str],
    seeds: Sequence[int],
    out: Path | None,
    page: Path | None = None,
    parallel: int = 1,
    local_generator: bool = False,
    page_only: bool = False,
) -> str:
    """Run the sweep into its page (default OUT, OUT default runs/sweeps/CONFIG) and return the page."""
    out = (out or Path("runs") / "sweeps" / Path(config).stem).resolve()
    plan = config_plan(config, overrides, methods, seeds, out, local_generator)
    try:
        return run_plan(plan, out, (page or out).resolve(), parallel, page_only)
    except ValueError as error:
        raise UserError(str(error)) from None
