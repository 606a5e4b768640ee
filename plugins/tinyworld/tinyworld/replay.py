"""Real pre-training images for replay: the upper reference that synthetic replay tries to reach (ZSCL's setting).

GIFT's synthetic set pairs each prompt of its pool with a generated image. Its real-data counterpart pairs the same
prompt with a world image, drawn from the pre-training distribution (the world's own style, not a task's look),
that shows the facts the prompt names: "a photo of a red thing." gets a world image whose facts include colour red,
the objects task's "a photo of a red cat." one that shows a red cat. An image is drawn by rejection
from the world's own fact distribution, so it is exactly a pre-training image conditioned on those facts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache

from tinyworld.tasks import TASKS
from tinyworld.world import (
    CONCEPT_TEMPLATES,
    CONCEPTS,
    FAMILIES,
    FIGURES,
    WORLD_STYLE,
    Pair,
    phrase,
    render,
    sample_facts,
    stream_rng,
)

FactSet = tuple[tuple[str, str], ...]  # (family, value) pairs in order, e.g. (("colour", "red"), ("object", "cat"))
MAX_DRAWS = 100_000  # the rarest fact (one letter) shows in about 1 of 120 world images, a red cat in about 1 of 950


def _fact_set(facts: Mapping[str, str]) -> FactSet:
    return tuple(sorted(facts.items()))


@cache
def prompt_facts(concept_templates: tuple[str, ...] = CONCEPT_TEMPLATES) -> dict[str, FactSet]:
    """Every prompt GIFT's pool can hold in the tiny world, and the facts it names.

    Concept names in ``concept_templates``, and each task's class names in each of its templates; a prompt that
    would name two different sets of facts is a bug in the world's vocabulary, so it raises.
    """
    named: list[tuple[str, FactSet]] = [
        (template.format(concept.name), ((concept.family, concept.value),))
        for concept in CONCEPTS
        for template in concept_templates
    ]
    for task in TASKS.values():
        named += [
            (template.format(name), _fact_set(facts))
            for name, facts in zip(task.classnames, task.classes, strict=True)
            for template in task.templates
        ]
    return _unambiguous(named)


def _unambiguous(named: Iterable[tuple[str, FactSet]]) -> dict[str, FactSet]:
    lookup: dict[str, FactSet] = {}
    for prompt, facts in named:
        if lookup.setdefault(prompt, facts) != facts:
            raise ValueError(f"prompt {prompt!r} names both {lookup[prompt]} and {facts}")
    return lookup


def facts_of(prompt: str, concept_templates: tuple[str, ...] = CONCEPT_TEMPLATES) -> dict[str, str]:
    """The facts a pool prompt names; a prompt outside the tiny world's vocabulary is a ValueError."""
    lookup = prompt_facts(tuple(dict.fromkeys((*CONCEPT_TEMPLATES, *concept_templates))))
    if prompt not in lookup:
        raise ValueError(
            f"prompt {prompt!r} names no tiny-world fact: real replay knows the world's concept names in the concept "
            "templates and the tasks' class names in their own templates"
        )
    return dict(lookup[prompt])


def conditioned_pair(facts: Mapping[str, str], index: int, stream: str = "replay", seed: int = 0) -> Pair:
    """A world pair whose image shows every one of ``facts``: a pure function of (seed, stream, index)."""
    for family, value in facts.items():
        if value not in FAMILIES.get(family, ()):
            raise ValueError(f"{family}={value} is not a fact of the world")
    rng = stream_rng(seed, stream, index)
    for _ in range(MAX_DRAWS):
        shown, kind = sample_facts(rng, WORLD_STYLE)
        if all(shown.get(family) == value for family, value in facts.items()):
            image = render(shown, kind, rng, WORLD_STYLE)
            return Pair(image, f"{_name(facts)}.", shown, dict(facts), kind)
    raise RuntimeError(f"no world image showing {_fact_set(facts)} in {MAX_DRAWS} draws")


def _name(facts: Mapping[str, str]) -> str:
    """One fact: its concept's name; more: the noun phrase the world's captions use for them."""
    if len(facts) == 1:
        ((family, value),) = facts.items()
        return next(c.name for c in CONCEPTS if (c.family, c.value) == (family, value))
    return phrase(facts, next((family for family in FIGURES if family in facts), "thing"))
