"""What JSON logs and traces cost a submission, as figures: the latency of POST /v1/jobs against four API processes
sharing one Redis, one per setting (text logs, tracing off: the default; JSON logs, tracing off; JSON logs, tracing
on to an OTLP receiver in this process; the same with the collector down: a port where nothing listens), timed in
turns so that they share the machine's noise.

Real parts: a private redis-server, the API as processes. Jobs are for a model registered as served but never read
(services.testing.generator.IDLE_MODEL), so each submission runs the whole admission (its log line, its spans) and
no worker competes for the CPU. The last line printed is one JSON object.
Run: .venv/bin/python bench/observability_overhead.py --jobs 300 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import torch

from services.devices import describe
from services.stack import LocalStack, free_port
from services.testing.generator import IDLE_MODEL, register_idle_model
from services.testing.otlp import OtlpReceiver

SETTINGS = {
    "text, tracing off": {"GIFT_LOG_FORMAT": "text"},
    "json, tracing off": {"GIFT_LOG_FORMAT": "json"},
    "json, tracing on": {"GIFT_LOG_FORMAT": "json", "OTEL_BSP_SCHEDULE_DELAY": "200"},
    "json, tracing on, collector down": {"GIFT_LOG_FORMAT": "json", "OTEL_BSP_SCHEDULE_DELAY": "200"},
}


def _submit_seconds(client: httpx.Client, url: str, jobs: int) -> list[float]:
    body = {"prompts": ["a red circle"], "model": IDLE_MODEL, "num_inference_steps": 2}
    seconds = []
    for _ in range(jobs):
        started = time.perf_counter()
        answer = client.post(f"{url}/v1/jobs", json=body)
        seconds.append(time.perf_counter() - started)
        answer.raise_for_status()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=300, help="submissions per setting and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory, OtlpReceiver() as receiver:
        env = {"GIFT_MAX_QUEUED_JOBS_PER_TENANT": str(10 * args.jobs * args.rounds), "GIFT_HOME": directory}
        stack = LocalStack(Path(directory), env=env)
        assert stack.redis is not None
        stack.redis.start()
        apis = {}
        try:
            register_idle_model(stack.redis_url)
            collectors = {"tracing on": receiver.endpoint, "collector down": f"http://127.0.0.1:{free_port()}"}
            for index, (name, extra) in enumerate(SETTINGS.items()):
                where = [url for setting, url in collectors.items() if name.endswith(setting)]
                tracing = {"GIFT_OTLP_ENDPOINT": where[0]} if where else {}
                apis[name] = stack.start_another_api(f"api{index}", {**extra, **tracing})
            seconds: dict[str, list[float]] = {name: [] for name in SETTINGS}
            with httpx.Client(timeout=30) as client:
                for _, url in apis.values():
                    _submit_seconds(client, url, 20)  # warm-up: connections, registrations, first imports
                for _ in range(args.rounds):
                    for name, (_, url) in apis.items():
                        seconds[name] += _submit_seconds(client, url, args.jobs)
        finally:
            for process, _ in apis.values():
                process.stop()
            stack.redis.stop()
        spans = len(receiver.spans)
    base = statistics.median(seconds["text, tracing off"])
    result = {
        "machine": describe(torch.device("cpu")),
        "submissions_per_setting": args.jobs * args.rounds,
        "median_ms": {name: round(1000 * statistics.median(values), 3) for name, values in seconds.items()},
        "p90_ms": {name: round(1000 * statistics.quantiles(values, n=10)[-1], 3) for name, values in seconds.items()},
        "median_vs_default": {name: round(statistics.median(values) / base, 3) for name, values in seconds.items()},
        "spans_received": spans,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
