"""Fault trials against a running local stack: Redis or workers killed, Redis full, a burst against a quota.

Each trial drives real processes (services/stack.py) the way an operator's incident would, and returns figures
that the integration tests assert on and that ``bench/redis_faults.py`` prints (docs/operations.md).
"""

from __future__ import annotations

import io
import os
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import httpx
import redis
from PIL import Image

from gift_common import redis_keys
from gift_common.client import (
    GeneratorClient,
    GeneratorHTTPError,
    IntegrityError,
    JobCancelled,
    JobFailed,
    JobTimeout,
)
from gift_common.schemas import JobRequest
from services.generator.api.admission import READ_EVERY_SECONDS
from services.stack import LocalStack
from services.testing.generator import IDLE_MODEL, register_idle_model


@dataclass
class Outcomes:
    """What became of accepted jobs: each ends in exactly one of these."""

    accepted: int = 0
    complete: int = 0  # succeeded with every image exactly once
    wrong_images: int = 0  # succeeded with an image missing or twice
    lost: int = 0  # gone (404) or failed
    stuck: int = 0  # not finished within the bound
    slowest_seconds: float = 0.0  # from the fault to the job's end

    def settle(self, client: GeneratorClient, job_id: str, images: int, since: float, bound: float) -> None:
        """Wait for one accepted job until ``bound`` s after ``since`` (the fault) and count its outcome."""
        self.accepted += 1
        try:
            job = client.wait(job_id, timeout=max(0.0, since + bound - time.monotonic()), progress=False)
        except JobTimeout:
            self.stuck += 1
            return
        except (GeneratorHTTPError, JobFailed, JobCancelled):
            self.lost += 1
            return
        self.slowest_seconds = max(self.slowest_seconds, round(time.monotonic() - since, 2))
        counts = Counter(image.index for image in job.images)
        whole = sorted(counts) == list(range(images)) and set(counts.values()) == {1}
        self.complete += whole
        self.wrong_images += not whole

    def all_complete(self) -> bool:
        return self.accepted > 0 and self.complete == self.accepted


def redis_kill_trials(
    stack: LocalStack, trials: int, *, images: int = 8, max_delay: float = 0.03, bound: float = 60.0, seed: int = 0
) -> Outcomes:
    """Per trial: submit a job, SIGKILL Redis at a random moment up to ``max_delay`` s after the 202, restart it
    on the same append-only file, and wait up to ``bound`` s for the job to end with every image once."""
    assert stack.redis is not None, "the trials kill the stack's own redis-server"
    rng = random.Random(seed)
    outcomes = Outcomes()
    with GeneratorClient(stack.api_url, retries=30, backoff=0.2) as client:
        for trial in range(trials):
            prompts = [f"redis kill trial {seed}.{trial} image {i}" for i in range(images)]
            job = client.submit(JobRequest(prompts=prompts, num_inference_steps=2))
            time.sleep(rng.uniform(0, max_delay))
            stack.redis.process.kill()  # type: ignore[union-attr]
            killed = time.monotonic()
            stack.redis.start()
            outcomes.settle(client, job.id, images, killed, bound)
    return outcomes


@dataclass
class WorkerKills:
    """Workers killed with SIGKILL while jobs ran, and what became of the jobs and their image bytes."""

    kills: int = 0
    outcomes: Outcomes = field(default_factory=Outcomes)
    images_checked: int = 0
    images_corrupt: int = 0  # bytes that do not match their SHA-256 or do not decode as a PNG


def worker_kill_trials(
    stack: LocalStack,
    kills: int,
    *,
    jobs: int = 6,
    images: int = 16,
    steps: int = 10,
    bound: float = 300.0,
    seed: int = 0,
) -> WorkerKills:
    """Submit ``jobs`` jobs, then ``kills`` times SIGKILL a random live worker at a random moment while they run
    and start a fresh one in its place; every job must end with every image once, each image's bytes intact."""
    rng = random.Random(seed)
    figures = WorkerKills()
    with GeneratorClient(stack.api_url, retries=30, backoff=0.2) as client:
        submitted = [
            client.submit(_request(f"worker kill {seed}.{j}", images).model_copy(update={"num_inference_steps": steps}))
            for j in range(jobs)
        ]
        ids = [job.id for job in submitted]
        for _ in range(kills):
            time.sleep(rng.uniform(0.5, 3.0))
            if all(client.status(job_id).status.terminal for job_id in ids):
                break  # every job ended before the kills ran out: the kills left are not counted
            victim = rng.choice([worker for worker in stack.workers if worker.alive()])
            victim.kill()
            figures.kills += 1
            stack.start_worker()
        killed = time.monotonic()
        for job_id in ids:
            figures.outcomes.settle(client, job_id, images, killed, bound)
            _check_bytes(client, job_id, figures)
    return figures


def _check_bytes(client: GeneratorClient, job_id: str, figures: WorkerKills) -> None:
    """Download each image of a finished job: the client checks its SHA-256, PIL that it decodes."""
    for image in client.status(job_id).images:
        figures.images_checked += 1
        try:
            Image.open(io.BytesIO(client.image(image.sha256))).verify()
        except (IntegrityError, OSError, GeneratorHTTPError):
            figures.images_corrupt += 1


@dataclass
class FullRedis:
    """Answers while Redis was at its maxmemory, and what became of the jobs accepted around it."""

    answers: dict[str, dict[str, int]] = field(default_factory=dict)  # request kind -> HTTP status -> count
    retry_after_missing: int = 0  # 503s without a Retry-After header
    refusals: dict[str, int] = field(default_factory=dict)  # a 503's message -> count: who refused (mark or Redis)
    outcomes: Outcomes = field(default_factory=Outcomes)

    def count(self, kind: str, response: httpx.Response) -> None:
        _tally(self.answers.setdefault(kind, {}), str(response.status_code))
        if response.status_code == 503:
            self.retry_after_missing += "Retry-After" not in response.headers
            body = response.json()
            _tally(self.refusals, body["detail"] if "detail" in body else body["error"]["message"])

    def server_errors(self) -> int:
        return sum(n for by_status in self.answers.values() for status, n in by_status.items() if status == "500")


def maxmemory_trial(
    stack: LocalStack, *, jobs: int = 3, images: int = 8, full_seconds: float = 4.0, bound: float = 60.0
) -> FullRedis:
    """Fill Redis (maxmemory 1 byte, noeviction) while workers have work in hand, submit, read and cancel during
    it, then lift the limit: every job accepted must end with every image once, none may be answered 500.

    Redis itself refuses the workers' writes. A submission is refused by the API's admission mark once its reading
    of Redis's memory is fresh (within a second), by Redis before that or with the mark off
    (GIFT_REDIS_ADMIT_FRACTION=1): ``refusals`` tells them apart."""
    admin = redis.Redis.from_url(stack.redis_url)
    figures = FullRedis()
    api, ended = stack.api_url, time.monotonic()
    with GeneratorClient(api, retries=30, backoff=0.2) as client:
        before = [client.submit(_request(f"before full {j}", images)) for j in range(jobs)]
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)
        try:
            during = []
            deadline = time.monotonic() + full_seconds
            while time.monotonic() < deadline:
                response = httpx.post(f"{api}/v1/jobs", json=_body(f"while full {len(during)}", images))
                figures.count("submit", response)
                if response.status_code == 202:
                    during.append(response.json()["id"])
                for job in before:
                    figures.count("status", httpx.get(f"{api}/v1/jobs/{job.id}"))
            cancelled = httpx.delete(f"{api}/v1/jobs/{before[-1].id}")
            figures.count("cancel", cancelled)
        finally:
            admin.config_set("maxmemory", 0)
            ended = time.monotonic()
        kept = before[:-1] if cancelled.status_code == 200 else before
        for job_id in [job.id for job in kept] + during:
            figures.outcomes.settle(client, job_id, images, ended, bound)
    return figures


@dataclass
class Headroom(FullRedis):
    """Answers while Redis's used memory lay between the API's admission mark and its maxmemory."""

    used_share: list[float] = field(default_factory=list)  # used_memory / maxmemory, at the start and at the end
    heartbeat_age_seconds: float = 0.0  # of the newest worker heartbeat, at the end
    memory_reads: int = 0  # INFO commands the API sent while the trial's requests ran
    openai_errors: dict[str, int] = field(default_factory=dict)  # the OpenAI route's "type code param=..." -> count

    def count_openai(self, response: httpx.Response) -> None:
        self.count("openai", response)
        if response.status_code >= 400:
            error = response.json()["error"]
            _tally(self.openai_errors, f"{error['type']} {error['code']} param={error['param']}")


def headroom_trial(
    stack: LocalStack, fraction: float, *, images: int = 8, seconds: float = 4.0, bound: float = 60.0
) -> Headroom:
    """Set Redis's maxmemory so that its used memory lies midway between the mark (``fraction``, the API's
    GIFT_REDIS_ADMIT_FRACTION) and the limit, with a job queued while the stack's worker is paused; once the API's
    reading of Redis's memory is due again, resume the worker and for ``seconds`` submit (both routes), read the job
    and ask /readyz. Under that same limit the job must end with every image once and heartbeats must go on."""
    admin = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    figures, api, worker = Headroom(), stack.api_url, stack.workers[0]
    with GeneratorClient(api, retries=0) as client:
        # A first job makes the stack's one-off allocations (about 0.6 MB on a fresh Redis), before the limit.
        client.wait(client.submit(_request("before the limit", images)).id, timeout=bound, progress=False)
        os.kill(worker.pid, signal.SIGSTOP)  # so that the job's images are recorded under the limit, not before
        try:
            job = client.submit(_request("before the mark", images))
            admin.config_set("maxmemory", int(_used_memory(admin) / ((fraction + 1) / 2)))
            limited = time.monotonic()
            time.sleep(READ_EVERY_SECONDS)  # the API's last reading, from before the limit, is stale by now
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        try:
            figures.used_share.append(_used_share(admin))
            reads = _info_calls(admin)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                figures.count("submit", httpx.post(f"{api}/v1/jobs", json=_body("past the mark", images)))
                openai = {"prompt": "past the mark", "num_inference_steps": 2}
                figures.count_openai(httpx.post(f"{api}/v1/images/generations", json=openai))
                figures.count("status", httpx.get(f"{api}/v1/jobs/{job.id}"))
                figures.count("readyz", httpx.get(f"{api}/readyz"))
                time.sleep(0.1)
            figures.memory_reads = _info_calls(admin) - reads - 1  # the first count's own INFO is in the second
            figures.outcomes.settle(client, job.id, images, limited, bound)
            newest = admin.zrange(redis_keys.WORKERS, -1, -1, withscores=True)
            figures.heartbeat_age_seconds = round(time.time() - newest[0][1], 2) if newest else float("inf")
            figures.used_share.append(_used_share(admin))
        finally:
            admin.config_set("maxmemory", 0)
            time.sleep(READ_EVERY_SECONDS)  # the API admits again once its reading of the full Redis is stale
    return figures


def _used_memory(admin: redis.Redis) -> int:
    return int(admin.info("memory")["used_memory"])


def _used_share(admin: redis.Redis) -> float:
    memory = admin.info("memory")
    return round(memory["used_memory"] / memory["maxmemory"], 3)


def _info_calls(admin: redis.Redis) -> int:
    """INFO commands Redis has run since it started."""
    return int(admin.info("commandstats").get("cmdstat_info", {}).get("calls", 0))


def _request(tag: str, images: int) -> JobRequest:
    return JobRequest(prompts=[f"{tag} image {i}" for i in range(images)], num_inference_steps=2)


def _body(tag: str, images: int) -> dict:
    return _request(tag, images).model_dump(mode="json", exclude_none=True)


@dataclass
class Burst:
    """A burst of concurrent submissions by one tenant against its limit of unfinished jobs."""

    limit: int
    submitted: int = 0
    accepted: int = 0
    refused: int = 0  # 429
    refused_without_retry_after: int = 0
    other: dict[str, int] = field(default_factory=dict)  # any other status -> count
    unfinished_after: int = 0  # the tenant's unfinished jobs as Redis counts them


def quota_burst(stack: LocalStack, limit: int, *, threads: int = 16, per_thread: int = 12) -> Burst:
    """``threads`` clients submit at once to a model no worker serves, so nothing finishes during the burst: at
    most ``limit`` may be accepted. The stack's API must run with GIFT_MAX_QUEUED_JOBS_PER_TENANT=limit."""
    register_idle_model(stack.redis_url)
    admin = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    burst, lock, accepted = Burst(limit), threading.Lock(), []
    start = threading.Barrier(threads)

    def client(n: int) -> None:
        with httpx.Client(base_url=stack.api_url) as http:
            start.wait()
            for i in range(per_thread):
                response = http.post("/v1/jobs", json={"prompts": [f"burst {n}.{i}"], "model": IDLE_MODEL})
                with lock:
                    burst.submitted += 1
                    if response.status_code == 202:
                        burst.accepted += 1
                        accepted.append(response.json()["id"])
                    elif response.status_code == 429:
                        burst.refused += 1
                        burst.refused_without_retry_after += "Retry-After" not in response.headers
                    else:
                        _tally(burst.other, str(response.status_code))

    workers = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    burst.unfinished_after = sum(admin.scard(key) for key in admin.scan_iter(redis_keys.tenant_active("*")))
    for job_id in accepted:
        httpx.delete(f"{stack.api_url}/v1/jobs/{job_id}")
    return burst


def _tally(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


def as_json(figures: object) -> dict:
    return asdict(figures)  # type: ignore[call-overload]
