"""synthetic.filter: the rule's config, each pair's confidence for its own prompt among the pool's, the pairs kept,
and the teacher's pass stored once per set and teacher (a stub CLIP whose embeddings are known by construction)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from gift_common.errors import UserError
from services.trainer import filtering
from services.trainer.config import FilterConfig, parse_config
from services.trainer.context import CachedTeacher
from services.trainer.precision import FP32
from services.trainer.streams import in_order
from services.trainer.synthetic import SyntheticPairs

SCALE = 10.0
HOW = filtering.Pass(torch.device("cpu"), FP32, batch_size=3)


class StubClip(nn.Module):
    """Images are 2×2 pictures whose red channel is their embedding; prompt k (token row [k + 1, 0]) embeds as the
    k-th axis. Counts the images it encodes."""

    def __init__(self) -> None:
        super().__init__()
        self.image = nn.Linear(4, 4, bias=False)
        nn.init.eye_(self.image.weight)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(SCALE)))
        self.encoded = 0

    def encode_image(self, images: Tensor) -> Tensor:
        self.encoded += len(images)
        return self.image(images)

    def encode_text(self, tokens: Tensor) -> Tensor:
        return F.one_hot(tokens[:, 0] - 1, 4).float()


def red(image: Image.Image) -> Tensor:
    return torch.tensor(np.asarray(image)[..., 0].reshape(-1), dtype=torch.float32)


def prompt(k: int) -> list[int]:
    return [k + 1, 0]


POOL = torch.tensor([prompt(k) for k in range(4)])
OWN = [k % 4 for k in range(8)]  # pair i's prompt


def vectors() -> np.ndarray:
    """Pairs 0-3 show their own prompt; pairs 4-7 mostly the next prompt, a little of their own."""
    rows = np.zeros((8, 4))
    for i, own in enumerate(OWN):
        rows[i, own] = 200 if i < 4 else 60
        rows[i, (own + 1) % 4] = 20 if i < 4 else 200
    return rows


def make_pairs(rows: np.ndarray | None = None) -> SyntheticPairs:
    rows = vectors() if rows is None else rows
    images = np.zeros((len(rows), 2, 2, 3), dtype=np.uint8)
    images[..., 0] = rows.reshape(-1, 2, 2)
    return SyntheticPairs(images, torch.tensor([prompt(k) for k in OWN]), red)


def expected_confidence(rows: np.ndarray) -> np.ndarray:
    """exp(s·cos(x, own)) / Σ_k exp(s·cos(x, k)), the prompts being the four axes."""
    cos = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    weights = np.exp(SCALE * cos)
    return weights[np.arange(len(rows)), OWN] / weights.sum(axis=1)


def test_a_filter_takes_one_rule() -> None:
    assert FilterConfig(keep=0.5).count(16) == 8 and FilterConfig(keep=0.3).count(10) == 3
    assert FilterConfig(keep=0.01).count(16) == 1 and FilterConfig(threshold=0.2).count(16) is None
    base = {"output_dir": "out", "model": {"architecture": "ViT-B-16"}, "training": {"batch_size": 8},
            "tasks": [{"dataset": {"type": "imagefolder", "root": "data"}}]}  # fmt: skip
    assert parse_config(base, Path()).synthetic.filter is None  # off unless asked for
    for rule, message in (
        ({"keep": 0.5, "threshold": 0.3}, "synthetic.filter: give keep .* or threshold .*, not both"),
        ({}, "synthetic.filter: give keep .* or threshold .*, one of them"),
        ({"keep": 0}, r"synthetic.filter.keep: input should be greater than 0 \(got 0\)"),
        ({"threshold": 1}, r"synthetic.filter.threshold: input should be less than 1 \(got 1\)"),
        ({"keep": 0.001}, r"synthetic.filter.keep keeps 1 of the 1000 pairs .* replay batch of tasks\[0\] \(8\)"),
    ):
        with pytest.raises(UserError, match=message):
            parse_config({**base, "synthetic": {"filter": rule}}, Path())


def test_the_rule_keeps_the_most_confident_share_or_those_above_the_threshold() -> None:
    confidence = torch.tensor([0.2, 0.9, 0.5, 0.9, 0.1, 0.6])
    assert filtering.selected(confidence, FilterConfig(keep=0.5)).tolist() == [1, 3, 5]
    assert filtering.selected(confidence, FilterConfig(keep=0.34)).tolist() == [1, 3]
    assert filtering.selected(torch.tensor([0.5, 0.7, 0.5, 0.5]), FilterConfig(keep=0.5)).tolist() == [0, 1]  # tie
    assert filtering.selected(confidence, FilterConfig(threshold=0.5)).tolist() == [1, 2, 3, 5]
    assert filtering.selected(confidence, FilterConfig(threshold=0.95)).tolist() == []


def test_prompts_the_tokenizer_cannot_tell_apart_are_one_prompt_of_the_pool() -> None:
    pool = torch.tensor([[3, 0], [1, 0], [3, 0], [2, 0]])  # two pool prompts with the same tokens
    prompts, own = filtering.prompt_rows(pool, torch.tensor([[2, 0], [3, 0], [3, 0]]))
    assert prompts.tolist() == [[1, 0], [2, 0], [3, 0]] and own.tolist() == [1, 2, 2]
    with pytest.raises(ValueError, match="not in the prompt pool"):
        filtering.prompt_rows(pool, torch.tensor([[4, 0]]))


def test_confidence_is_the_own_prompts_softmax_probability_among_the_pools(tmp_path: Path) -> None:
    teacher, pairs = StubClip(), make_pairs()
    choice = filtering.choose(teacher, pairs, POOL, FilterConfig(keep=0.5), filtering.TeacherStore(tmp_path), "k", HOW)
    expected = expected_confidence(vectors())
    assert choice.confidence.numpy() == pytest.approx(expected, rel=1e-5)
    assert choice.kept.tolist() == [0, 1, 2, 3]  # the pairs that show their own prompt
    assert expected[:4].min() > 0.99 and expected[4:].max() < 0.01
    summary = choice.summary()
    assert summary == {"kept": 4, "confidence": pytest.approx(expected.mean(), rel=1e-5),
                       "kept_confidence": pytest.approx(expected[:4].mean(), rel=1e-5)}  # fmt: skip
    assert teacher.encoded == 8  # one pass over the set: the engine's cached teacher takes the kept pairs from it
    whole = CachedTeacher.compute(teacher, in_order(pairs, 8), "cpu")
    assert torch.equal(choice.teacher.images, whole.images[:4]) and torch.equal(choice.teacher.texts, whole.texts[:4])
    threshold = filtering.selected(choice.confidence, FilterConfig(threshold=0.5))
    assert threshold.tolist() == [0, 1, 2, 3]


def test_the_pass_is_stored_once_per_set_and_teacher(tmp_path: Path) -> None:
    store, pairs, teacher = filtering.TeacherStore(tmp_path), make_pairs(), StubClip()
    key = filtering.pass_key(teacher, pairs, POOL, "stub", "fp32")
    first = filtering.choose(teacher, pairs, POOL, FilterConfig(keep=0.5), store, key, HOW)
    assert store.path(key).is_file() and store.path(key).parent == tmp_path / "teacher"
    again = StubClip()
    again.encode_image = None  # a second pass would fail
    stored = filtering.choose(again, pairs, POOL, FilterConfig(threshold=0.001), store, key, HOW)
    assert torch.equal(stored.confidence, first.confidence) and stored.kept.tolist() == list(range(8))
    assert torch.equal(stored.teacher.images[:4], first.teacher.images)

    store.path(key).write_bytes(b"half a file")  # not a whole pass: made again
    assert torch.equal(filtering.choose(teacher, pairs, POOL, FilterConfig(keep=0.5), store, key, HOW).kept, first.kept)
    assert store.load(key, 8) is not None and store.load(key, 9) is None  # a pass of another set's size is none


def test_the_key_changes_with_the_teacher_the_images_the_prompts_and_the_pool() -> None:
    teacher, pairs = StubClip(), make_pairs()
    key = filtering.pass_key(teacher, pairs, POOL, "stub", "fp32")
    assert key == filtering.pass_key(StubClip(), make_pairs(), POOL.clone(), "stub", "fp32")
    trained = StubClip()
    with torch.no_grad():
        trained.image.weight[0, 1] = 1e-3
    other_images = vectors()
    other_images[5, 0] += 1
    others = [
        filtering.pass_key(trained, pairs, POOL, "stub", "fp32"),
        filtering.pass_key(teacher, make_pairs(other_images), POOL, "stub", "fp32"),
        filtering.pass_key(teacher, pairs.subset(range(7)), POOL, "stub", "fp32"),
        filtering.pass_key(teacher, pairs, POOL[:3], "stub", "fp32"),
        filtering.pass_key(teacher, pairs, POOL, "stub", "bf16"),
    ]
    assert len({key, *others}) == 6


def test_files_as_images_are_keyed_by_their_bytes(tmp_path: Path) -> None:
    paths = []
    for i, row in enumerate(vectors()):
        path = tmp_path / f"{i}.png"
        pixels = np.zeros((2, 2, 3), dtype=np.uint8)
        pixels[..., 0] = row.reshape(2, 2)
        Image.fromarray(pixels).save(path)
        paths.append(path)
    pairs = SyntheticPairs(paths, torch.tensor([prompt(k) for k in OWN]), red)
    key = filtering.pass_key(StubClip(), pairs, POOL, "stub")
    Image.new("RGB", (2, 2)).save(paths[3])
    assert filtering.pass_key(StubClip(), pairs, POOL, "stub") != key
    store = filtering.TeacherStore(tmp_path)
    choice = filtering.choose(StubClip(), pairs, POOL, FilterConfig(keep=0.5), store, key, HOW)
    assert choice.confidence[3].item() == pytest.approx(0.25)  # pair 3 is black now: every prompt alike


def test_kept_pairs_are_renumbered_in_set_order() -> None:
    pairs = make_pairs()
    kept = pairs.subset([2, 5, 7])
    assert len(kept) == 3 and [kept[i][2] for i in range(3)] == [0, 1, 2]
    assert torch.equal(kept[1][0], pairs[5][0]) and torch.equal(kept[2][1], pairs[7][1])
