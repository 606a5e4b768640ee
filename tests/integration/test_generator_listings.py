"""Listings on a real Redis: the index the job model's scripts keep, its pages, its expiry, and the routes with
tenants, an admin and a real worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import redis.asyncio

from gift_common import redis_keys
from gift_common.schemas import JobRequest, JobState
from gift_common.settings import ApiSettings
from services.generator import job_index
from services.generator.api.events import JobEvents
from services.generator.api.jobs import JobService
from services.generator.api.listings import JobListing
from services.generator.worker.queue import WorkerQueue
from services.stack import RedisServer
from services.testing.generator import wait_for

pytestmark = pytest.mark.integration

MODEL, FINGERPRINT, SIZE = "tinyworld", "0" * 64, (32, 32)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    redis_server = RedisServer(tmp_path / "redis").start()
    yield redis_server
    redis_server.stop()


class Scene:
    """The API's job service and listing and a worker's queue on one Redis, without processes: the index's steps."""

    def __init__(self, url: str, **settings: object):
        self.settings = ApiSettings(redis_url=url, chunk_size=4, **settings)  # type: ignore[arg-type]
        self.sync = redis.Redis.from_url(url, decode_responses=True)
        self.queue = WorkerQueue(self.sync, self.settings, "worker-1")
        self.queue.register_model(MODEL, *SIZE, FINGERPRINT)
        api = redis.asyncio.Redis.from_url(url, decode_responses=True)
        self.jobs = JobService(api, redis.asyncio.Redis.from_url(url), self.settings, JobEvents())
        self.listing = JobListing(api)

    async def submit(self, tenant: str, prompts: int = 1) -> str:
        return (await self.jobs.submit(JobRequest(prompts=[f"p{i}" for i in range(prompts)]), tenant)).id

    async def every_page(self, tenant: str | None, state: JobState | None = None, limit: int = 3) -> list[str]:
        ids: list[str] = []
        cursor = None
        while True:
            page = await self.listing.page(tenant, state, limit, cursor)
            assert len(page.jobs) <= limit
            ids += [job.id for job in page.jobs]
            if page.next_cursor is None:
                return ids
            cursor = page.next_cursor

    def record(self, job_id: str, indices: list[int]) -> None:
        info = self.queue.job_info(job_id)
        assert info is not None
        self.queue.record(info, [(i, f"{i:064x}", False) for i in indices])


def test_listings_are_newest_first_per_tenant_and_state_and_pages_cover_each_job_once(server: RedisServer) -> None:
    async def scenario() -> None:
        scene = Scene(server.url)
        alice = [await scene.submit("alice", prompts=2) for _ in range(7)]
        bob = [await scene.submit("bob") for _ in range(2)]
        assert await scene.every_page("alice") == alice[::-1]
        assert await scene.every_page("bob", limit=1) == bob[::-1]
        assert await scene.every_page(None, limit=4) == (alice + bob)[::-1], "the deployment's: every tenant's"

        await scene.jobs.cancel(alice[1], "alice")
        scene.record(alice[2], [0])
        scene.record(alice[3], [0, 1])
        assert await scene.every_page("alice", JobState.cancelled) == [alice[1]]
        assert await scene.every_page("alice", JobState.running) == [alice[2]]
        assert await scene.every_page("alice", JobState.succeeded) == [alice[3]]
        assert await scene.every_page("alice", JobState.queued, limit=2) == [alice[i] for i in (6, 5, 4, 0)]
        assert await scene.every_page(None, JobState.queued) == [*bob[::-1], *(alice[i] for i in (6, 5, 4, 0))]

        page = await scene.listing.page("alice", None, 10, None)
        running = next(job for job in page.jobs if job.id == alice[2])
        assert (running.status, running.done, running.total, running.tenant, running.model) == (
            JobState.running, 1, 2, "alice", MODEL
        )  # fmt: skip
        assert running.images == [], "a listing leaves the images out"

    asyncio.run(scenario())


def test_jobs_created_in_the_same_microsecond_page_without_loss_or_repeat(server: RedisServer) -> None:
    async def scenario() -> None:
        scene = Scene(server.url)
        ids = [await scene.submit("alice") for _ in range(5)]
        for part in ("all", "queued"):
            scene.sync.zadd(redis_keys.job_index("alice", part), dict.fromkeys(ids, 1_700_000_000_000_000))
        for limit in (1, 2, 3):
            assert await scene.every_page("alice", limit=limit) == sorted(ids, reverse=True)

    asyncio.run(scenario())


def test_an_expired_job_leaves_the_index_and_an_idle_index_expires_with_its_jobs(server: RedisServer) -> None:
    async def scenario() -> None:
        scene = Scene(server.url, job_ttl_seconds=1)
        live = await scene.submit("alice")  # queued for good: the index lives on
        gone = await scene.submit("alice")
        await scene.jobs.cancel(gone, "alice")
        time.sleep(1.2)
        assert scene.sync.exists(redis_keys.job(gone)) == 0
        assert scene.sync.zscore(redis_keys.job_index("alice", "all"), gone) is not None, "no write since"
        assert await scene.every_page("alice") == [live], "a job whose hash expired is never listed"
        kept = await scene.submit("alice")  # a write of the scope drops what expired
        for tenant in ("alice", None):
            keys = [redis_keys.job_index(tenant, part) for part in job_index.PARTS]
            assert all(scene.sync.zscore(key, gone) is None for key in keys)
            assert all(scene.sync.ttl(key) in (-1, -2) for key in keys), "a scope with a live job never expires"
        for job_id in (live, kept):
            await scene.jobs.cancel(job_id, "alice")
        for tenant in ("alice", None):
            for part in ("all", "cancelled", "ended"):
                assert 0 < scene.sync.ttl(redis_keys.job_index(tenant, part)) <= 1, "idle: expires with its jobs"
        time.sleep(1.2)
        assert scene.sync.keys(redis_keys.job_index("alice", "*")) == []

    asyncio.run(scenario())


ALICE, BOB, ADMIN = ({"Authorization": f"Bearer {key}"} for key in ("alice-key", "bob-key", "admin-key"))
KEYS = {"GIFT_API_KEYS": "alice:alice-key,bob:bob-key", "GIFT_ADMIN_KEYS": "ops:admin-key"}


def test_routes_keep_tenants_apart_and_the_admin_sees_and_cancels_every_job(make_stack) -> None:
    stack = make_stack(workers=1, **KEYS)
    api = stack.api_url
    slow = {"prompts": [f"a red circle {i}" for i in range(48)], "num_inference_steps": 40}
    alice_job = httpx.post(f"{api}/v1/jobs", json=slow, headers=ALICE).json()["id"]
    bob_job = httpx.post(f"{api}/v1/jobs", json={"prompts": ["a blue square"]}, headers=BOB).json()["id"]

    def listed(headers: dict[str, str], path: str = "/v1/jobs", **params: str) -> list[str]:
        response = httpx.get(f"{api}{path}", headers=headers, params=params)
        assert response.status_code == 200, response.text
        return [job["id"] for job in response.json()["jobs"]]

    assert listed(ALICE) == [alice_job] and listed(BOB) == [bob_job]
    assert listed(ADMIN, "/v1/admin/jobs") == [bob_job, alice_job]
    assert listed(ADMIN, "/v1/admin/jobs", tenant="alice") == [alice_job]
    for headers in (ALICE, {}, {"Authorization": "Bearer wrong"}):
        assert httpx.get(f"{api}/v1/admin/jobs", headers=headers).status_code == 401
        assert httpx.delete(f"{api}/v1/admin/jobs/{alice_job}", headers=headers).status_code == 401
    assert httpx.get(f"{api}/v1/jobs", headers=ADMIN).status_code == 401, "an admin's key is no tenant's"

    seen: dict[str, list[dict]] = {"alice": [], "bob": [], "admin": []}

    def alice_job_held() -> bool:
        for name, headers in (("alice", ALICE), ("bob", BOB), ("admin", ADMIN)):
            seen[name] += httpx.get(f"{api}/v1/workers", headers=headers).json()
        return any(alice_job in worker["jobs"] for worker in seen["alice"])

    wait_for(alice_job_held, 60, "a worker holding alice's job, as alice sees the fleet")
    assert all(alice_job not in worker["jobs"] for worker in seen["bob"]), "bob never sees alice's job ids"
    assert any(worker["chunks_held"] > 0 for worker in seen["bob"]), "bob sees the fleet is busy"
    worker = seen["alice"][-1]
    assert (worker["models"], worker["device"], worker["batch_size"]) == (["tinyworld"], "cpu", 8)
    assert 0 <= worker["heartbeat_age_seconds"] < 30

    cancelled = httpx.delete(f"{api}/v1/admin/jobs/{alice_job}", headers=ADMIN)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert httpx.get(f"{api}/v1/jobs/{alice_job}", headers=ALICE).json()["status"] == "cancelled"
    assert listed(ALICE, status="cancelled") == [alice_job]
    shown = httpx.get(f"{api}/v1/admin/jobs/{bob_job}", headers=ADMIN, params={}).json()
    assert shown["id"] == bob_job
    assert httpx.get(f"{api}/v1/admin/jobs/{'f' * 32}", headers=ADMIN).status_code == 404

    def images_done() -> int:
        return sum(worker["images_done"] for worker in httpx.get(f"{api}/v1/workers", headers=ADMIN).json())

    wait_for(lambda: images_done() >= 1, 60, "bob's image counted by its worker's heartbeat")


def test_metrics_report_the_oldest_queued_job_and_redis_memory_for_the_alerts(server: RedisServer) -> None:
    async def scenario() -> None:
        scene = Scene(server.url, redis_admit_fraction=0.8)
        empty = await scene.jobs.metrics_snapshot(60)
        assert empty["oldest_queued_seconds"] == 0
        first = await scene.submit("alice")
        time.sleep(0.3)
        await scene.submit("bob")
        snapshot = await scene.jobs.metrics_snapshot(60)
        assert 0.3 <= snapshot["oldest_queued_seconds"] < 30, "the oldest job's age, not the newest's"
        used, limit = snapshot["redis_memory"]
        assert used > 0 and limit == 0 and snapshot["admit_fraction"] == 0.8
        await scene.jobs.cancel(first, "alice")
        assert (await scene.jobs.metrics_snapshot(60))["oldest_queued_seconds"] < 0.3

    asyncio.run(scenario())
