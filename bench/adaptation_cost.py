"""What an adaptation job's training costs on the tiny pipeline, in the benchmark's own process, as a worker runs it
(worker/training.py): seconds for 1, 20 and 200 steps (the 1-step run is mostly the archive's encoding and the
adapter's saving), the adapter's and a checkpoint's bytes. The last line printed is one JSON object.
Run: .venv/bin/python bench/adaptation_cost.py [--rank 4] [--images 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from services.generator.adaptations import Adaptation
from services.generator.worker.synthesis import load_model
from services.generator.worker.training import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from tinyworld.pipeline import default_model_dir

    with tempfile.TemporaryDirectory() as home:
        model = load_model("tinyworld", default_model_dir(Path(home)), torch.device("cpu"))
        pairs = [(Image.new("RGB", (32, 32), (30 * n % 256, 90, 200 - 20 * n % 200)), f"a colour numbered {n}")
                 for n in range(args.images)]  # fmt: skip
        result: dict[str, object] = {"rank": args.rank, "images": args.images, "threads": args.threads}
        for steps in (1, 20, 200):
            job = Adaptation("ad-" + "0" * 32, "bench", "tinyworld", steps, args.rank, 1e-4, 0, False, None)
            saved: dict[int, bytes] = {}
            started = time.perf_counter()
            data = train(model, pairs, job, resume=None, every=50, report=lambda step: True, save=saved.__setitem__)
            seconds = time.perf_counter() - started
            assert data is not None
            print(f"{steps} steps: {seconds:.2f} s, adapter {len(data)} bytes")
            result[f"seconds_{steps}_steps"] = round(seconds, 3)
            result["adapter_bytes"] = len(data)
            if saved:
                result["checkpoint_bytes"] = len(saved[max(saved)])
        steps_seconds = (result["seconds_200_steps"] - result["seconds_1_steps"]) / 199  # type: ignore[operator]
        result["seconds_per_step"] = round(steps_seconds, 4)
        print(json.dumps(result))


if __name__ == "__main__":
    main()
