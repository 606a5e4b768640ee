"""The tiny CLIP must load like any open_clip model, see what the evaluation transform shows, and train reproducibly."""

from __future__ import annotations

import math

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image
from tinyworld import clip
from tinyworld.world import World

from services.trainer.models import create_model, create_tokenizer


def test_the_architecture_loads_through_the_trainers_factory_with_the_world_s_tokenizer() -> None:
    model = create_model(clip.CONFIG)
    tokens = create_tokenizer(clip.CONFIG)(["a photo of a digit 7."])
    assert tokens.shape == (1, 24)
    assert torch.equal(tokens, clip.tokenizer()(["a photo of a digit 7."]))
    assert model.token_embedding.num_embeddings == clip.tokenizer().vocab_size == 837
    assert model.encode_text(tokens).shape == model.encode_image(torch.zeros(1, 3, 32, 32)).shape == (1, 128)


def test_image_batch_is_what_the_evaluation_transform_makes_of_world_images() -> None:
    model = clip.create_model()
    evaluation = image_transform_v2(PreprocessCfg(**open_clip.get_model_preprocess_cfg(model)), is_train=False)
    images = np.stack([pair.image for pair in World().pairs(0, 4)])
    expected = torch.stack([evaluation(Image.fromarray(image)) for image in images])
    assert torch.allclose(clip.image_batch(model, images), expected, atol=1e-6)


def test_contrastive_loss_is_clips_when_each_caption_fits_one_image_and_credits_every_true_caption() -> None:
    torch.manual_seed(0)
    images, texts = F.normalize(torch.randn(4, 8), dim=1), F.normalize(torch.randn(4, 8), dim=1)
    scale = torch.tensor(10.0)
    logits = scale * images @ texts.T
    clip_loss = (F.cross_entropy(logits, torch.arange(4)) + F.cross_entropy(logits.T, torch.arange(4))) / 2
    assert torch.allclose(clip.contrastive_loss(images, texts, scale, torch.eye(4, dtype=torch.bool)), clip_loss)
    # A fourth caption, a copy of caption 0, is true of image 0 too: image 0's target is half on each.
    basis, s = torch.eye(3), 10.0
    truth = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0]], dtype=torch.bool)
    loss = clip.contrastive_loss(basis, torch.cat([basis, basis[:1]]), torch.tensor(s), truth)
    image_side = (math.log(2 * math.exp(s) + 2) - s + 2 * (math.log(math.exp(s) + 3) - s)) / 3
    text_side = math.log(math.exp(s) + 2) - s
    assert math.isclose(loss.item(), (image_side + text_side) / 2, rel_tol=1e-5)


def test_pretraining_gives_the_same_weights_twice() -> None:
    config = clip.PretrainConfig(steps=1, batch=8, warmup=1)
    first = clip.pretrain(config, log=lambda _: None).state_dict()
    second = clip.pretrain(config, log=lambda _: None).state_dict()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert not torch.equal(first["visual.proj"], clip.create_model().state_dict()["visual.proj"])
