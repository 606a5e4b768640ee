"""Images per second of the generator, four ways, measured side by side in one run on the tiny pipeline.

(a) the pipeline called one prompt at a time in a loop (how the paper's authors generate);
(b) the pipeline called directly at the worker's batch size;
(c) the service: a private Redis, the API and one worker as separate processes, four concurrent clients each
    submitting jobs of 16 prompts and waiting for them;
(d) the same jobs resubmitted (ten times, as one pass takes a fraction of a second): every image comes from
    the content-addressed cache.
(e) for reference: downloading the images of (c) through GET /v1/images, one request per image.

Targets: c/b >= 0.95, c/a >= 4, d/c >= 100. The last line printed is one JSON object.
Run: make bench (or .venv/bin/python bench/generator_throughput.py --help for the sizes)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import httpx
import torch
from tinyworld.pipeline import default_model_dir

from gift_common.client import AsyncGeneratorClient
from gift_common.schemas import JobRequest
from services.devices import describe
from services.generator.worker.synthesis import generate, load_model
from services.stack import LocalStack

CLIENTS, PROMPTS_PER_JOB = 4, 16


def prompts(n: int, tag: str) -> list[str]:
    colours = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
    shapes = ["circle", "square", "triangle", "star", "ring", "cross", "heart", "hexagon"]
    return [f"a {colours[i % 8]} {shapes[(i // 8) % 8]} number {i} ({tag})" for i in range(n)]


def pipeline_seconds(model, batch: int, texts: list[str], steps: int) -> float:
    """Seconds to make ``texts`` calling the pipeline directly with ``batch`` prompts per call."""
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        chunk = texts[i : i + batch]
        generate(
            model, prompts=chunk, negative_prompts=[None] * len(chunk), seeds=list(range(i, i + len(chunk))),
            num_inference_steps=steps, guidance_scale=7.5, height=model.height, width=model.width,
        )  # fmt: skip
    return time.perf_counter() - start


async def service_seconds(url: str, jobs: list[JobRequest]) -> tuple[float, list]:
    """Seconds for CLIENTS concurrent clients, each submitting its share of jobs one after another and waiting."""
    finished: list = []

    async def one_client(client: AsyncGeneratorClient, share: list[JobRequest]) -> None:
        for request in share:
            job = await client.submit(request)
            if not job.status.terminal:
                job = await client.wait(job.id, progress=False)
            finished.append(job)

    clients = [AsyncGeneratorClient(url, retries=3) for _ in range(CLIENTS)]
    start = time.perf_counter()
    await asyncio.gather(*(one_client(client, jobs[i::CLIENTS]) for i, client in enumerate(clients)))
    seconds = time.perf_counter() - start
    for client in clients:
        await client.close()
    return seconds, finished


def worker_busy(url: str) -> dict[str, float]:
    """Totals from /metrics: pipeline seconds and images per call, to tell idle gaps from slow calls."""
    values = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("gift_batch_seconds_sum", "gift_batch_size_sum", "gift_batch_size_count"):
            values[name] = float(value)
    return values


async def download_rate(url: str, finished: list) -> float:
    shas = [image.sha256 for job in finished for image in job.images]
    start = time.perf_counter()
    async with AsyncGeneratorClient(url) as client:
        for i in range(0, len(shas), CLIENTS):
            await asyncio.gather(*(client.image(sha) for sha in shas[i : i + CLIENTS]))
    return len(shas) / (time.perf_counter() - start)


def job_requests(n_jobs: int, steps: int, tag: str) -> list[JobRequest]:
    texts = prompts(n_jobs * PROMPTS_PER_JOB, tag)
    return [
        JobRequest(prompts=texts[i * PROMPTS_PER_JOB : (i + 1) * PROMPTS_PER_JOB], seed=i, num_inference_steps=steps)
        for i in range(n_jobs)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="a, b and c alternate, to share the machine's noise")
    parser.add_argument("--images-a", type=int, default=16, help="images for (a) per round, one per call")
    parser.add_argument("--images-b", type=int, default=128, help="images for (b) per round")
    parser.add_argument("--jobs-per-client", type=int, default=2, help="jobs of 16 prompts per client per round")
    parser.add_argument("--batch-size", type=int, default=16, help="the worker's batch size, also used in (b)")
    parser.add_argument("--steps", type=int, default=25, help="inference steps (the API's default)")
    parser.add_argument("--cache-passes", type=int, default=10, help="times (d) resubmits the jobs of (c)")
    parser.add_argument("--torch-threads", type=int, default=0, help="for (a), (b) and the worker; 0: torch's default")
    args = parser.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    home = Path(tempfile.mkdtemp(prefix="gift-bench-"))
    model = load_model("tinyworld", default_model_dir(home), torch.device("cpu"))
    print(f"tiny pipeline, torch threads {torch.get_num_threads()}, {args.steps} steps, {args.rounds} rounds")
    pipeline_seconds(model, args.batch_size, prompts(args.batch_size, "warm-up"), args.steps)

    env = {
        "GIFT_HOME": str(home),
        "GIFT_BATCH_SIZE": str(args.batch_size),
        "GIFT_TORCH_THREADS": str(torch.get_num_threads()),
    }
    seconds = {"a": 0.0, "b": 0.0, "c": 0.0, "d": 0.0}
    images = {"a": 0, "b": 0, "c": 0}
    all_jobs, finished = [], []
    with LocalStack(home / "stack", env=env) as stack:
        stack.start(workers=1)
        for round_ in range(args.rounds):
            seconds["a"] += pipeline_seconds(model, 1, prompts(args.images_a, f"a{round_}"), args.steps)
            seconds["b"] += pipeline_seconds(model, args.batch_size, prompts(args.images_b, f"b{round_}"), args.steps)
            jobs = job_requests(CLIENTS * args.jobs_per_client, args.steps, f"c{round_}")
            took, done = asyncio.run(service_seconds(stack.api_url, jobs))
            seconds["c"] += took
            all_jobs += jobs
            finished += done
            images["a"] += args.images_a
            images["b"] += args.images_b
            images["c"] += sum(len(job.prompts) for job in jobs)
            rates = {k: images[k] / seconds[k] for k in "abc"}
            print(f"round {round_ + 1}: a {rates['a']:.1f}, b {rates['b']:.1f}, c {rates['c']:.1f} images/s so far")
        busy = worker_busy(stack.api_url)
        seconds["d"], cached = asyncio.run(service_seconds(stack.api_url, all_jobs * args.cache_passes))
        assert all(job.cached == job.total for job in cached), "resubmitted jobs must come from the cache"
        e = asyncio.run(download_rate(stack.api_url, finished[: CLIENTS * 4]))

    a, b, c = (images[k] / seconds[k] for k in "abc")
    d = images["c"] * args.cache_passes / seconds["d"]
    utilisation = busy["gift_batch_seconds_sum"] / seconds["c"]
    mean_batch = busy["gift_batch_size_sum"] / busy["gift_batch_size_count"]
    print(f"(a) one prompt per call:      {a:8.1f} images/s")
    print(f"(b) {args.batch_size} prompts per call:       {b:8.1f} images/s")
    print(f"(c) service, {CLIENTS} clients:        {c:8.1f} images/s "
          f"(worker in pipeline calls {utilisation:.1%} of the time, {mean_batch:.1f} images per call)")  # fmt: skip
    print(f"(d) service, resubmitted:     {d:8.1f} images/s")
    print(f"(e) downloads, GET per image: {e:8.1f} images/s")
    result = {
        "c_over_a": round(c / a, 3),
        "c_over_b": round(c / b, 3),
        "d_over_c": round(d / c, 1),
        "a_images_per_s": round(a, 2),
        "b_images_per_s": round(b, 2),
        "c_images_per_s": round(c, 2),
        "d_images_per_s": round(d, 1),
        "e_downloads_per_s": round(e, 1),
        "c_worker_utilisation": round(utilisation, 3),
        "c_mean_batch": round(mean_batch, 2),
        "batch_size": args.batch_size,
        "steps": args.steps,
        "torch_threads": torch.get_num_threads(),
        "service_images": images["c"],
        "machine": describe(torch.device("cpu")),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
