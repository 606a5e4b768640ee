"""Real replay images: every pool prompt names world facts, and its image is a world image showing them."""

from __future__ import annotations

import numpy as np
import pytest
from tinyworld.replay import conditioned_pair, facts_of, prompt_facts
from tinyworld.tasks import TASKS
from tinyworld.world import CONCEPT_NAMES, CONCEPT_TEMPLATES, CONCEPTS


def test_no_class_prompt_of_a_task_is_a_replay_prompt_of_the_world() -> None:
    """As MTIL's classes are to ImageNet's names: a task's class prompts are never concept prompts."""
    concept_prompts = {f"a photo of {name}." for name in CONCEPT_NAMES}
    for task in TASKS.values():
        assert not concept_prompts & {t.format(name) for name in task.classnames for t in task.templates}, task.name


@pytest.mark.parametrize(
    ("prompt", "facts"),
    [
        ("a photo of a red thing.", {"colour": "red"}),
        ("a photo of a circle.", {"shape": "circle"}),
        ("a photo of a house.", {"object": "house"}),
        ("a photo of a red house.", {"object": "house", "colour": "red"}),  # an objects class
        ("a photo of a striped texture.", {"pattern": "striped"}),  # a textures class
        ("a centered satellite photo of grass.", {"background": "grass"}),  # a scenes class
        ("a picture of a digit 7.", {"digit": "7"}),
        ('a photo of the number: "7".', {"digit": "7"}),  # a digits class
        ("a drawing of an outlined star.", {"shape": "star", "pattern": "outlined"}),  # a sketches class
        ('a photo of the letter "k".', {"letter": "k"}),  # a letters class
        ("two things.", {"count": "two"}),
        ("an image of a thing on the left.", {"position": "left"}),
    ],
)
def test_a_prompt_names_world_facts(prompt: str, facts: dict[str, str]) -> None:
    assert facts_of(prompt) == facts


def test_every_concept_in_every_template_and_every_class_in_its_templates_is_known() -> None:
    lookup = prompt_facts()
    assert all(template.format(name) in lookup for name in CONCEPT_NAMES for template in CONCEPT_TEMPLATES)
    assert all(t.format(name) in lookup for task in TASKS.values() for name in task.classnames for t in task.templates)


def test_an_unknown_prompt_is_a_clear_error_and_other_concept_templates_can_be_added() -> None:
    with pytest.raises(ValueError, match=r"'a photo of a cat\.' names no tiny-world fact"):
        facts_of("a photo of a cat.")
    assert facts_of("a blurry photo of a circle.", ("a blurry photo of {}.",)) == {"shape": "circle"}


@pytest.mark.parametrize("concept", CONCEPTS[::7], ids=lambda c: f"{c.family}={c.value}")
def test_the_image_is_a_world_image_showing_the_fact(concept) -> None:
    for index in range(3):
        pair = conditioned_pair({concept.family: concept.value}, index)
        assert pair.facts[concept.family] == concept.value and pair.caption == f"{concept.name}."
        assert pair.image.shape == (32, 32, 3) and pair.image.dtype == np.uint8
    again = conditioned_pair({concept.family: concept.value}, 2)
    assert np.array_equal(again.image, pair.image) and again.facts == pair.facts
    other = conditioned_pair({concept.family: concept.value}, 2, seed=1)
    assert not np.array_equal(other.image, pair.image)


def test_images_come_from_the_pre_training_distribution() -> None:
    """Conditioned on a common fact, the other facts vary as in the world: colours and kinds of thing all occur."""
    pairs = [conditioned_pair({"size": "small"}, index) for index in range(60)]
    assert len({pair.facts["colour"] for pair in pairs}) >= 8
    assert {"shape", "object", "digit", "letter"} <= {pair.kind for pair in pairs}


def test_a_fact_the_world_lacks_is_refused() -> None:
    with pytest.raises(ValueError, match="colour=teal is not a fact of the world"):
        conditioned_pair({"colour": "teal"}, 0)


def test_two_facts_at_once_are_both_shown() -> None:
    pair = conditioned_pair({"object": "boat", "colour": "yellow"}, 0)
    assert (pair.facts["object"], pair.facts["colour"], pair.caption) == ("boat", "yellow", "a yellow boat.")
