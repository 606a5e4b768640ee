"""What LoRA adapters cost the generator, measured side by side in one run on the tiny pipeline.

(a) the service (a private Redis, the API, one worker) making jobs on the base model, four concurrent clients;
(b) the same jobs, each naming one of four adapters in turn (interleaved), so the worker switches between batches;
    (a) and (b) alternate over the rounds, each round with fresh prompts, so the image cache serves nothing;
(c) in the benchmark's own process, the tiny pipeline as the worker loads it: one adapter switch between two loaded
    adapters, one load, against one pipeline call of a batch;
(d) the worker's resident memory after jobs over 50 uploaded adapters with a cache of GIFT_ADAPTER_CACHE_COUNT, against
    its memory on the base model and against the bytes of the 50 files.

Targets (issue 26): b/a >= 0.9; a switch under one batch's time; the worker's growth bounded by its cache, not by
the adapters uploaded. The last line printed is one JSON object.
Run: .venv/bin/python bench/adapter_throughput.py (--help for the sizes)
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import torch
from diffusers import UNet2DConditionModel
from tinyworld.pipeline import default_model_dir

from gift_common.client import AsyncGeneratorClient
from gift_common.schemas import JobRequest
from services.devices import describe
from services.generator.worker.adapters import AdapterCache
from services.generator.worker.synthesis import generate, load_model
from services.stack import LocalStack
from services.testing.adapters import lora_file

CLIENTS, ADAPTERS = 4, 4


def job_requests(n_jobs: int, per_job: int, steps: int, tag: str, adapters: list[str | None]) -> list[JobRequest]:
    """``n_jobs`` jobs of fresh prompts, job i naming ``adapters[i % len(adapters)]``."""
    jobs = []
    for i in range(n_jobs):
        texts = [f"a red circle number {j} of job {i} ({tag})" for j in range(per_job)]
        jobs.append(JobRequest(prompts=texts, seed=i, num_inference_steps=steps, adapter=adapters[i % len(adapters)]))
    return jobs


async def service_seconds(url: str, jobs: list[JobRequest]) -> float:
    """Seconds for CLIENTS concurrent clients, each submitting its share of jobs one after another and waiting."""

    async def one_client(client: AsyncGeneratorClient, share: list[JobRequest]) -> None:
        for request in share:
            job = await client.submit(request)
            if not job.status.terminal:
                await client.wait(job.id, progress=False)

    clients = [AsyncGeneratorClient(url, retries=3) for _ in range(CLIENTS)]
    start = time.perf_counter()
    await asyncio.gather(*(one_client(client, jobs[i::CLIENTS]) for i, client in enumerate(clients)))
    seconds = time.perf_counter() - start
    for client in clients:
        await client.close()
    return seconds


def upload(url: str, data: bytes) -> str:
    answer = httpx.post(f"{url}/v1/adapters", content=data, timeout=60)
    answer.raise_for_status()
    adapter: str = answer.json()["id"]
    return adapter


def metrics(url: str) -> dict[str, float]:
    values = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        name, _, value = line.partition(" ")
        if name.startswith(("gift_adapter_", "gift_batch_seconds_", "gift_images_generated")):
            values[name] = float(value)
    return values


def switch_figures(model_dir: Path, files: list[bytes], batch: int, steps: int, repeats: int) -> dict[str, float]:
    """(c): medians of a switch between two loaded adapters, of a load, and of one pipeline call of ``batch``."""
    model = load_model("tinyworld", model_dir, torch.device("cpu"))
    by_id = {hashlib.sha256(data).hexdigest(): data for data in files}
    first, second = list(by_id)[:2]
    cache = AdapterCache(by_id.get, Path(tempfile.mkdtemp(prefix="gift-bench-stage-")), 8, 1 << 30)
    loads = [cache.activate(model, adapter, 1.0).seconds or 0.0 for adapter in (first, second)]
    switches = [cache.activate(model, (first, second)[i % 2], 1.0).seconds or 0.0 for i in range(repeats)]
    calls = []
    for i in range(repeats // 4 or 1):
        start = time.perf_counter()
        generate(model, prompts=[f"a blue square {i} {j}" for j in range(batch)], negative_prompts=[None] * batch,
                 seeds=list(range(batch)), num_inference_steps=steps, guidance_scale=7.5, height=model.height,
                 width=model.width)  # fmt: skip
        calls.append(time.perf_counter() - start)
    return {
        "switch_s": statistics.median(switches),
        "load_s": statistics.median(loads),
        "batch_call_s": statistics.median(calls),
    }


def rss_mb(process: psutil.Process) -> float:
    return process.memory_info().rss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="(a) and (b) alternate this many times each")
    parser.add_argument("--jobs", type=int, default=16, help="jobs per round, spread over the clients")
    parser.add_argument("--per-job", type=int, default=8, help="prompts per job")
    parser.add_argument("--batch-size", type=int, default=8, help="the worker's batch size, also (c)'s call")
    parser.add_argument("--steps", type=int, default=25, help="inference steps (the API's default)")
    parser.add_argument("--rank", type=int, default=8, help="rank of the four adapters of (b) and (c)")
    parser.add_argument("--many", type=int, default=50, help="adapters uploaded for (d)")
    parser.add_argument("--many-rank", type=int, default=128, help="their rank (larger files show memory better)")
    parser.add_argument("--cache-count", type=int, default=4, help="the worker's GIFT_ADAPTER_CACHE_COUNT")
    parser.add_argument("--torch-threads", type=int, default=1, help="for (c) and the worker")
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)

    home = Path(tempfile.mkdtemp(prefix="gift-bench-"))
    model_dir = default_model_dir(home)
    unet = UNet2DConditionModel.from_pretrained(model_dir / "unet")
    four = [lora_file(unet, rank=args.rank, seed=seed) for seed in range(ADAPTERS)]
    many = [lora_file(unet, rank=args.many_rank, seed=100 + seed) for seed in range(args.many)]
    print(f"tiny pipeline, torch threads {args.torch_threads}, {args.steps} steps, batch {args.batch_size}, "
          f"adapters of rank {args.rank} ({len(four[0])} bytes) and {args.many} of rank {args.many_rank} "
          f"({len(many[0])} bytes)")  # fmt: skip
    env = {
        "GIFT_HOME": str(home),
        "GIFT_BATCH_SIZE": str(args.batch_size),
        "GIFT_TORCH_THREADS": str(args.torch_threads),
        "GIFT_ADAPTER_CACHE_COUNT": str(args.cache_count),
    }
    seconds = {"a": 0.0, "b": 0.0}
    images = args.jobs * args.per_job
    with LocalStack(home / "stack", env=env) as stack:
        stack.start(workers=1)
        worker = psutil.Process(stack.workers[0].pid)
        ids = [upload(stack.api_url, data) for data in four]
        asyncio.run(service_seconds(stack.api_url, job_requests(ADAPTERS, 1, 2, "warm-up", [None, *ids])))
        for round_ in range(args.rounds):
            for run, adapters in (("a", [None]), ("b", ids)):
                jobs = job_requests(args.jobs, args.per_job, args.steps, f"{run}{round_}", adapters)
                seconds[run] += asyncio.run(service_seconds(stack.api_url, jobs))
            print(f"round {round_ + 1}: a {images * (round_ + 1) / seconds['a']:.1f}, "
                  f"b {images * (round_ + 1) / seconds['b']:.1f} images/s so far")  # fmt: skip
        served = metrics(stack.api_url)

        base_rss = rss_mb(worker)
        many_ids = [upload(stack.api_url, data) for data in many]
        peak_rss = base_rss
        for start in range(0, len(many_ids), CLIENTS):
            share = many_ids[start : start + CLIENTS]
            asyncio.run(service_seconds(stack.api_url, job_requests(len(share), 1, 2, f"d{start}", list(share))))
            peak_rss = max(peak_rss, rss_mb(worker))
        end_rss = rss_mb(worker)

    direct = switch_figures(model_dir, four, args.batch_size, args.steps, repeats=20)
    a, b = (args.rounds * images / seconds[k] for k in "ab")
    switches = served["gift_adapter_switch_seconds_count"]
    mean_switch = served["gift_adapter_switch_seconds_sum"] / switches
    mean_batch = served["gift_batch_seconds_sum"] / served["gift_batch_seconds_count"]
    cache_mb = args.cache_count * len(many[0]) / 2**20
    print(f"(a) base model:                  {a:8.2f} images/s")
    print(f"(b) 4 adapters, interleaved:     {b:8.2f} images/s  ({b / a:.3f} of (a))")
    print(f"    in the service: {switches:.0f} switches of {mean_switch * 1000:.1f} ms on average (loads included), "
          f"pipeline calls {mean_batch:.3f} s on average")  # fmt: skip
    print(f"(c) switch {direct['switch_s'] * 1000:.2f} ms, load {direct['load_s'] * 1000:.1f} ms, "
          f"one call of {args.batch_size} {direct['batch_call_s']:.3f} s")  # fmt: skip
    print(f"(d) worker RSS {base_rss:.0f} MiB on the base model, at most {peak_rss:.0f} MiB over {args.many} "
          f"adapters ({args.many * len(many[0]) / 2**20:.0f} MiB of files; the cache holds {args.cache_count}: "
          f"{cache_mb:.1f} MiB), {end_rss:.0f} MiB at the end")  # fmt: skip
    result = {
        "adapters_over_base": round(b / a, 3),
        "switch_over_batch": round(direct["switch_s"] / direct["batch_call_s"], 4),
        "load_over_batch": round(direct["load_s"] / direct["batch_call_s"], 4),
        "service_switch_over_batch": round(mean_switch / mean_batch, 4),
        "rss_growth_over_cache": round((peak_rss - base_rss) / cache_mb, 2),
        "rss_growth_over_all_files": round((peak_rss - base_rss) / (args.many * len(many[0]) / 2**20), 3),
        "base_images_per_s": round(a, 3),
        "adapter_images_per_s": round(b, 3),
        "switch_ms": round(direct["switch_s"] * 1000, 2),
        "load_ms": round(direct["load_s"] * 1000, 1),
        "batch_call_s": round(direct["batch_call_s"], 3),
        "service_switches": int(switches),
        "service_loads": int(served["gift_adapter_loads_total"]),
        "rss_base_mib": round(base_rss, 1),
        "rss_peak_mib": round(peak_rss, 1),
        "rss_end_mib": round(end_rss, 1),
        "many": args.many,
        "many_file_bytes": len(many[0]),
        "cache_count": args.cache_count,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "torch_threads": args.torch_threads,
        "machine": describe(torch.device("cpu")),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
