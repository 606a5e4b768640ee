"""Listings among a million jobs, as figures: each page's time and memory beside the same page of a scope of a
thousand, measured in turns in the same Redis.

Real parts: a private redis-server and the API as a process. Jobs are admitted by the job model's own script
(ADMIT_JOB, through JobService's admission step, concurrently), so the index is the one a deployment keeps: tenant
``carol`` gets the first --small jobs, then ``alice`` and ``bob`` (nine to one) the rest up to --large in all; one
job in --queued-every stays queued, the others succeed at once (every image cached). Each listing is timed in
turns for the small scope and the large one, --repeats times each (medians), over HTTP and in-process
(JobListing.page, with its peak Python allocation): the newest page, a page half-way down (a cursor), the queued
jobs' newest page, and the admin's newest page of every tenant's jobs (against the admin's page of carol's). Redis's
memory for the index is read with MEMORY USAGE. Last, what the index costs a submission: jobs admitted per second with
and without ADMIT_JOB's index steps, in turns. The ratios large/small are what must stay near 1 (taking turns
cancels most of a shared machine's drift). The last line printed is one JSON object.
Run: .venv/bin/python bench/listings.py --large 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import redis
import redis.asyncio
import torch

from gift_common import redis_keys
from gift_common.schemas import JobRequest, JobState
from gift_common.settings import ApiSettings
from services.devices import describe
from services.generator import job_index, store
from services.generator.api.events import JobEvents
from services.generator.api.jobs import JobService
from services.generator.api.listings import JobListing
from services.stack import Process, RedisServer, free_port, wait_until

MODEL = "bench-model"
ADMIN_KEY = "admin-key"
KEYS = {"alice": "alice-key", "bob": "bob-key", "carol": "carol-key"}
SMALL, LARGE = "carol", "alice"


async def admit(jobs: JobService, tenant_of: Callable[[int], str], queued_every: int, start: int, count: int) -> None:
    """``count`` jobs through the admission step, 64 at a time; job n is queued when n % queued_every == 0."""
    request = JobRequest(prompts=["a red circle"], model=MODEL)
    sha = "0" * 64

    async def one(n: int) -> None:
        tenant, job_id = tenant_of(n), f"{n:032x}"
        fields = store.new_job_fields(job_id, tenant, request, store.now_iso())
        queued = n % queued_every == 0
        await jobs._create(job_id, tenant, request, fields, {} if queued else {0: sha}, [0] if queued else [], None)

    for first in range(start, start + count, 64):
        await asyncio.gather(*(one(n) for n in range(first, min(first + 64, start + count))))


async def middle_cursor(listing: JobListing, tenant: str) -> str:
    """The cursor of the job half-way down ``tenant``'s listing."""
    index = redis_keys.job_index(tenant, "all")
    half = await listing.redis.zcard(index) // 2
    ((job_id, score),) = await listing.redis.zrevrange(index, half, half, withscores=True)
    return f"{int(score)}-{job_id}"


async def peak_bytes(call: Callable[[], Awaitable[object]]) -> int:
    tracemalloc.start()
    await call()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


async def in_turns(repeats: int, calls: dict[str, Callable[[], Awaitable[object]]]) -> dict[str, float]:
    """Median milliseconds of each call, the calls taking turns so that the machine's drift falls on all alike."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            started = time.perf_counter()
            await call()
            times[name].append((time.perf_counter() - started) * 1000)
    return {name: round(statistics.median(values), 3) for name, values in times.items()}


async def measure(api: str, listing: JobListing, limit: int, repeats: int) -> dict[str, dict[str, float]]:
    """Each listing, small scope against large: HTTP and in-process median ms, in-process peak bytes, ratios."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    cursors = {tenant: await middle_cursor(listing, tenant) for tenant in (SMALL, LARGE)}
    cases = {  # name -> scope -> (tenant of the index, state, cursor, path, headers, params)
        "newest": {t: (t, None, None, "/v1/jobs", _key(t), {}) for t in (SMALL, LARGE)},
        "middle": {t: (t, None, cursors[t], "/v1/jobs", _key(t), {"cursor": cursors[t]}) for t in (SMALL, LARGE)},
        "queued": {t: (t, JobState.queued, None, "/v1/jobs", _key(t), {"status": "queued"}) for t in (SMALL, LARGE)},
        "admin": {
            SMALL: (SMALL, None, None, "/v1/admin/jobs", admin, {"tenant": SMALL}),
            LARGE: (None, None, None, "/v1/admin/jobs", admin, {}),
        },
    }
    figures = {}
    async with httpx.AsyncClient(base_url=api, timeout=60) as http:
        for name, scopes in cases.items():
            calls = {}
            for scope, (tenant, state, after, path, headers, params) in scopes.items():
                page = await listing.page(tenant, state, limit, after)
                assert len(page.jobs) == limit, (name, scope, len(page.jobs))

                async def over_http(path: str = path, headers: dict = headers, params: dict = params) -> None:
                    response = await http.get(path, headers=headers, params={"limit": limit, **params})
                    response.raise_for_status()

                async def in_process(tenant=tenant, state=state, after=after) -> None:  # type: ignore[no-untyped-def]
                    await listing.page(tenant, state, limit, after)

                calls[f"{scope}_http_ms"], calls[f"{scope}_page_ms"] = over_http, in_process
            row: dict[str, float] = await in_turns(repeats, calls)
            for scope in scopes:
                row[f"{scope}_peak_bytes"] = await peak_bytes(calls[f"{scope}_page_ms"])
            for kind in ("http_ms", "page_ms", "peak_bytes"):
                row[f"{kind}_ratio"] = round(row[f"{LARGE}_{kind}"] / row[f"{SMALL}_{kind}"], 2)
            figures[name] = row
            print(json.dumps({name: row}), file=sys.stderr, flush=True)
    return figures


def _key(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[tenant]}"}


async def admission_cost(jobs: JobService, batches: int, per_batch: int, first: int) -> dict[str, float]:
    """Jobs admitted per second with the index and with ADMIT_JOB's index steps made no-ops, in turns (tenant dave,
    on top of everything admitted before): what keeping the index costs a submission."""
    with_index = jobs._admit
    skipped = store.ADMIT_JOB.replace("index_add(11,", "index_skip(11,")
    without = jobs.redis.register_script("local function index_skip() end\n" + skipped)
    seconds = {"with_index": 0.0, "without_index": 0.0}
    n = first
    for _ in range(batches):
        for name, script in (("with_index", with_index), ("without_index", without)):
            jobs._admit = script
            started = time.perf_counter()
            await admit(jobs, lambda _: "dave", 10**9, n, per_batch)
            seconds[name] += time.perf_counter() - started
            n += per_batch
    jobs._admit = with_index
    rates = {name: round(batches * per_batch / spent) for name, spent in seconds.items()}
    return {**rates, "ratio": round(rates["with_index"] / rates["without_index"], 2)}


def index_bytes(sync: redis.Redis, tenant: str | None) -> int:
    return sum(sync.memory_usage(redis_keys.job_index(tenant, part), samples=0) or 0 for part in job_index.PARTS)


async def run(args: argparse.Namespace, url: str, api: str) -> dict:
    settings = ApiSettings(redis_url=url, max_queued_jobs_per_tenant=10**9, job_ttl_seconds=30 * 24 * 3600)
    connection = redis.asyncio.Redis.from_url(url, decode_responses=True)
    jobs = JobService(connection, redis.asyncio.Redis.from_url(url), settings, JobEvents())
    sync = redis.Redis.from_url(url, decode_responses=True)
    others = [LARGE] * 9 + ["bob"]
    started = time.perf_counter()
    await admit(jobs, lambda n: SMALL if n < args.small else others[n % 10], args.queued_every, 0, args.large)
    admit_seconds = time.perf_counter() - started
    deployment = await connection.zcard(redis_keys.job_index(None, "all"))
    return {
        "jobs": deployment,
        "jobs_of": {t: await connection.zcard(redis_keys.job_index(t, "all")) for t in (SMALL, LARGE, "bob")},
        "admitted_per_second": round(args.large / admit_seconds),
        "redis_used_bytes": sync.info("memory")["used_memory"],
        "index_bytes_per_job": round((sum(index_bytes(sync, t) for t in KEYS) + index_bytes(sync, None)) / deployment),
        "listings": await measure(api, JobListing(connection), args.limit, args.repeats),
        "admission_per_second": await admission_cost(jobs, 10, 1000, args.large),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=1000, help="jobs of the small scope (tenant carol)")
    parser.add_argument("--large", type=int, default=1_000_000, help="jobs in all")
    parser.add_argument("--limit", type=int, default=50, help="jobs per page")
    parser.add_argument("--repeats", type=int, default=50, help="timed runs of each listing")
    parser.add_argument("--queued-every", type=int, default=20, help="one job in this many stays queued")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis", appendfsync="no").start()
        port = free_port()
        env = {"GIFT_REDIS_URL": server.url, "GIFT_API_KEYS": ",".join(f"{t}:{k}" for t, k in KEYS.items()),
               "GIFT_ADMIN_KEYS": f"ops:{ADMIN_KEY}"}  # fmt: skip
        cli = [sys.executable, "-m", "services.cli", "generator", "serve", "--port", str(port)]
        api = Process("api", cli, Path(tmp) / "api.log", env)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: httpx.get(f"{url}/healthz").status_code == 200, 60, "API", api.popen, api.log)
            figures = asyncio.run(run(args, server.url, url))
        finally:
            api.stop()
            server.stop()
    print(json.dumps({"machine": describe(torch.device("cpu")), "limit": args.limit, **figures}))


if __name__ == "__main__":
    main()
