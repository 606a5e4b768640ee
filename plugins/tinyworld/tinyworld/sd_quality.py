"""Does the tiny text-to-image model draw what it is asked? The tiny CLIP's zero-shot verdict on its images.

Every concept of the world is drawn from prompts naming only that concept (the world's concept templates), along
the generator worker's path: ``DiffusionPipeline.from_pretrained``, a CPU generator per image, 25 DPM-Solver steps,
guidance 7.5. The tiny CLIP classifies each image among all concepts and among its family's. Beside it, the same
classifier on real held-out world images whose caption names one concept: what the judge can see at best.

Top-1 among all concepts is bounded by the judge: an image asked to show "red" also shows a shape, a background, a
size, any of which the judge may name first. So the report also asks for whole scenes: held-out captions that name
everything their image shows, no two true of the same image, each drawn twice; an image counts when the judge finds
its own caption the most similar of them all (chance: one in the number of captions), with real images of the
same captions beside it.

    python -m tinyworld.sd_quality --model DIR --clip WEIGHTS --out DIR
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn
from tqdm import tqdm

from tinyworld.clip import create_model, image_batch, tokenizer
from tinyworld.tasks import heldout_pairs
from tinyworld.world import (
    CONCEPT_NAMES,
    CONCEPT_TEMPLATES,
    CONCEPTS,
    FAMILIES,
    Pair,
    captions_true_of,
    encode_facts,
)

STEPS, GUIDANCE = 25, 7.5  # the generator worker's defaults
SCENES, DRAWS_PER_SCENE = 100, 2  # the whole-scene check: captions (chance 1%), images drawn from each


def load_pipeline(directory: Path) -> object:
    from diffusers import DiffusionPipeline

    pipeline = DiffusionPipeline.from_pretrained(directory, local_files_only=True, dtype=torch.float32)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def concept_prompts(per_concept: int) -> tuple[list[str], np.ndarray]:
    """``per_concept`` prompts for each concept, cycling through the templates, and the concept index of each."""
    prompts = [
        CONCEPT_TEMPLATES[k % len(CONCEPT_TEMPLATES)].format(name) for name in CONCEPT_NAMES for k in range(per_concept)
    ]
    return prompts, np.repeat(np.arange(len(CONCEPTS)), per_concept)


@torch.no_grad()
def generate(
    pipeline: object, prompts: Sequence[str], seeds: Sequence[int], batch: int = 64, steps: int = STEPS
) -> np.ndarray:
    """(n, 32, 32, 3) uint8 images, each from its own prompt and seed, rounded as the worker rounds."""
    images = []
    for start in tqdm(range(0, len(prompts), batch), desc="generate", unit="batch", mininterval=10):
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds[start : start + batch]]
        out = pipeline(
            list(prompts[start : start + batch]),
            generator=generators,
            num_inference_steps=steps,
            guidance_scale=GUIDANCE,
            output_type="np",
        ).images
        images.append((np.clip(out, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(images)


@torch.no_grad()
def concept_logits(model: nn.Module, images: np.ndarray, batch: int = 500) -> np.ndarray:
    """(n, concepts) similarity of each image to each concept's prompt embedding (mean over the templates)."""
    model.eval()
    classifier = open_clip.build_zero_shot_classifier(
        model, tokenizer(), CONCEPT_NAMES, CONCEPT_TEMPLATES, num_classes_per_batch=None, use_tqdm=False
    )
    features = [
        model.encode_image(image_batch(model, images[start : start + batch]), normalize=True)
        for start in range(0, len(images), batch)
    ]
    return (torch.cat(features) @ classifier).numpy()


def family_accuracy(logits: np.ndarray, labels: np.ndarray) -> dict[str, dict[str, float]]:
    """Per family of the asked concept: top-1 among all concepts, and among the family's own, with chance."""
    families = np.array([concept.family for concept in CONCEPTS])
    report = {}
    for family in FAMILIES:
        rows = families[labels] == family
        if not rows.any():
            continue
        members = np.flatnonzero(families == family)
        within = members[logits[rows][:, members].argmax(1)]
        report[family] = {
            "all": float((logits[rows].argmax(1) == labels[rows]).mean()),
            "within": float((within == labels[rows]).mean()),
            "chance_all": 1 / len(CONCEPTS),
            "chance_within": 1 / len(members),
            "images": int(rows.sum()),
        }
    report["mean"] = {key: float(np.mean([r[key] for r in report.values()])) for key in ("all", "within")}
    return report


def single_concept_pairs(pairs: Sequence[Pair]) -> tuple[np.ndarray, np.ndarray]:
    """The images of ``pairs`` whose caption names exactly one concept, labelled with it."""
    index = {(concept.family, concept.value): i for i, concept in enumerate(CONCEPTS)}
    chosen = [
        (p.image, index[next(iter(p.caption_facts.items()))])
        for p in pairs
        if len(p.caption_facts) == 1 and next(iter(p.caption_facts.items())) in index
    ]
    return np.stack([image for image, _ in chosen]), np.array([label for _, label in chosen])


def distinct_scenes(pairs: Sequence[Pair], count: int) -> list[Pair]:
    """Up to ``count`` pairs whose caption names every fact of the image, no caption true of another's image."""
    full = [p for p in pairs if p.caption_facts == p.facts]
    true = captions_true_of(encode_facts([p.caption_facts for p in full]), encode_facts([p.facts for p in full]))
    chosen: list[int] = []
    for i in range(len(full)):
        if len(chosen) == count:
            break
        if not (true[i, chosen].any() or true[chosen, i].any()):
            chosen.append(i)
    return [full[i] for i in chosen]


@torch.no_grad()
def caption_retrieval(model: nn.Module, images: np.ndarray, captions: Sequence[str], owners: np.ndarray) -> float:
    """How often an image's most similar caption is its own (``owners[i]`` indexes image i's caption)."""
    model.eval()
    image_features = model.encode_image(image_batch(model, images), normalize=True)
    text_features = model.encode_text(tokenizer()(list(captions)), normalize=True)
    return float(((image_features @ text_features.T).argmax(1).numpy() == owners).mean())


def scene_report(pipeline: object, clip: nn.Module, pairs: Sequence[Pair], steps: int = STEPS) -> dict[str, float]:
    """The whole-scene check on generated images and on the real images of ``pairs`` it picks."""
    scenes = distinct_scenes(pairs, SCENES)
    captions = [p.caption for p in scenes]
    owners = np.repeat(np.arange(len(scenes)), DRAWS_PER_SCENE)
    images = generate(pipeline, [captions[i] for i in owners], list(range(len(owners))), steps=steps)
    real = np.stack([p.image for p in scenes])
    return {
        "generated": caption_retrieval(clip, images, captions, owners),
        "real": caption_retrieval(clip, real, captions, np.arange(len(scenes))),
        "captions": len(scenes),
        "chance": 1 / len(scenes),
    }


def family_grid(images: np.ndarray, names: Sequence[str], columns: int = 10, zoom: int = 3) -> Image.Image:
    """One enlarged image per concept with its name under it."""
    side, label = 32 * zoom, 14
    cell_w = max(side, 6 * max(len(n) for n in names) + 8)
    rows = -(-len(names) // columns)
    grid = Image.new("RGB", (cell_w * min(columns, len(names)), rows * (side + label)), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default(size=10)
    for i, (image, name) in enumerate(zip(images, names, strict=True)):
        x, y = (i % columns) * cell_w, (i // columns) * (side + label)
        grid.paste(Image.fromarray(image).resize((side, side), Image.NEAREST), (x + (cell_w - side) // 2, y))
        draw.text((x + cell_w / 2, y + side + 1), name, fill="black", font=font, anchor="mt")
    return grid


def write_grids(pipeline: object, out: Path, seed: int = 0, steps: int = STEPS) -> list[Path]:
    """A PNG per concept family: each concept drawn once from "a photo of <concept>."."""
    paths = []
    for family in FAMILIES:
        names = [c.name for c in CONCEPTS if c.family == family]
        images = generate(pipeline, [f"a photo of {name}." for name in names], [seed] * len(names), steps=steps)
        paths.append(out / f"grid-{family}.png")
        family_grid(images, names).save(paths[-1])
    return paths


def write_report(model: Path, clip_weights: Path, out: Path, per_concept: int = 10, steps: int = STEPS) -> dict:
    """quality.json and one grid per family in ``out``; returns the report."""
    out.mkdir(parents=True, exist_ok=True)
    pipeline = load_pipeline(model)
    clip = create_model(clip_weights)
    prompts, labels = concept_prompts(per_concept)
    images = generate(pipeline, prompts, list(range(len(prompts))), steps=steps)
    heldout = heldout_pairs(4000)
    real_images, real_labels = single_concept_pairs(heldout)
    report = {
        "generated": family_accuracy(concept_logits(clip, images), labels),
        "real": family_accuracy(concept_logits(clip, real_images), real_labels),
        "scenes": scene_report(pipeline, clip, heldout, steps),
        "grids": [path.name for path in write_grids(pipeline, out, steps=steps)],
    }
    (out / "quality.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tinyworld.sd_quality", description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a saved pipeline directory")
    parser.add_argument("--clip", type=Path, required=True, help="the tiny CLIP's state dict")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-concept", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=STEPS, help="DPM-Solver steps per image")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(json.dumps(write_report(args.model, args.clip, args.out, args.per_concept, args.steps), indent=1))


if __name__ == "__main__":
    main()
