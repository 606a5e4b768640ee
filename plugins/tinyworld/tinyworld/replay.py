"""Real pre-training images for replay: the upper reference that synthetic replay tries to reach (ZSCL's setting).

GIFT's synthetic set pairs each prompt of its pool with a generated image. Its real-data counterpart pairs the same
prompt with a world image, drawn from the pre-training distribution (the world's own style, not a task's look),
that shows the fact the prompt names: "a photo of a red thing." gets a world image whose facts include colour red,
the textures task's "a photo of a striped pattern." one whose pattern is striped. An image is drawn by rejection
from the world's own fact distribution, so it is exactly a pre-training image conditioned on that fact.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

from tinyworld.tasks import TASKS, TaskSpec
from tinyworld.world import CONCEPT_TEMPLATES, CONCEPTS, FAMILIES, WORLD_STYLE, Pair, render, sample_facts, stream_rng

Fact = tuple[str, str]  # (family, value), e.g. ("colour", "red")
MAX_DRAWS = 100_000  # the rarest fact (one letter) shows in about 1 of 120 world images


def task_family(task: TaskSpec) -> str:
    """The world family a task's classes are values of (objects -> object, textures -> pattern, ...)."""
    families = [family for family, values in FAMILIES.items() if set(task.values) <= set(values)]
    if len(families) != 1:
        raise ValueError(f"task {task.name}: its values belong to {len(families)} world families, not one")
    return families[0]


@cache
def prompt_facts(concept_templates: tuple[str, ...] = CONCEPT_TEMPLATES) -> dict[str, Fact]:
    """Every prompt GIFT's pool can hold in the tiny world, and the one fact it names.

    Concept names in ``concept_templates``, and each task's class names in each of its templates; a prompt that
    would name two different facts is a bug in the world's vocabulary, so it raises.
    """
    named: list[tuple[str, Fact]] = [
        (template.format(concept.name), (concept.family, concept.value))
        for concept in CONCEPTS
        for template in concept_templates
    ]
    for task in TASKS.values():
        family = task_family(task)
        named += [
            (template.format(name), (family, value))
            for name, value in zip(task.classnames, task.values, strict=True)
            for template in task.templates
        ]
    return _unambiguous(named)


def _unambiguous(named: Iterable[tuple[str, Fact]]) -> dict[str, Fact]:
    lookup: dict[str, Fact] = {}
    for prompt, fact in named:
        if lookup.setdefault(prompt, fact) != fact:
            raise ValueError(f"prompt {prompt!r} names both {lookup[prompt]} and {fact}")
    return lookup


def fact_of(prompt: str, concept_templates: tuple[str, ...] = CONCEPT_TEMPLATES) -> Fact:
    """The (family, value) a pool prompt names; a prompt outside the tiny world's vocabulary is a ValueError."""
    lookup = prompt_facts(tuple(dict.fromkeys((*CONCEPT_TEMPLATES, *concept_templates))))
    if prompt not in lookup:
        raise ValueError(
            f"prompt {prompt!r} names no tiny-world fact: real replay knows the world's concept names in the concept "
            "templates and the tasks' class names in their own templates"
        )
    return lookup[prompt]


def conditioned_pair(family: str, value: str, index: int, stream: str = "replay", seed: int = 0) -> Pair:
    """A world pair whose image shows ``family`` = ``value``: a pure function of (seed, stream, index)."""
    if value not in FAMILIES.get(family, ()):
        raise ValueError(f"{family}={value} is not a fact of the world")
    rng = stream_rng(seed, stream, index)
    for _ in range(MAX_DRAWS):
        facts, kind = sample_facts(rng, WORLD_STYLE)
        if facts.get(family) == value:
            image = render(facts, kind, rng, WORLD_STYLE)
            concept = next(c for c in CONCEPTS if (c.family, c.value) == (family, value))
            return Pair(image, f"{concept.name}.", facts, {family: value}, kind)
    raise RuntimeError(f"no world image showing {family}={value} in {MAX_DRAWS} draws")
