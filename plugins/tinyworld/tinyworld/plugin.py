"""The tiny world as a plugin of GIFT: what its distribution registers (pyproject.toml's entry points).

    gift.datasets          tinyworld   its six tasks: `dataset: {type: tinyworld, task: NAME, seed: N}`
    gift.concepts          tinyworld   its 106 concept names, in "a photo of {}." (the names carry their article)
    gift.replay            tinyworld   real world images for the synthetic prompts: replay distillation on real data
    gift.probes            tinyworld   zero-shot accuracy on held-out world images, per concept family
    gift.clip_models       tinyworld   the tiny CLIP's architecture and weights: `model: {shipped: tinyworld}`
                                       (shipped.clip_files)
    gift.generator.models  tinyworld   the text-to-image pipeline a worker serves when given no --model
                                       (pipeline.default_model_dir)

Each object has the shape the trainer's or the worker's protocol asks for; nothing here imports them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from gift_common.errors import UserError
from tinyworld import tasks
from tinyworld.replay import conditioned_pair, facts_of
from tinyworld.world import CONCEPT_NAMES, CONCEPT_TEMPLATES, CONCEPTS, FAMILIES, World

PROBE_TEST_START = 1_000_000  # the test probe's held-out images start here; val's are the first ones


# --- the tasks --------------------------------------------------------------------------------------------------


class TaskOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["tinyworld"]
    task: str = Field(description="one of the world's tasks")
    seed: int = Field(default=0, ge=0, description="the seed its splits are drawn from")

    @field_validator("task")
    @classmethod
    def _known_task(cls, task: str) -> str:
        if task not in tasks.TASKS:
            raise ValueError(f"unknown tinyworld task; known: {', '.join(tasks.TASKS)}")
        return task


@dataclass(frozen=True)
class WorldTasks:
    """The world's tasks as a dataset source: drawn, not read, with val splits of their own."""

    options: type[TaskOptions] = TaskOptions
    has_val: bool = True

    def label(self, options: TaskOptions) -> str:
        return options.task

    def classnames(self, options: TaskOptions) -> list[str]:
        return list(tasks.TASKS[options.task].classnames)

    def templates(self, options: TaskOptions) -> list[str]:
        return list(tasks.TASKS[options.task].templates)

    def load(self, options: TaskOptions, split: str, transform: Callable, classnames: list[str]) -> tasks.TaskSplit:
        return tasks.load_split(options.task, split, seed=options.seed, transform=transform)


dataset = WorldTasks()


# --- the concepts and real-image replay -------------------------------------------------------------------------


@dataclass(frozen=True)
class WorldConcepts:
    template: str = "a photo of {}."  # "a photo of a {}." would double the article the names carry

    def names(self) -> list[str]:
        return list(CONCEPT_NAMES)


concepts = WorldConcepts()


class WorldSets:
    """The sets the generator would be asked for, each prompt paired with a real world image of what it names.

    Image i is drawn from the "replay" stream at the index the generator would take as its seed (the request's
    seed + i), so no image repeats within a run and a rerun or a resume draws the same ones; a prompt outside the
    world's vocabulary is a UserError.
    """

    def __init__(self, requests: Mapping[str, Any], settings: Any) -> None:
        self.requests, self.settings = dict(requests), settings

    def ready(self, task: str) -> bool:
        return True  # drawn when asked for: about a millisecond an image

    def images(self, task: str) -> np.ndarray:
        """(size, H, W, 3) uint8 world images, in prompt order."""
        request, templates = self.requests[task], (self.settings.concept_template,)
        try:
            facts = [facts_of(prompt, templates) for prompt in request.prompts]
        except ValueError as error:
            raise UserError(f"synthetic set of task {task} (source tinyworld): {error}") from None
        seed, start = self.settings.seed, request.seed
        return np.stack([conditioned_pair(shown, start + i, seed=seed).image for i, shown in enumerate(facts)])

    def replaced(self, task: str) -> None:
        """World images are never redrawn: no safety checker looks at them."""

    def close(self) -> None:
        pass


replay = WorldSets


# --- the pre-training probe -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConceptProbe:
    """Held-out world images (their label is their index) and, per concept family, the value each image shows
    (an index into the family's concept names, -1 where it shows none): tasks.concept_probes' labels, with every
    image encoded once for all families."""

    images: tasks.TaskSplit
    labels: dict[str, np.ndarray]
    classnames: dict[str, list[str]]
    templates: tuple[str, ...] = CONCEPT_TEMPLATES


def probe(split: str, count: int, transform: Callable | None = None, seed: int = 0) -> ConceptProbe:
    """val: the held-out images concept_probes(count, seed) labels; test: as many others, further along."""
    if split == "val":
        pairs = tasks.heldout_pairs(count, seed)
    else:
        pairs = World(seed).pairs(PROBE_TEST_START, count, "heldout")
    labels, classnames = {}, {}
    for family, values in FAMILIES.items():
        shown = np.array([values.index(p.facts[family]) if p.facts.get(family) in values else -1 for p in pairs])
        if (shown >= 0).any():  # a small probe may lack a family; the default 2,000 images show every one
            labels[family] = shown
            classnames[family] = [c.name for c in CONCEPTS if c.family == family]
    images = np.stack([p.image for p in pairs])
    split_images = tasks.TaskSplit(f"world-{split}", images, np.arange(len(pairs)), (), CONCEPT_TEMPLATES, transform)
    return ConceptProbe(split_images, labels, classnames)
