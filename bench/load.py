"""A load run against one API and two workers, as figures (docs/operations.md): jobs, latency, 5xx.

Real processes: a private redis-server, the API and --workers workers on the tiny pipeline. --clients
concurrent clients, for --seconds, each submit a small job of their own (distinct prompts: no cache hits), poll
its status every --poll s until it ends, and submit the next; then every job still unfinished gets up to --drain s
to end. Latencies are of single HTTP requests as the client sees them, on a machine whose cores the clients, the
API, Redis and the workers share. The last line printed is one JSON object.
Run: .venv/bin/python bench/load.py --clients 32 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from tinyworld.pipeline import default_model_dir

from services.stack import LocalStack

TERMINAL = {"succeeded", "failed", "cancelled"}


@dataclass
class Load:
    submit_ms: list[float] = field(default_factory=list)
    status_ms: list[float] = field(default_factory=list)
    answers: Counter = field(default_factory=Counter)  # HTTP status -> count
    ends: Counter = field(default_factory=Counter)  # a job's last state -> count ("unfinished" after the drain)
    transport_errors: int = 0

    async def call(self, http: httpx.AsyncClient, method: str, url: str, timings: list[float], **kw) -> dict | None:
        started = time.perf_counter()
        try:
            response = await http.request(method, url, **kw)
        except httpx.TransportError:
            self.transport_errors += 1
            return None
        timings.append((time.perf_counter() - started) * 1000)
        self.answers[response.status_code] += 1
        return response.json() if response.status_code < 300 else None


async def client(n: int, http: httpx.AsyncClient, load: Load, args: argparse.Namespace, deadline: float) -> None:
    job_number = 0
    while time.monotonic() < deadline:
        prompts = [f"load client {n} job {job_number} image {i}" for i in range(args.images)]
        body = {"prompts": prompts, "num_inference_steps": args.steps}
        job = await load.call(http, "POST", "/v1/jobs", load.submit_ms, json=body)
        job_number += 1
        if job is None:
            await asyncio.sleep(args.poll)
            continue
        state = job["status"]
        drain_end = deadline + args.drain
        while state not in TERMINAL and time.monotonic() < drain_end:
            await asyncio.sleep(args.poll)
            status = await load.call(http, "GET", f"/v1/jobs/{job['id']}", load.status_ms, params={"images": "false"})
            state = status["status"] if status else state
        load.ends[state if state in TERMINAL else "unfinished"] += 1


def percentile(values: list[float], q: float) -> float:
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 1) if len(values) > 1 else 0.0


async def run(api: str, args: argparse.Namespace) -> Load:
    load = Load()
    deadline = time.monotonic() + args.seconds
    limits = httpx.Limits(max_connections=args.clients)
    async with httpx.AsyncClient(base_url=api, timeout=60, limits=limits) as http:
        await asyncio.gather(*(client(n, http, load, args, deadline) for n in range(args.clients)))
    return load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long clients submit new jobs")
    parser.add_argument("--drain", type=float, default=120.0, help="seconds unfinished jobs get after that")
    parser.add_argument("--images", type=int, default=2, help="images per job")
    parser.add_argument("--steps", type=int, default=2, help="denoising steps per image")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between a client's status polls")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="gift-load-"))
    default_model_dir(home)
    env = {"GIFT_HOME": str(home), "GIFT_TORCH_THREADS": "1"}
    with LocalStack(home / "stack", env=env) as stack:
        stack.start(workers=args.workers)
        load = asyncio.run(run(stack.api_url, args))
    answers = {str(status): n for status, n in sorted(load.answers.items())}
    print(json.dumps({
        "clients": args.clients, "seconds": args.seconds, "workers": args.workers, "images_per_job": args.images,
        "jobs_accepted": load.answers[202], "jobs_ended": dict(load.ends), "answers": answers,
        "5xx": sum(n for status, n in load.answers.items() if status >= 500), "transport_errors": load.transport_errors,
        "submit_ms": {"p50": percentile(load.submit_ms, 50), "p99": percentile(load.submit_ms, 99)},
        "status_ms": {"p50": percentile(load.status_ms, 50), "p99": percentile(load.status_ms, 99),
                      "requests": len(load.status_ms)},
    }))  # fmt: skip


if __name__ == "__main__":
    main()
