"""The text-to-image check: whole-scene captions that single out one image each, and the retrieval score on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tinyworld import sd_quality
from tinyworld.sd_quality import caption_retrieval, distinct_scenes
from tinyworld.tasks import heldout_pairs
from tinyworld.world import captions_true_of, encode_facts
from torch import nn


def test_each_whole_scene_caption_is_true_of_its_own_image_alone() -> None:
    pairs = heldout_pairs(600)
    scenes = distinct_scenes(pairs, 40)
    assert len(scenes) == 40 and all(p.caption_facts == p.facts for p in scenes)
    true = captions_true_of(encode_facts([p.caption_facts for p in scenes]), encode_facts([p.facts for p in scenes]))
    assert np.array_equal(true, np.eye(len(scenes), dtype=bool))


class Lookup(nn.Module):
    """A stand-in CLIP whose image and caption embeddings are rows of fixed tables."""

    def __init__(self, images: torch.Tensor, texts: torch.Tensor) -> None:
        super().__init__()
        self.images, self.texts = images, texts

    def encode_image(self, batch: torch.Tensor, normalize: bool) -> torch.Tensor:
        return self.images[: len(batch)]

    def encode_text(self, tokens: torch.Tensor, normalize: bool) -> torch.Tensor:
        return self.texts[: len(tokens)]


def test_retrieval_counts_an_image_when_its_own_caption_is_the_most_similar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sd_quality, "image_batch", lambda model, images: torch.from_numpy(images))
    captions = ["a circle.", "water.", "a red thing."]
    images = np.zeros((4, 32, 32, 3), np.uint8)
    texts = torch.eye(3)
    # images 0, 1 and 3 look like their captions 0, 1, 2; image 2 (caption 2) looks like caption 0
    model = Lookup(torch.stack([texts[0], texts[1], texts[0], texts[2]]), texts)
    owners = np.array([0, 1, 2, 2])
    assert caption_retrieval(model, images, captions, owners) == 0.75
    model.images = torch.stack([texts[1], texts[0], texts[0], texts[1]])  # no image like its own caption
    assert caption_retrieval(model, images, captions, owners) == 0.0
