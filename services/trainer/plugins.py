"""What the trainer can be extended with: the shapes a plugin's objects must have.

A plugin registers objects under entry-point groups (gift_common.plugins.Registry), and a run config names them:

    gift.methods    a Method           `method.preset: NAME`, its settings changed by `method.overrides`
    gift.datasets   a DatasetSource    `tasks[i].dataset: {type: NAME, ...its options}`
    gift.concepts   a ConceptList      `synthetic.concepts: NAME`, the pre-training concepts of the synthetic prompts
    gift.replay     a ReplaySource     `synthetic.source: NAME`, where the replay pairs' images come from
    gift.probes     a ProbeSource      `evaluation.pretraining_probe: NAME`, what a model keeps of pre-training

The trainer's own kinds (the method presets, the MTIL datasets, ImageFolder, CSV, ImageNet's concepts, the
generator) are registered the same way, in sources.py and registries.py, which load no torch. A plugin implements
these protocols structurally; a method's terms alone come from the trainer (subclasses of methods.LossTerm, which
the engine runs), so adding a method is one module and one entry point.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from PIL import Image
from pydantic import BaseModel
from torch import Tensor
from torch.utils.data import Dataset

from services.trainer.methods import LossTerm

Split = Literal["train", "val", "test"]
Transform = Callable[[Image.Image], Tensor]


class Method(Protocol):
    """A named set of loss terms with its settings. ``defaults`` is a dataclass instance holding every setting (a
    config's `method.overrides` replace fields, checked against the field types); ``build_terms`` gets the
    settings so changed and returns the terms, the task loss included."""

    defaults: Any

    def build_terms(self, settings: Any) -> list[LossTerm]: ...


class DatasetSource(Protocol):
    """A kind of task data. ``options`` is the pydantic model of every key of `dataset:`, `type` included (a
    ``Literal`` of the registered name); errors it raises name the key and the rule."""

    options: type[BaseModel]
    has_val: bool  # False: the trainer takes a fixed `val_fraction` of train (an option of such sources)

    def label(self, options: Any) -> str:
        """The task's name when the config gives none."""

    def classnames(self, options: Any) -> list[str]:
        """In label order; a UserError when the data cannot say (e.g. a CSV)."""

    def templates(self, options: Any) -> list[str] | None:
        """The dataset's own prompt templates, or None for the default."""

    def load(self, options: Any, split: Split, transform: Transform, classnames: Sequence[str]) -> Dataset:
        """(image tensor, label) pairs over ``classnames`` (the task's, in label order); nothing is downloaded, and
        a missing file is a UserError naming the path."""


class ConceptList(Protocol):
    """Pre-training concepts, prompted with ``template`` unless the config names another."""

    template: str

    def names(self) -> list[str]: ...


class ReplaySets(Protocol):
    """The replay sets of a run's tasks; ``requests[task]`` says what each holds (prompts and seeds)."""

    requests: Mapping[str, Any]

    def ready(self, task: str) -> bool: ...

    def images(self, task: str) -> Sequence[Path] | np.ndarray:
        """PNG files, or (N, H, W, 3) uint8 images, in prompt order (waits while a set is being made)."""

    def replaced(self, task: str) -> int | None:
        """Images of the set a safety checker had drawn again (metrics.json); None where that does not apply."""

    def close(self) -> None: ...


class ReplaySource(Protocol):
    def __call__(self, requests: Mapping[str, Any], settings: Any) -> ReplaySets:
        """The sets for ``requests`` (task name -> JobRequest), under the run's `synthetic:` settings."""


class Probe(Protocol):
    """Held-out images (each item: image tensor, image index) and, per head, the class each image shows (an index
    into the head's class names, -1 where it shows none): zero-shot accuracy per head is what the model keeps."""

    images: Dataset
    labels: Mapping[str, np.ndarray]
    classnames: Mapping[str, list[str]]
    templates: Sequence[str]


class ProbeSource(Protocol):
    def __call__(self, split: str, count: int, transform: Transform) -> Probe: ...
