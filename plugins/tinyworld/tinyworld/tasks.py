"""The downstream tasks of the tiny world: MTIL in miniature, and probes of what pre-training taught.

Each task is a domain of its own (objects in clutter, textures, handwritten digits, scenes, handwritten letters,
sketches) with its own class names, prompt templates and deterministic train/val/test splits. Every class shows
facts of the pre-training world (one, or two at once) in another look, so a pre-trained model classifies it
zero-shot better than chance and fine-tuning has room to do better; and, as MTIL's classes are to ImageNet's names,
no class prompt is a replay prompt (the world's concept names in "a photo of {}."). One task is real data that
nobody here drew: scikit-learn's handwritten digits (UCI, 8x8 grey), shown at 32x32 like the rest.

A split is a plain torch Dataset of (PIL image, label) with ``classnames`` and ``templates``; the trainer adds the
model's transforms.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from PIL import Image

from tinyworld.textures import SIZE, TEXTURES
from tinyworld.world import CONCEPT_TEMPLATES, CONCEPTS, FAMILIES, Facts, Pair, Style, World, render, stream_rng

SPLITS = ("train", "val", "test")
SPLIT_SIZES = {"train": 2000, "val": 300, "test": 500}  # synthetic tasks; the digits' train split is the rest

Draw = Callable[[Facts, np.random.Generator], np.ndarray]


class TaskSplit(torch.utils.data.Dataset):
    """One split of a task: (PIL image, label) pairs over ``classnames``, prompted with ``templates``."""

    def __init__(
        self,
        name: str,
        images: np.ndarray,
        labels: np.ndarray,
        classnames: Sequence[str],
        templates: Sequence[str],
        transform: Callable | None = None,
    ) -> None:
        self.name = name
        self.images = images  # (n, 32, 32, 3) uint8
        self.labels = labels  # (n,) int64
        self.classnames = tuple(classnames)
        self.templates = tuple(templates)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[object, int]:
        image = Image.fromarray(self.images[index])
        return (self.transform(image) if self.transform else image), int(self.labels[index])


@dataclass(frozen=True)
class TaskSpec:
    """A task: the world facts each class shows, its class names and templates, and how a class is drawn."""

    name: str
    classes: tuple[Facts, ...]
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    draw: Draw | None  # None: real data


INKS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "brown", "black", "white", "gray")
PEN_INKS = ("black", "blue", "gray", "brown", "purple")
PAPERS = ("white", "yellow", "pink", "cyan")


def _pick(rng: np.random.Generator, items: Sequence[str]) -> str:
    return items[int(rng.integers(len(items)))]


def draw_thing(family: str, style: Style, inks: Sequence[str], papers: Sequence[str]) -> Draw:
    """Draw one figure of ``family`` showing a class's facts, in ``inks`` unless the class names its colour, on
    ``papers`` (plain colours), or on any scene if none are given."""

    def draw(facts: Facts, rng: np.random.Generator) -> np.ndarray:
        shown = {"colour": _pick(rng, inks), "background": _pick(rng, papers or FAMILIES["background"])}
        shown |= {"position": "middle", **facts}
        if rng.random() < 0.5:
            shown["size"] = "large"
        return render(shown, family, rng, style)

    return draw


def draw_full_frame(kind: str, style: Style) -> Draw:
    """Draw a full-frame pattern (kind "pattern", in any ink) or a bare scene (kind "background") of the class."""

    def draw(facts: Facts, rng: np.random.Generator) -> np.ndarray:
        shown = {"colour": _pick(rng, INKS), **facts} if kind == "pattern" else dict(facts)
        return render(shown, kind, rng, style)

    return draw


# Each task's look, shifted from the world's (tiny world's WORLD_STYLE) in its own way.
HANDWRITING = Style(rotation=15, shear=0.35, jitter=0.07, pen=(0.15, 0.35), lowres=0.3, noise=0.06)
SKETCH = Style(rotation=20, shear=0.3, jitter=0.06, lowres=0.2, noise=0.05)
CLUTTER = Style(rotation=20, clutter=3, zoom=1.2, tint=0.2, lowres=0.15, noise=0.05)
TEXTURE = Style(free_angle=True, warp=1.5, period=(4.0, 9.0), tint=0.3, lowres=0.0, noise=0.06)
SCENERY = Style(zoom=2.0, clutter=3, tint=0.25, grey=0.5, lowres=0.3, noise=0.05)

# Classes as MTIL's are to ImageNet's names: never a replay prompt. Objects and sketches name two facts at once, as
# Flowers' "pink primrose" or Cars' make and model; textures, digits, scenes and letters take the templates MTIL
# gives DTD, MNIST, EuroSAT and a letter task, around words the world knows.
OBJECTS, OBJECT_COLOURS = ("house", "tree", "car", "boat", "fish", "bird"), ("red", "blue", "yellow")


def _one(family: str) -> tuple[Facts, ...]:
    return tuple({family: value} for value in FAMILIES[family])


# The default task sequence, in order.
TASKS: dict[str, TaskSpec] = {
    task.name: task
    for task in (
        TaskSpec(
            "objects",
            tuple({"object": o, "colour": c} for o in OBJECTS for c in OBJECT_COLOURS),
            tuple(f"{c} {o}" for o in OBJECTS for c in OBJECT_COLOURS),
            ("a photo of a {}.", "a picture of a {}.", "a {}."),
            draw_thing("object", CLUTTER, INKS, ()),
        ),
        TaskSpec(
            "textures",
            tuple({"pattern": value} for value in TEXTURES),
            TEXTURES,
            ("a photo of a {} texture.", "a {} texture."),
            draw_full_frame("pattern", TEXTURE),
        ),
        TaskSpec("digits", _one("digit"), FAMILIES["digit"], ('a photo of the number: "{}".',), None),
        TaskSpec(
            "scenes",
            _one("background"),
            FAMILIES["background"],
            ("a centered satellite photo of {}.",),
            draw_full_frame("background", SCENERY),
        ),
        TaskSpec(
            "letters",
            _one("letter"),
            FAMILIES["letter"],
            ('a photo of the letter "{}".',),
            draw_thing("letter", HANDWRITING, PEN_INKS, PAPERS),
        ),
        TaskSpec(
            "sketches",
            tuple({"shape": value, "pattern": "outlined"} for value in FAMILIES["shape"]),
            tuple(f"outlined {value}" for value in FAMILIES["shape"]),
            ("a drawing of an {}.", "a sketch of an {}."),
            draw_thing("shape", SKETCH, PEN_INKS, ("white",)),
        ),
    )
}


def _synthetic(task: TaskSpec, split: str, seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Balanced classes (label = index mod classes); each image drawn from its own (seed, task/split, index)."""
    labels = np.arange(count) % len(task.classes)
    stream = f"{task.name}/{split}"
    images = [task.draw(task.classes[label], stream_rng(seed, stream, i)) for i, label in enumerate(labels)]
    return np.stack(images), labels.astype(np.int64)


@lru_cache(maxsize=1)
def _digits_32() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 handwritten digits: ink 0..16 on 8x8, upscaled bilinearly to 32x32 white-on-black RGB."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = (digits.images * (255 / 16)).round().astype(np.uint8)
    big = [np.asarray(Image.fromarray(g).resize((SIZE, SIZE), Image.BILINEAR)) for g in grey]
    return np.repeat(np.stack(big)[..., None], 3, axis=3), digits.target.astype(np.int64)


def _real_digits(split: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels = _digits_32()
    order = np.random.default_rng([seed, zlib.crc32(b"digits")]).permutation(len(labels))
    test, val = SPLIT_SIZES["test"], SPLIT_SIZES["val"]
    chosen = {"test": order[:test], "val": order[test : test + val], "train": order[test + val :]}[split]
    return images[chosen], labels[chosen]


def load_split(
    name: str, split: str, seed: int = 0, transform: Callable | None = None, limit: int | None = None
) -> TaskSplit:
    """One split of a task, the same for the same (name, split, seed); ``limit`` keeps its first items only."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: one of {SPLITS}")
    task = TASKS[name]
    if task.draw:
        images, labels = _synthetic(task, split, seed, min(SPLIT_SIZES[split], limit or SPLIT_SIZES[split]))
    else:
        images, labels = _real_digits(split, seed)
        images, labels = images[:limit], labels[:limit]
    return TaskSplit(name, images, labels, task.classnames, task.templates, transform)


def heldout_pairs(count: int, seed: int = 0) -> list[Pair]:
    """Pre-training pairs the model never trains on (the world's "heldout" stream)."""
    return World(seed).pairs(0, count, stream="heldout")


def concept_probes(count: int = 2000, seed: int = 0) -> dict[str, TaskSplit]:
    """Per concept family, held-out world images labelled with the family's value they show.

    Zero-shot accuracy on these, with the concept names and CONCEPT_TEMPLATES, measures what a model keeps of
    pre-training (the analogue of ImageNet accuracy in MTIL).
    """
    pairs = heldout_pairs(count, seed)
    probes = {}
    for family, values in FAMILIES.items():
        shown = [(p.image, values.index(p.facts[family])) for p in pairs if p.facts.get(family) in values]
        names = [c.name for c in CONCEPTS if c.family == family]
        images = np.stack([image for image, _ in shown])
        labels = np.array([label for _, label in shown], np.int64)
        probes[family] = TaskSplit(f"world-{family}", images, labels, names, CONCEPT_TEMPLATES)
    return probes
