"""What a sweep runs: the page's methods, the cells (order, seed, method), each cell's config, and the runs."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from services.demo import stop_on_signals
from services.run_configs import base_config, method_section, run_config
from services.runs import Run, start_run, stop_all
from services.stack import ONE_THREAD, LocalStack
from services.trainer.config import method_settings


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
    "gift_distill_only": Method("GIFT, distillation alone", "replay_distill"),  # the paper's first ablation row
}
# Diagnostics, run on request: GIFT's whole loss on real world images isolates what the synthetic images cost.
DIAGNOSTICS: dict[str, Method] = {"gift_real": Method("GIFT on real images", "gift", "tinyworld")}
ALL_METHODS = METHODS | DIAGNOSTICS
ORDERS = {
    1: ("objects", "textures", "digits", "scenes", "letters", "sketches"),
    2: ("letters", "scenes", "objects", "sketches", "digits", "textures"),
}


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


def cell_config(cell: Cell, out: Path, split: str, api_url: str | None, overrides: Overrides) -> dict[str, Any]:
    """The shipped config tinyworld with the cell's method, seed and order, the split, and the overrides."""
    method = ALL_METHODS[cell.method]
    return run_config(
        out,
        cell.name,
        api_url,
        method.preset,
        weights=overrides.methods.get(cell.method, {}),
        tasks=ORDERS[cell.order],
        seed=cell.seed,
        training=overrides.training,
        synthetic={"source": method.source},
        evaluation={"split": split},
    )


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
    base = base_config()["method"]
    weights = {}
    for name in names:
        method = ALL_METHODS[name]
        own = method_section(method.preset, base).get("overrides", {}) if method.chosen else {}
        if changed := {**own, **chosen.get(name, {})}:
            weights[name] = changed
    return weights


ConfigOf = Callable[[Cell, str | None], dict[str, Any]]  # a cell's run config, given a local generator's URL or None


def sweep(
    todo: Sequence[Cell],
    out: Path,
    parallel: int,
    config_of: ConfigOf,
    on_finish: Callable[[Cell], None],
    local_generator: bool = True,
    env: Mapping[str, str] = ONE_THREAD,
) -> None:
    """Run the cells, ``parallel`` at a time, each a `gift train --resume` process with `env` (a run stopped earlier
    goes on from its checkpoint), calling `on_finish` as each run ends well; a failed run is reported and the
    others go on. With `local_generator`, one generator stack started here serves every run; else each config's
    own generator does."""
    stop_on_signals()
    if not todo:
        return
    with contextlib.ExitStack() as cleanup:
        api_url = None
        if local_generator:
            stack = cleanup.enter_context(
                LocalStack(out / "logs", redis_url=os.environ.get("GIFT_REDIS_URL"), env=ONE_THREAD)
            )
            stack.start(workers=1)
            api_url = stack.api_url
        _run_all(todo, out, parallel, [config_of(cell, api_url) for cell in todo], on_finish, env)


def _run_all(
    todo: Sequence[Cell],
    out: Path,
    parallel: int,
    configs: list[dict[str, Any]],
    on_finish: Callable[[Cell], None],
    env: Mapping[str, str],
) -> None:
    by_name = {cell.name: cell for cell in todo}
    steps = sum(len(c["tasks"]) * c["training"]["iterations"] for c in configs)
    running: list[Run] = []
    done_steps = 0
    with tqdm(total=steps, desc="sweep", unit="step", dynamic_ncols=True) as bar:
        try:
            while configs or running:
                while configs and len(running) < parallel:
                    config = configs.pop(0)
                    name = Path(config["output_dir"]).name
                    running.append(start_run(name, config, out / "configs", env=env, resume=True))
                for run in [r for r in running if not r.process.alive()]:
                    running.remove(run)
                    done_steps += run.total_steps
                    if run.process.popen.returncode != 0:
                        tqdm.write(f"sweep: run {run.name} failed; see {run.process.log}")
                    else:
                        on_finish(by_name[run.name])
                bar.update(done_steps + sum(r.steps_done() for r in running) - bar.n)
                time.sleep(1.0)
        finally:
            stop_all(running)
