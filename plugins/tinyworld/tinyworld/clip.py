"""The tiny CLIP: an open_clip architecture (tiny-clip.json) pre-trained contrastively on the world.

The architecture is a plain open_clip ViT registered from a JSON file, so the trainer loads it with the same
``create_model(config, pretrained)`` call as a real model. Its tokenizer is open_clip's algorithm with the world's
own merges (``world-bpe.txt.gz``, 837 tokens, tinyworld/vocabulary.py): every world word is one token, and any
other text still tokenizes, into pieces. Pre-training differs from CLIP's in one way: a caption is a positive for
every image it is true of (world captions name one or two facts, so a batch holds many images of "a red thing"),
not only for its own.

    python -m tinyworld.clip pretrain --out /tmp/tiny-clip.pt
    python -m tinyworld.clip evaluate --weights /tmp/tiny-clip.pt
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gift_common.files import atomic_file
from gift_common.schedules import warmup_cosine
from tinyworld.tasks import TASKS, TaskSplit, concept_probes, load_split
from tinyworld.vocabulary import BPE_FILE
from tinyworld.world import World, caption, captions_true_of, encode_facts, stream_rng

CONFIG = Path(__file__).with_name("tiny-clip.json")
MODEL_NAME = CONFIG.stem


def register() -> str:
    """Make the architecture known to open_clip (models and tokenizer) under MODEL_NAME."""
    if MODEL_NAME not in open_clip.list_models():
        open_clip.add_model_config(CONFIG)
    return MODEL_NAME


def create_model(pretrained: Path | None = None) -> nn.Module:
    """The tiny CLIP, randomly initialised from torch's current seed, or with the weights of a state-dict file."""
    return open_clip.create_model(register(), pretrained=None if pretrained is None else str(pretrained))


def tokenizer() -> Callable[..., Tensor]:
    """The world's own tokenizer (tinyworld/vocabulary.py), found beside the architecture."""
    return open_clip.get_tokenizer(register(), bpe_path=str(BPE_FILE))


def image_batch(model: nn.Module, images: np.ndarray) -> Tensor:
    """(n, 32, 32, 3) uint8 -> the model's input: what its evaluation transform makes of 32x32 images."""
    cfg = open_clip.get_model_preprocess_cfg(model)
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255
    return (pixels - mean) / std


def contrastive_loss(image_emb: Tensor, text_emb: Tensor, scale: Tensor, truth: Tensor) -> Tensor:
    """CLIP's symmetric cross-entropy with every true (image, caption) pair a positive, each side's targets uniform."""
    logits = scale * image_emb @ text_emb.T
    targets = truth.float()
    image_side = -(targets / targets.sum(1, keepdim=True) * F.log_softmax(logits, dim=1)).sum(1).mean()
    text_side = -(targets.T / targets.T.sum(1, keepdim=True) * F.log_softmax(logits.T, dim=1)).sum(1).mean()
    return (image_side + text_side) / 2


@dataclass(frozen=True)
class PretrainConfig:
    steps: int = 4000
    batch: int = 128
    captions: int = 2  # captions drawn per image: more supervision for the price of one image forward
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int = 150
    seed: int = 0  # model initialisation
    world_seed: int = 0  # which world pairs it sees


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only (not on gains, biases, embeddings of one vector, or the temperature)."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "positional" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "positional" not in n)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _world_batch(world: World, step: int, config: PretrainConfig, model: nn.Module, tokenize: Callable) -> tuple:
    """Images of one step, ``config.captions`` captions of each, and which caption is true of which image."""
    start = step * config.batch
    pairs = world.pairs(start, config.batch)
    rngs = [stream_rng(world.seed, "pretrain/captions", start + i) for i in range(config.batch)]
    captions = [
        caption(p.facts, p.kind, rng) for _ in range(config.captions) for p, rng in zip(pairs, rngs, strict=True)
    ]
    named = encode_facts([facts for _, facts in captions])
    truth = torch.from_numpy(captions_true_of(named, encode_facts([p.facts for p in pairs])))
    images = image_batch(model, np.stack([p.image for p in pairs]))
    return images, tokenize([text for text, _ in captions]), truth


def pretrain(config: PretrainConfig, log: Callable[[str], None] = print) -> nn.Module:
    """Contrastive pre-training on world pairs; the same config and thread count give the same weights."""
    torch.manual_seed(config.seed)
    model = create_model()
    model.train()
    tokenize = tokenizer()
    world = World(config.world_seed)
    optimizer = torch.optim.AdamW(
        _param_groups(model, config.weight_decay), lr=config.lr, betas=(0.9, 0.98), eps=1e-6, fused=True
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(config.warmup, config.steps))
    start = time.monotonic()
    for step in range(config.steps):
        images, tokens, truth = _world_batch(world, step, config, model, tokenize)
        image_emb, text_emb, scale = model(images, tokens)
        loss = contrastive_loss(image_emb, text_emb, scale, truth)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 50 == 0 or step == config.steps - 1:
            log(f"step {step} loss {loss.item():.3f} scale {scale.item():.1f} {time.monotonic() - start:.0f}s")
    return model.eval()


@torch.no_grad()
def zero_shot_accuracy(model: nn.Module, split: TaskSplit, batch: int = 500) -> float:
    """Top-1 accuracy of the nearest class prompt embedding (mean over the split's templates)."""
    model.eval()
    classifier = open_clip.build_zero_shot_classifier(
        model, tokenizer(), split.classnames, split.templates, num_classes_per_batch=None, use_tqdm=False
    )
    correct = 0
    for start in range(0, len(split), batch):
        features = model.encode_image(image_batch(model, split.images[start : start + batch]), normalize=True)
        predictions = (features @ classifier).argmax(dim=1).numpy()
        correct += int((predictions == split.labels[start : start + batch]).sum())
    return correct / len(split)


def evaluate(model: nn.Module, split: str = "val", seed: int = 0, tasks: Sequence[str] = tuple(TASKS)) -> dict:
    """Zero-shot accuracy on each task's split and on each concept family of held-out world pairs, with chance."""
    report: dict[str, dict[str, float]] = {}
    for name in tasks:
        task_split = load_split(name, split, seed)
        report[name] = {"accuracy": zero_shot_accuracy(model, task_split), "chance": 1 / len(task_split.classnames)}
    for family, probe in concept_probes(seed=seed).items():
        report[f"world/{family}"] = {"accuracy": zero_shot_accuracy(model, probe), "chance": 1 / len(probe.classnames)}
    return report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tinyworld.clip", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("pretrain", help="pre-train on the world and save a state dict")
    for field, default in asdict(PretrainConfig()).items():
        train.add_argument(f"--{field.replace('_', '-')}", type=type(default), default=default)
    train.add_argument("--out", type=Path, required=True)
    check = sub.add_parser("evaluate", help="zero-shot accuracy per task and per concept family")
    check.add_argument("--weights", type=Path, required=True)
    check.add_argument("--split", default="val", choices=("train", "val", "test"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.command == "pretrain":
        fields = {k: v for k, v in vars(args).items() if k in asdict(PretrainConfig())}
        model = pretrain(PretrainConfig(**fields), log=lambda line: print(line, flush=True))
        with atomic_file(args.out, durable=True) as file:
            torch.save(model.state_dict(), file)
    else:
        model = create_model(args.weights)
    print(json.dumps(evaluate(model, getattr(args, "split", "val")), indent=1), flush=True)


if __name__ == "__main__":
    main()
