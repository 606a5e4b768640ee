"""The cost of the authors' sampling against the faster one: PNDM at 50 steps and DPM-Solver++ (2M) at 25.

On the SD v1.5 stand-in (services/testing/standins.py, written under --standins if missing), loaded as the worker
loads it, each setting draws the same prompts and seeds, one image per pipeline call as the authors draw, the two
settings alternating image by image so that they share the machine's noise. Prints seconds per image of each, the
ratio, the UNet evaluations per image of each (the work itself, whatever the machine's load), and how far the two
pictures of one seed lie apart (mean absolute difference in levels of 255). Random
weights: the ratio is the real one (the same networks run the same number of steps), but no stand-in can say which
setting draws better pictures; that takes the real weights and the trained model's accuracy.

    .venv/bin/python bench/scheduler_cost.py --standins /tmp/standins --size 256 --images 3
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gift_common.stand_in import NOTICE
from services.devices import describe
from services.generator.worker.synthesis import LoadedModel, generate, load_model
from services.testing.standins import SD15_NAME, write_standins

SETTINGS = {"authors": ("directory", 50), "fast": ("dpmsolver++", 25)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--standins", type=Path, required=True, help="folder of the stand-ins (written if missing)")
    parser.add_argument("--size", type=int, default=512, help="image height and width (SD v1.5: 512)")
    parser.add_argument("--images", type=int, default=2, help="images per setting")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    directory = write_standins(args.standins)[SD15_NAME]
    device = torch.device(args.device)
    model = load_model("sd15", directory, device)
    seconds: dict[str, list[float]] = {name: [] for name in SETTINGS}
    pictures: dict[str, list[np.ndarray]] = {name: [] for name in SETTINGS}
    evaluations = {name: 0 for name in SETTINGS}
    unet, calls = model.pipeline.unet, [0]
    unet.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    for seed in range(args.images):
        for name, (scheduler, steps) in SETTINGS.items():
            started, before = time.perf_counter(), calls[0]
            drawn = model_draw(model, scheduler, steps, seed, args.size)
            seconds[name].append(time.perf_counter() - started)
            evaluations[name] = calls[0] - before  # the same for every image of a setting
            pictures[name].append(drawn)
    per_image = {name: sum(values) / len(values) for name, values in seconds.items()}
    apart = [np.abs(a - b).mean() for a, b in zip(pictures["authors"], pictures["fast"], strict=True)]
    print(json.dumps({
        "notice": NOTICE,
        "device": describe(device),
        "size": args.size,
        "images_per_setting": args.images,
        "seconds_per_image": {f"{name} ({s}, {n} steps)": round(v, 2)
                              for (name, (s, n)), v in zip(SETTINGS.items(), per_image.values(), strict=True)},
        "cost_ratio_authors_over_fast": round(per_image["authors"] / per_image["fast"], 3),
        "unet_evaluations_per_image": evaluations,  # each a batch of 2 (classifier-free guidance)
        "mean_abs_difference_levels": round(float(np.mean(apart)), 2),
    }))  # fmt: skip


def model_draw(model: LoadedModel, scheduler: str, steps: int, seed: int, size: int) -> np.ndarray:
    drawn = generate(model, prompts=["a photo of a tench."], negative_prompts=[None], seeds=[seed],
                     num_inference_steps=steps, guidance_scale=7.5, height=size, width=size,
                     scheduler=scheduler)  # fmt: skip
    return np.asarray(Image.open(io.BytesIO(drawn.pngs[0])), dtype=np.float64)


if __name__ == "__main__":
    main()
