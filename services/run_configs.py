"""Run configs for the runs the demo and the tiny world's sweep start: the embedded default (the shipped config
`tinyworld`) with what a run changes set, so that both commands run the same config the same way."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from services.trainer import configs as shipped_configs

BASE_CONFIG = shipped_configs.path("tinyworld")
SECTIONS = ("training", "synthetic", "evaluation")  # the config's sections a run may change setting by setting


def base_config() -> dict[str, Any]:
    """The embedded default's config as the file says."""
    return yaml.safe_load(BASE_CONFIG.read_text())


def method_section(preset: str, base: dict[str, Any]) -> dict[str, Any]:
    """The config's own method as it stands, its val-chosen weights included; any other preset without them."""
    return base if preset == base["preset"] else {**base, "preset": preset, "overrides": {}}


def run_config(
    out: Path,
    name: str,
    api_url: str | None,
    preset: str,
    *,
    weights: dict[str, float] | None = None,
    tasks: Sequence[str] | None = None,
    seed: int | None = None,
    **changes: dict[str, Any],
) -> dict[str, Any]:
    """The embedded default for run `name`: its output in OUT/runs/NAME, the synthetic cache shared in OUT/synthetic,
    the generator at `api_url`, method `preset` with `weights` (None: as `method_section` says), the tiny world's
    `tasks` in that order (None: the config's), `seed` for the run and its synthetic sets, and `changes`
    (``training={...}``, ``synthetic={...}``, ``evaluation={...}``) set over the config's sections."""
    if unknown := set(changes) - set(SECTIONS):
        raise TypeError(f"run_config changes only {', '.join(SECTIONS)}, not {', '.join(sorted(unknown))}")
    config = base_config()
    config["output_dir"] = str(out / "runs" / name)
    config["method"] = method_section(preset, config["method"])
    if weights is not None:
        config["method"] = {**config["method"], "preset": preset, "overrides": weights}
    for section in SECTIONS:
        config[section] = {**config[section], **changes.get(section, {})}
    config["synthetic"] |= {"generator_url": api_url, "cache_dir": str(out / "synthetic")}
    if seed is not None:
        config["seed"] = config["synthetic"]["seed"] = seed
    if tasks is not None:
        config["tasks"] = [{"dataset": {"type": "tinyworld", "task": task}} for task in tasks]
    config["progress"] = False  # the commands draw their own progress
    return config
