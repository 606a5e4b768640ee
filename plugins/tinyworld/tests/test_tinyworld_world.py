"""The tiny world must be a pure function of its seed, say only true things about its images, and split cleanly."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from tinyworld.tasks import SPLIT_SIZES, SPLITS, TASKS, TaskSplit, concept_probes, load_split
from tinyworld.world import (
    CONCEPT_NAMES,
    CONCEPT_TEMPLATES,
    CONCEPTS,
    FAMILIES,
    Style,
    World,
    captions_true_of,
    encode_facts,
    render,
)

PLAIN = Style(rotation=0, shear=0, jitter=0, lowres=0, noise=0)


def digest(image: np.ndarray) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest()


@pytest.fixture(scope="module")
def pairs() -> list:
    return World(seed=0).pairs(0, 400)


@pytest.fixture(scope="module")
def splits() -> dict[str, dict[str, TaskSplit]]:
    """Every split of every task, cut to its first 100 items (an item of a split never depends on its length)."""
    return {name: {split: load_split(name, split, limit=100) for split in SPLITS} for name in TASKS}


def test_pairs_are_a_pure_function_of_seed_stream_and_index(pairs: list) -> None:
    again = World(seed=0).pair(17)
    assert digest(again.image) == digest(pairs[17].image) and again.caption == pairs[17].caption
    assert digest(World(seed=1).pair(17).image) != digest(pairs[17].image)
    assert digest(World(seed=0).pair(17, stream="heldout").image) != digest(pairs[17].image)
    assert pairs[17].image.shape == (32, 32, 3) and pairs[17].image.dtype == np.uint8


def test_vocabulary_has_over_a_hundred_distinct_concepts_with_templates() -> None:
    assert len(CONCEPTS) >= 100
    assert len(set(CONCEPT_NAMES)) == len(CONCEPT_NAMES)
    assert all("{}" in template for template in CONCEPT_TEMPLATES)


def test_captions_name_a_subset_of_what_the_image_shows_mostly_one_fact(pairs: list) -> None:
    for pair in pairs:
        assert pair.caption_facts.items() <= pair.facts.items()
        for family, value in pair.caption_facts.items():
            assert value in pair.caption, (family, value, pair.caption)
    single = sum(len(pair.caption_facts) == 1 for pair in pairs)
    assert single > len(pairs) / 3


def test_every_family_appears_and_glyphs_are_frequent(pairs: list) -> None:
    kinds = [pair.kind for pair in pairs]
    for family in ("shape", "object", "digit", "letter", "pattern", "background"):
        assert kinds.count(family) > 10, family
    glyph_sizes = [pair.facts.get("size") for pair in pairs if pair.kind in ("digit", "letter")]
    assert glyph_sizes.count("large") > len(glyph_sizes) / 2  # legible glyphs: mostly large


def test_a_caption_is_true_of_every_image_showing_its_facts(pairs: list) -> None:
    truth = captions_true_of(encode_facts([p.caption_facts for p in pairs]), encode_facts([p.facts for p in pairs]))
    assert truth.diagonal().all()
    red = encode_facts([{"colour": "red"}])
    shows_red = captions_true_of(red, encode_facts([p.facts for p in pairs]))[:, 0]
    assert shows_red.tolist() == [p.facts.get("colour") == "red" for p in pairs]


def thing(**facts: str) -> np.ndarray:
    base = {"shape": "square", "colour": "red", "background": "white", "pattern": "solid", "position": "middle"}
    return render({**base, **facts}, "shape", np.random.default_rng(0), PLAIN).astype(int)


def ink(image: np.ndarray) -> np.ndarray:
    """Where the image differs from its white background."""
    return np.abs(image - 245).sum(axis=2) > 120


def test_images_show_their_colour_size_position_and_count() -> None:
    assert np.abs(thing(size="large")[16, 16] - (215, 30, 30)).max() < 40
    assert np.abs(thing(colour="blue", size="large")[16, 16] - (30, 70, 215)).max() < 40
    assert ink(thing(size="large")).sum() > 3 * ink(thing(size="small")).sum()
    for position, axis, sign in (("left", 1, -1), ("right", 1, 1), ("top", 0, -1), ("bottom", 0, 1)):
        centre = np.argwhere(ink(thing(size="small", position=position)))[:, axis].mean()
        assert sign * (centre - 15.5) > 4, position
    three = ink(thing(count="three"))
    assert three.sum() > 2.5 * ink(thing()).sum() * (9 / 17) ** 2


@pytest.mark.parametrize("name", list(TASKS))
def test_task_splits_are_deterministic_disjoint_and_labelled(name: str, splits: dict) -> None:
    task = TASKS[name]
    again = load_split(name, "val", limit=100)
    assert np.array_equal(again.images, splits[name]["val"].images)
    assert np.array_equal(again.labels, splits[name]["val"].labels)
    seen: dict[str, str] = {}
    for split, data in splits[name].items():
        assert data.classnames == task.classnames and data.templates == task.templates
        assert set(np.unique(data.labels)) == set(range(len(task.classnames)))
        for image in data.images:
            assert seen.setdefault(digest(image), split) == split, f"{name}: an image is in two splits"
    image, label = splits[name]["test"][0]
    assert image.size == (32, 32) and image.mode == "RGB" and isinstance(label, int)


def test_a_synthetic_split_has_its_size_and_a_limit_keeps_its_first_items(splits: dict) -> None:
    full = load_split("sketches", "val")
    assert len(full) == SPLIT_SIZES["val"]
    assert np.array_equal(full.images[:100], splits["sketches"]["val"].images)


def test_the_digits_task_is_sklearns_handwritten_digits() -> None:
    from sklearn.datasets import load_digits

    digits = {split: load_split("digits", split) for split in SPLITS}
    assert sum(len(data) for data in digits.values()) == 1797
    assert len(digits["test"]) == SPLIT_SIZES["test"] and len(digits["val"]) == SPLIT_SIZES["val"]
    test = digits["test"]
    assert (test.images[..., 0] == test.images[..., 2]).all()  # grey, drawn white on black
    sklearn = load_digits()
    ours = test.images[..., 0].reshape(-1, 8, 4, 8, 4).mean(axis=(2, 4)).reshape(-1, 64) * 16 / 255
    distances = ((ours[:, None, :] - sklearn.data[None, :, :]) ** 2).sum(axis=2)
    nearest = distances.argmin(axis=1)
    assert (sklearn.target[nearest] == test.labels).all()
    assert (distances.min(axis=1) < 0.25 * np.median(distances, axis=1)).all()  # one original, up to the blur


def test_task_classes_are_named_in_the_pretraining_vocabulary() -> None:
    words = {word for pair in World(seed=0).pairs(0, 1000) for word in pair.caption.rstrip(".").split()}
    for name, task in TASKS.items():
        for classname in task.classnames:
            assert set(classname.split()) <= words, (name, classname)


def test_concept_probes_label_held_out_images_by_family() -> None:
    probes = concept_probes(count=300)
    assert set(probes) == set(FAMILIES)
    for family, probe in probes.items():
        assert len(probe) > 10 and probe.labels.max() < len(probe.classnames) == len(FAMILIES[family])
