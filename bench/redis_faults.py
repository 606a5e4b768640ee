"""The generator under Redis faults, as figures: Redis killed and restarted, Redis full, a burst against a quota.

(a) Redis killed with SIGKILL at a random moment (up to --max-delay s) after each 202, restarted from its
    append-only file on the same directory: jobs accepted, complete (every image once), lost, stuck (not done
    within --bound s), and the slowest time from the kill to a job's end.
(b) Redis at its maxmemory (1 byte, noeviction) for --full-seconds s while jobs run: HTTP answers by kind (never a
    500) and each 503's message (the API's admission mark, or Redis itself), then the same outcomes for every job
    accepted, after the limit is lifted.
(c) --threads clients bursting submissions of one tenant against a limit of --limit unfinished jobs: accepted
    (at most the limit), refused (429, each with Retry-After), other answers.
(d) (run before (c)) Redis's used memory midway between the admission mark (--admit-fraction of maxmemory) and
    maxmemory for --full-seconds s: answers by kind, used memory's share of maxmemory, the newest heartbeat's
    age, INFO reads by the API, and whether a job accepted before ended with every image under that limit.

Real processes: a private redis-server (append-only, --appendfsync as docker-compose.yml: always), the API and
one worker on the tiny pipeline. The last line printed is one JSON object.
Run: .venv/bin/python bench/redis_faults.py --trials 50
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from tinyworld.pipeline import default_model_dir

from services.stack import LocalStack
from services.testing.fault_trials import as_json, headroom_trial, maxmemory_trial, quota_burst, redis_kill_trials

FAST = {"GIFT_CLAIM_TIMEOUT_SECONDS": "3", "GIFT_HEARTBEAT_SECONDS": "0.5", "GIFT_BATCH_SIZE": "8"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="Redis kills in (a)")
    parser.add_argument("--images", type=int, default=8, help="images per job")
    parser.add_argument("--max-delay", type=float, default=0.03, help="latest kill after a 202, seconds")
    parser.add_argument("--bound", type=float, default=60.0, help="seconds a job may take after a fault")
    parser.add_argument("--full-seconds", type=float, default=4.0, help="how long Redis stays full in (b) and (d)")
    parser.add_argument("--appendfsync", choices=["always", "everysec"], default="always", help="as docker-compose")
    parser.add_argument("--limit", type=int, default=8, help="the tenant's unfinished jobs limit in (c)")
    parser.add_argument("--threads", type=int, default=16, help="concurrent clients in (c)")
    parser.add_argument("--admit-fraction", type=float, default=0.9, help="GIFT_REDIS_ADMIT_FRACTION, below 1")
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="gift-redis-faults-"))
    default_model_dir(home)
    env = {**FAST, "GIFT_HOME": str(home), "GIFT_TORCH_THREADS": str(args.torch_threads),
           "GIFT_MAX_QUEUED_JOBS_PER_TENANT": str(args.limit),
           "GIFT_REDIS_ADMIT_FRACTION": str(args.admit_fraction)}  # fmt: skip
    result: dict = {"appendfsync": args.appendfsync}
    with LocalStack(home / "stack", env=env, appendfsync=args.appendfsync) as stack:
        stack.start(workers=1)
        kills = redis_kill_trials(stack, args.trials, images=args.images, max_delay=args.max_delay, bound=args.bound)
        result["redis_kill"] = as_json(kills)
        print("redis kill:", result["redis_kill"], flush=True)
        result["redis_full"] = as_json(
            maxmemory_trial(stack, images=args.images, full_seconds=args.full_seconds, bound=args.bound)
        )
        print("redis full:", result["redis_full"], flush=True)
        # before (c): Redis frees the burst's client buffers over seconds, which would move used memory off the mark
        result["headroom"] = as_json(
            headroom_trial(stack, args.admit_fraction, images=args.images, seconds=args.full_seconds, bound=args.bound)
        )
        print("headroom:", result["headroom"], flush=True)
        result["quota_burst"] = as_json(quota_burst(stack, args.limit, threads=args.threads))
        print("quota burst:", result["quota_burst"], flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
