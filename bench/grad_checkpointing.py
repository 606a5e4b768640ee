"""What `training.grad_checkpointing` buys and costs: peak memory and seconds per GIFT iteration, off and on.

GIFT's task loss encodes every class prompt of the task with gradients, so the text tower's activations grow with
the class count: SUN397's 397 prompts of 77 tokens outweigh a batch of 64 images at 224 px. Each configuration runs
in a fresh process (its own peak). Prints both and their ratios; the last line is one JSON object.
Run: .venv/bin/python bench/grad_checkpointing.py [--architecture ViT-B-16-quickgelu --classes 397 --batch 2]
"""

from __future__ import annotations

import argparse
import json

from trainer_step import in_fresh_process  # bench/, the script's own folder

from services.trainer.models import TINY_TEST_ARCHITECTURE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", default=str(TINY_TEST_ARCHITECTURE), help="open_clip name or JSON file")
    parser.add_argument("--classes", type=int, default=397, help="classes of the task (SUN397 has the most)")
    parser.add_argument("--batch", type=int, default=8, help="task images per step (and as many replay pairs)")
    parser.add_argument("--iterations", type=int, default=3, help="timed steps per configuration")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    args = parser.parse_args()
    settings = {"architecture": args.architecture, "batch": args.batch, "replay_batch": args.batch,
                "classes": args.classes, "iterations": args.iterations, "warmup": 1, "device": args.device}  # fmt: skip
    runs = {}
    for checkpointing in (False, True):
        run = in_fresh_process(args.threads, method="gift", grad_checkpointing=checkpointing, **settings)
        runs["on" if checkpointing else "off"] = run
        print(f"grad checkpointing {'on ' if checkpointing else 'off'}: {run['s_per_it']:8.2f} s/iteration, "
              f"peak memory {run['peak_memory_bytes'] / 2**30:6.2f} GiB", flush=True)  # fmt: skip
    result = {
        "memory_on_over_off": runs["on"]["peak_memory_bytes"] / runs["off"]["peak_memory_bytes"],
        "time_on_over_off": runs["on"]["s_per_it"] / runs["off"]["s_per_it"],
        **{f"{name}_{key}": run[key] for name, run in runs.items() for key in ("s_per_it", "peak_memory_bytes")},
        **settings,
        "threads": args.threads,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
