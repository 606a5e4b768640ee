"""Workers killed with SIGKILL at random moments while jobs run, as figures (docs/operations.md).

Real processes: a private redis-server, the API and --workers workers on the tiny pipeline. --kills times, at a
random moment, a random live worker is killed and a fresh one started in its place; then every job must end with
every image exactly once, and every image's bytes must match their SHA-256 and decode as a PNG.
The last line printed is one JSON object.
Run: .venv/bin/python bench/worker_kills.py --kills 6 --jobs 6 --images 64
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from tinyworld.pipeline import default_model_dir

from services.stack import LocalStack
from services.testing.fault_trials import as_json, worker_kill_trials

FAST = {"GIFT_CLAIM_TIMEOUT_SECONDS": "3", "GIFT_HEARTBEAT_SECONDS": "0.5", "GIFT_BATCH_SIZE": "4"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--images", type=int, default=16, help="images per job")
    parser.add_argument("--steps", type=int, default=10, help="denoising steps per image")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--bound", type=float, default=300.0, help="seconds the jobs may take after the last kill")
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="gift-worker-kills-"))
    default_model_dir(home)
    env = {**FAST, "GIFT_HOME": str(home), "GIFT_TORCH_THREADS": str(args.torch_threads)}
    with LocalStack(home / "stack", env=env) as stack:
        stack.start(workers=args.workers)
        figures = worker_kill_trials(
            stack, args.kills, jobs=args.jobs, images=args.images, steps=args.steps, bound=args.bound
        )
    print(json.dumps({"workers": args.workers, "steps": args.steps, **as_json(figures)}))


if __name__ == "__main__":
    main()
