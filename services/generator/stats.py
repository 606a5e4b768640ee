"""Service-wide counters and histograms, kept in one Redis hash.

Workers run on other hosts than the API, and several API processes may send webhooks, so each adds its
observations to Redis and any API process's ``/metrics`` renders the totals: one scrape target sees the whole
service.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping
from typing import TypedDict

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from gift_common import redis_keys

COUNTERS = {
    "images_generated": "Images made by a pipeline call",
    "cache_hits": "Images served from the content-addressed cache instead of being generated",
    "jobs_succeeded": "Jobs that finished with every image",
    "jobs_failed": "Jobs that ended with an error",
    "chunks_reclaimed": "Chunks of work taken over from a worker that stopped answering",
    "webhooks_given_up": "Webhooks given up after GIFT_WEBHOOK_ATTEMPTS failed POSTs",
    "adapter_loads": "LoRA adapters a worker loaded into a pipeline (its adapter cache missed)",
    "adapter_cache_hits": "Pipeline calls with an adapter a worker had loaded already",
}
HISTOGRAMS = {
    "batch_size": ("Images per pipeline call", (1, 2, 4, 8, 16, 32, 64, 128)),
    "batch_seconds": ("Seconds per pipeline call", (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)),
    "job_seconds": ("Seconds from a job's submission to its end", (0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 7200)),
    "adapter_switch_seconds": (
        "Seconds a worker took to change a pipeline's adapter between calls (a load included)",
        (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
    ),
}


def counter_increment(name: str, amount: int = 1) -> tuple[str, str, int]:
    """Arguments of HINCRBY on the stats hash for a counter."""
    assert name in COUNTERS, name
    return redis_keys.STATS, name, amount


def histogram_increments(name: str, value: float) -> list[tuple[str, str, float]]:
    """Arguments of HINCRBYFLOAT on the stats hash that add one observation to a histogram."""
    _, bounds = HISTOGRAMS[name]
    bucket = bisect.bisect_left(bounds, value)
    label = str(bounds[bucket]) if bucket < len(bounds) else "+Inf"
    return [
        (redis_keys.STATS, f"{name}:bucket:{label}", 1),
        (redis_keys.STATS, f"{name}:count", 1),
        (redis_keys.STATS, f"{name}:sum", value),
    ]


class Snapshot(TypedDict):
    """One read of everything /metrics reports (``JobService.metrics_snapshot``): SnapshotCollector's arguments."""

    stats: dict[str, str]
    queued_jobs: dict[str, int]
    queued_images: int
    workers: int
    oldest_queued_seconds: float  # the age of the oldest job with work queued; 0 when none is
    redis_memory: tuple[int, int]  # Redis's used_memory and maxmemory (0: none), for the admission mark's alert
    admit_fraction: float  # GIFT_REDIS_ADMIT_FRACTION


class SnapshotCollector(Collector):
    """Prometheus families from one read of the stats hash and the queue."""

    def __init__(
        self,
        stats: Mapping[str, str],
        queued_jobs: Mapping[str, int],
        queued_images: int,
        workers: int,
        oldest_queued_seconds: float,
        redis_memory: tuple[int, int],
        admit_fraction: float,
    ):
        self.stats, self.queued_jobs, self.queued_images, self.workers = stats, queued_jobs, queued_images, workers
        self.oldest_queued_seconds, self.redis_memory, self.admit_fraction = (
            oldest_queued_seconds, redis_memory, admit_fraction
        )  # fmt: skip

    def collect(self) -> Iterator[Metric]:
        for name, help_text in COUNTERS.items():
            yield CounterMetricFamily(f"gift_{name}", help_text, value=float(self.stats.get(name, 0)))
        for name, (help_text, bounds) in HISTOGRAMS.items():
            yield self._histogram(name, help_text, bounds)
        jobs = GaugeMetricFamily("gift_queue_jobs", "Jobs with work queued, by model", labels=["model"])
        for model, count in sorted(self.queued_jobs.items()):
            jobs.add_metric([model], count)
        yield jobs
        yield GaugeMetricFamily("gift_queue_images", "Images accepted and not yet made", value=self.queued_images)
        yield GaugeMetricFamily("gift_workers_alive", "Workers that sent a heartbeat lately", value=self.workers)
        yield GaugeMetricFamily(
            "gift_queue_oldest_seconds",
            "Age of the oldest job with work queued (0: none)",
            value=self.oldest_queued_seconds,
        )
        used, limit = self.redis_memory
        yield GaugeMetricFamily("gift_redis_used_bytes", "Redis's used_memory", value=used)
        yield GaugeMetricFamily("gift_redis_maxmemory_bytes", "Redis's maxmemory (0: none)", value=limit)
        yield GaugeMetricFamily(
            "gift_redis_admit_fraction", "Share of maxmemory past which new jobs are refused", value=self.admit_fraction
        )

    def _histogram(self, name: str, help_text: str, bounds: tuple[float, ...]) -> HistogramMetricFamily:
        cumulative, buckets = 0.0, []
        for label in [*map(str, bounds), "+Inf"]:
            cumulative += float(self.stats.get(f"{name}:bucket:{label}", 0))
            buckets.append((label, cumulative))
        return HistogramMetricFamily(
            f"gift_{name}", help_text, buckets=buckets, sum_value=float(self.stats.get(f"{name}:sum", 0))
        )
