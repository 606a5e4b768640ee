"""Real replay images: every pool prompt names one world fact, and its image is a world image showing that fact."""

from __future__ import annotations

import numpy as np
import pytest
from tinyworld.replay import conditioned_pair, fact_of, prompt_facts, task_family
from tinyworld.tasks import TASKS
from tinyworld.world import CONCEPT_NAMES, CONCEPT_TEMPLATES, CONCEPTS


def test_each_task_is_one_world_family() -> None:
    families = {name: task_family(task) for name, task in TASKS.items()}
    assert families == {"objects": "object", "textures": "pattern", "digits": "digit", "scenes": "background",
                        "letters": "letter", "sketches": "shape"}  # fmt: skip


@pytest.mark.parametrize(
    ("prompt", "fact"),
    [
        ("a photo of a red thing.", ("colour", "red")),
        ("a photo of a circle.", ("shape", "circle")),
        ("a photo of a house.", ("object", "house")),  # an objects class and a concept alike
        ("a photo of a striped pattern.", ("pattern", "striped")),  # a textures class
        ("a photo of grass.", ("background", "grass")),  # a scenes class
        ("a picture of a digit 7.", ("digit", "7")),
        ("a drawing of a star.", ("shape", "star")),  # a sketches class
        ("a photo of a letter k.", ("letter", "k")),
        ("two things.", ("count", "two")),
        ("an image of a thing on the left.", ("position", "left")),
    ],
)
def test_a_prompt_names_one_fact(prompt: str, fact: tuple[str, str]) -> None:
    assert fact_of(prompt) == fact


def test_every_concept_in_every_template_and_every_class_in_its_templates_is_known() -> None:
    lookup = prompt_facts()
    assert all(template.format(name) in lookup for name in CONCEPT_NAMES for template in CONCEPT_TEMPLATES)
    assert all(t.format(name) in lookup for task in TASKS.values() for name in task.classnames for t in task.templates)


def test_an_unknown_prompt_is_a_clear_error_and_other_concept_templates_can_be_added() -> None:
    with pytest.raises(ValueError, match=r"'a photo of a cat\.' names no tiny-world fact"):
        fact_of("a photo of a cat.")
    assert fact_of("a blurry photo of a circle.", ("a blurry photo of {}.",)) == ("shape", "circle")


@pytest.mark.parametrize("concept", CONCEPTS[::7], ids=lambda c: f"{c.family}={c.value}")
def test_the_image_is_a_world_image_showing_the_fact(concept) -> None:
    for index in range(3):
        pair = conditioned_pair(concept.family, concept.value, index)
        assert pair.facts[concept.family] == concept.value
        assert pair.image.shape == (32, 32, 3) and pair.image.dtype == np.uint8
    again = conditioned_pair(concept.family, concept.value, 2)
    assert np.array_equal(again.image, pair.image) and again.facts == pair.facts
    other = conditioned_pair(concept.family, concept.value, 2, seed=1)
    assert not np.array_equal(other.image, pair.image)


def test_images_come_from_the_pre_training_distribution() -> None:
    """Conditioned on a common fact, the other facts vary as in the world: colours and kinds of thing all occur."""
    pairs = [conditioned_pair("size", "small", index) for index in range(60)]
    assert len({pair.facts["colour"] for pair in pairs}) >= 8
    assert {"shape", "object", "digit", "letter"} <= {pair.kind for pair in pairs}


def test_a_fact_the_world_lacks_is_refused() -> None:
    with pytest.raises(ValueError, match="colour=teal is not a fact of the world"):
        conditioned_pair("colour", "teal", 0)
