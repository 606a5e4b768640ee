"""The worker process: read work round-robin, serve cache hits, run pipeline calls, record, acknowledge.

One worker per GPU; any number against one Redis, on any host. A heartbeat thread keeps this worker's held
chunks claimed, so only a dead worker's work is ever taken over.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import NamedTuple, TypeVar

import torch
from opentelemetry.trace import Span
from redis import Redis
from redis import exceptions as redis_errors

from gift_common import redis_keys
from gift_common.content_key import request_image_key
from gift_common.errors import UserError
from gift_common.plugins import Registry
from gift_common.settings import WorkerSettings, load
from services.devices import resolve_device
from services.generator import logs, tracing
from services.generator.blobs import open_blob_store, sweep
from services.generator.store import RecordOutcome
from services.generator.worker import synthesis
from services.generator.worker.adaptation_queue import AdaptationQueue
from services.generator.worker.adapters import AdapterCache, AdapterGone, deleted
from services.generator.worker.adapting import Adapting
from services.generator.worker.batcher import Backlog, Shape, Task
from services.generator.worker.queue import REDIS_UNAVAILABLE, Chunk, JobInfo, WorkerQueue

log = logging.getLogger("gift.worker")
T = TypeVar("T")
RECLAIM_EVERY_SECONDS = 1.0  # how often to look for chunks a dead or stopped worker left (one XPENDING per job)


class Made(NamedTuple):
    """An image generated for a task; ``replaced`` when the safety checker blacked out its first draw."""

    task: Task
    sha256: str
    png: bytes
    replaced: bool


class Stopped(Exception):
    """A stop was asked for while Redis did not answer: what is in hand is left to the claim timeout."""


class Worker:
    def __init__(self, models: dict[str, synthesis.LoadedModel], settings: WorkerSettings):
        self.models, self.settings = models, settings
        self.batch_size = settings.batch_size
        self.model_batch_sizes = {name: m.batch_size for name, m in models.items() if m.batch_size}
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        # A connect that gets no answer gives up after 5 s, so that a stop is not held up by a Redis that is away.
        timeouts = {"socket_timeout": 30, "socket_connect_timeout": 5}
        self.redis = Redis.from_url(settings.redis_url, decode_responses=True, **timeouts)
        self.blobs = Redis.from_url(settings.redis_url, **timeouts)
        self.blob_store = open_blob_store(settings.blob_store, settings.s3_endpoint_url)
        self.queue = WorkerQueue(self.redis, settings, self.consumer, self.blob_store)
        self.queue.profile = {"models": sorted(models), "device": device_of(models), "batch_size": self.batch_size}
        self.backlog = Backlog()
        self.jobs: dict[str, JobInfo] = {}
        self.adapters = AdapterCache(
            self._adapter_file, settings.home / "adapters", settings.adapter_cache_count, settings.adapter_cache_bytes
        )
        self.stopping = threading.Event()
        queue = AdaptationQueue(self.redis, self.blobs, self.consumer, settings.claim_timeout_seconds,
                                settings.max_deliveries, settings.job_ttl_seconds)  # fmt: skip
        self.adapting = Adapting(queue, settings, self.adapters, self.blob_store, self.stopping)
        self.interrupted = False  # stopped by Ctrl-C, not SIGTERM
        self._held: dict[str, list[str]] = {}
        self._call: tuple[set[str], threading.Event] | None = None  # the pipeline call running: its jobs, its stop
        self._next_reclaim = 0.0

    # --- lifecycle ------------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._until_redis_answers(self._register)
        except Stopped:
            log.info("worker %s stopped before Redis answered", self.consumer)
            return
        beat = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)
        beat.start()
        if self.blob_store is not None:
            threading.Thread(target=self._sweep_blobs, name="blob-sweep", daemon=True).start()
        log.info("worker %s serving %s, batch size %d, per model %s", self.consumer, sorted(self.models),
                 self.batch_size, self.model_batch_sizes or "none")  # fmt: skip
        for model in self.models.values():
            if model.stand_in:
                log.warning("model %s is a STAND-IN with random weights: its images are noise", model.name)
        while not self.stopping.is_set():
            try:
                if not self.step():
                    self.stopping.wait(self.settings.poll_seconds)
            except REDIS_UNAVAILABLE as error:
                log.warning("redis unavailable (%s); retrying", unavailable_reason(error))
                self.stopping.wait(1.0)
            except Stopped:
                break
            except Exception:  # a bug must not stop the worker: step released its batch to be taken over
                log.exception("worker step failed; going on")
                self.stopping.wait(1.0)
        beat.join()  # a heartbeat after the release would make the released chunks look fresh again
        with contextlib.suppress(*REDIS_UNAVAILABLE):  # a stop must not hang on an outage; the claim timeout covers it
            self.queue.release(self.backlog.held())
            self.queue.leave()
        log.info("worker %s stopped", self.consumer)

    def _register(self) -> None:
        for model in self.models.values():
            self.queue.register_model(
                model.name, model.height, model.width, model.fingerprint, model.stand_in, model.fingerprints
            )
            self.queue.register_layers(model.name, synthesis.adaptable_layers(model.pipeline))
            if self.settings.adaptations != "never":
                self.adapting.queue.ensure_group(model.name)

    def _heartbeat(self) -> None:
        while not self.stopping.wait(self.settings.heartbeat_seconds):
            with contextlib.suppress(*REDIS_UNAVAILABLE):  # the main loop reports it
                self.queue.heartbeat(self._held, self.models)
                self.adapting.heartbeat()
                self._stop_call_if_unwanted()

    def _sweep_blobs(self) -> None:
        """Delete bytes whose Redis key expired; one worker at a time (a lock that expires with the period)."""
        assert self.blob_store is not None
        period = self.settings.blob_sweep_seconds
        while not self.stopping.wait(period):
            try:
                if self.redis.set(redis_keys.BLOB_SWEEP, self.consumer, nx=True, ex=max(1, int(period))):
                    deleted = sweep(self.blobs, self.blob_store, self.settings.blob_grace_seconds)
                    log.info("blob sweep: deleted %d expired image(s) from %s", deleted, self.blob_store.url)
            except Exception:  # the store or Redis is away: the next period tries again
                log.exception("blob sweep failed; trying again in %.0f s", period)

    def _stop_call_if_unwanted(self) -> None:
        """Cancellation reaches a running pipeline call here: once every job it serves has ended, it stops."""
        call = self._call
        if call is not None and not self.queue.live(call[0]):
            call[1].set()

    def _until_redis_answers(self, action: Callable[[], T]) -> T:
        """Run ``action`` until Redis answers: results already made are not thrown away for an outage. A stop asked
        for meanwhile raises Stopped: a worker that cannot reach Redis must still end when told to."""
        delay = 0.2
        while True:
            try:
                return action()
            except REDIS_UNAVAILABLE as error:
                log.warning("redis unavailable (%s); retrying in %.1f s", unavailable_reason(error), delay)
                if self.stopping.wait(delay):
                    raise Stopped from None
                delay = min(delay * 2, 5.0)

    # --- one step -------------------------------------------------------------------------------------

    def step(self) -> bool:
        """Make one batch of images, else (GIFT_ADAPTATIONS) train one adaptation job; False when there was nothing
        to do."""
        if self.settings.adaptations != "only" and self._image_step():
            return True
        return self.settings.adaptations != "never" and self.adapting.run_one(self.models)

    def _image_step(self) -> bool:
        """Fill the backlog and make one batch; False when there was nothing to do.

        A batch never leaves memory half done: when Redis is unavailable it goes back to the backlog, to be made
        once Redis answers; on any other error its chunks are released to be taken over (a chunk that keeps
        failing fails its job after GIFT_MAX_DELIVERIES). So every chunk held is being worked on.
        """
        self._fill_backlog()
        batch = self.backlog.next_batch(self.batch_size, self.model_batch_sizes)
        self._held = self.backlog.held()
        try:
            if batch:
                self._make(batch)
        except (*REDIS_UNAVAILABLE, Stopped):
            self.backlog.put_back(batch)
            raise
        except Exception:
            self.queue.release(self.backlog.drop_chunks(batch))
            raise
        finally:
            self._held = self.backlog.held()
        return bool(batch)

    def _make(self, batch: list[Task]) -> None:
        batch = self._drop_without_adapter(self._drop_ended(batch))
        with tracing.job_spans(tracing.BATCH, self._span_starts(batch)) as spans:
            hits = self._cached(batch)
            cached = [(task, sha) for task, sha in zip(batch, hits, strict=True) if sha]
            misses = [task for task, sha in zip(batch, hits, strict=True) if not sha]
            started = time.perf_counter()
            with logs.bound(job_ids=sorted({task.job_id for task in misses})):  # the call's lines name its jobs
                made = self._synthesise(misses) if misses else []
            seconds = time.perf_counter() - started
            outcome = {
                "gift.batch.generated": len(made),
                "gift.batch.cached": len(cached),
                "gift.batch.seconds": seconds,
            }
            for span in spans.values():
                span.set_attributes(outcome)
            self._until_redis_answers(lambda: self._store_and_record(cached, made, spans))
        self._until_redis_answers(lambda: self.queue.observe_batch(len(made), len(cached), seconds))

    def _span_starts(self, batch: list[Task]) -> dict[str, tuple[str | None, tracing.Attributes]]:
        """Where each job's span of this pipeline call starts: its stored traceparent, and what it says."""
        if not tracing.active():
            return {}
        counts = Counter(task.job_id for task in batch)
        starts: dict[str, tuple[str | None, tracing.Attributes]] = {}
        for job_id, images in counts.items():
            if (job := self.jobs.get(job_id)) is None:
                continue
            attributes: tracing.Attributes = {
                "gift.job_id": job_id,
                "gift.tenant": job.tenant,
                "gift.model": job.model,
                "gift.worker_id": self.consumer,
                "gift.batch.images": len(batch),
                "gift.job.images": images,
            }
            starts[job_id] = (job.traceparent, attributes)
        return starts

    def _fill_backlog(self) -> None:
        if time.monotonic() >= self._next_reclaim:
            self._next_reclaim = time.monotonic() + RECLAIM_EVERY_SECONDS
            for name in self.models:
                self._add_chunks(self.queue.reclaim(name, self.backlog.held()))
        largest = max([self.batch_size, *self.model_batch_sizes.values()])
        if len(self.backlog) < 2 * largest:
            max_chunks = max(1, 2 * largest // self.settings.chunk_size)
            for name in self.models:
                self._add_chunks(self.queue.read_new(name, max_chunks))

    def _add_chunks(self, chunks: list[Chunk]) -> None:
        for chunk in chunks:
            job = self.jobs.get(chunk.job_id) or self.queue.job_info(chunk.job_id)
            if job is None:  # ended meanwhile
                self.queue.ack(chunk.job_id, [chunk.entry_id])
                continue
            if chunk.job_id not in self.jobs:
                with logs.bound(**job.ids()):
                    log.info("job %s: started (%d images)", job.job_id, len(job.request.prompts))
            self.jobs[chunk.job_id] = job
            self.backlog.add_chunk([self._task(job, chunk.entry_id, index) for index in chunk.indices])

    def _task(self, job: JobInfo, entry_id: str, index: int) -> Task:
        request, model = job.request, self.models[job.model]
        scheduler = request.scheduler.value if request.scheduler and model.schedulers else None
        shape = Shape(
            job.model,
            request.num_inference_steps,
            request.guidance_scale,
            request.height or model.height,
            request.width or model.width,
            scheduler or model.scheduler,
            request.adapter,
            request.scale,
        )
        fingerprint = model.fingerprints[scheduler] if scheduler else model.fingerprint
        key = request_image_key(request, index, fingerprint, (model.height, model.width))
        prompt, negative = request.prompts[index], request.negative_prompt
        owner = request.cache_owner(job.tenant)
        return Task(job.job_id, entry_id, index, prompt, negative, request.seed_of(index), shape, key, owner,
                    tenant=job.tenant, priority=request.priority or 0)  # fmt: skip

    def _cached(self, batch: list[Task]) -> list[str | None]:
        """The stored SHA-256 of each task's image, or None, each looked up in its own job's cache scope."""
        found: dict[Task, str | None] = {}
        for owner in {task.owner for task in batch}:
            tasks = [task for task in batch if task.owner == owner]
            found.update(zip(tasks, self.queue.cached([task.key for task in tasks], owner), strict=True))
        return [found[task] for task in batch]

    def _drop_ended(self, batch: list[Task]) -> list[Task]:
        """Cancellation takes effect here, between batches: an ended job's images are not generated."""
        live = self.queue.live({task.job_id for task in batch})
        for job_id in {task.job_id for task in batch} - live:
            self._forget(job_id)
        return [task for task in batch if task.job_id in live]

    def _drop_without_adapter(self, batch: list[Task]) -> list[Task]:
        """A job whose adapter was deleted while it was queued fails here, saying so; the rest of the batch goes on."""
        adapter = batch[0].shape.adapter if batch else None
        if adapter is None:
            return batch
        tenants = {task.tenant for task in batch}
        users = self.queue.adapter_users(adapter, tenants)
        if users == tenants:
            return batch
        for job_id in sorted({task.job_id for task in batch if task.tenant not in users}):
            self._until_redis_answers(partial(self.queue.fail_job, job_id, deleted(adapter)))
            self._forget(job_id)
        return [task for task in batch if task.tenant in users]

    def _adapter_file(self, adapter: str) -> bytes | None:
        """An adapter's file, from the scope of any tenant this worker holds work of, or the shared one."""
        owners = [*sorted({job.tenant for job in self.jobs.values()}), None]
        return self.queue.adapter_file(self.blobs, adapter, owners)

    def _forget(self, job_id: str) -> None:
        self.queue.ack(job_id, self.backlog.drop_job(job_id))
        job = self.jobs.pop(job_id, None)
        with logs.bound(**(job.ids() if job else {"job_id": job_id})):
            log.info("job %s: ended elsewhere (cancelled or failed); its remaining work is dropped", job_id)

    def _synthesise(self, tasks: list[Task]) -> list[Made]:
        """The batch's images from one pipeline call (and the redraws of those the safety checker blacked out)."""
        shape = tasks[0].shape
        job_ids, stop = {task.job_id for task in tasks}, threading.Event()
        self._call = (job_ids, stop)
        try:
            switch = self.adapters.activate(self.models[shape.model], shape.adapter, shape.adapter_scale)
            drawn = synthesis.generate(
                self.models[shape.model],
                prompts=[task.prompt for task in tasks],
                negative_prompts=[task.negative_prompt for task in tasks],
                seeds=[task.seed for task in tasks],
                num_inference_steps=shape.num_inference_steps,
                guidance_scale=shape.guidance_scale,
                height=shape.height,
                width=shape.width,
                scheduler=shape.scheduler,
                interrupted=stop.is_set,
            )
        except synthesis.Interrupted as stopped:
            log.info("pipeline call of %d images %s: its jobs %s ended", len(tasks), stopped, sorted(job_ids))
            for job_id in job_ids:
                self._forget(job_id)
            return []
        except AdapterGone as gone:
            return self._fail_jobs(job_ids, str(gone))
        except Exception as error:  # a pipeline error ends the jobs that asked for it, not the worker
            log.exception("pipeline call of %d images failed", len(tasks))
            return self._fail_jobs(job_ids, f"image generation failed: {error}")
        finally:
            self._call = None
        self._until_redis_answers(partial(self.queue.observe_adapter, switch.loaded, switch.hit, switch.seconds))
        if drawn.replaced:
            log.info("pipeline call of %d images: %d blacked out by the safety checker, drawn again",
                     len(tasks), len(drawn.replaced))  # fmt: skip
        replaced = set(drawn.replaced)
        return [Made(task, hashlib.sha256(png).hexdigest(), png, i in replaced) for i, (task, png) in
                enumerate(zip(tasks, drawn.pngs, strict=True))]  # fmt: skip

    def _fail_jobs(self, job_ids: set[str], reason: str) -> list[Made]:
        """End the jobs of a pipeline call that could not be made; nothing of it is recorded."""
        for job_id in sorted(job_ids):
            self._until_redis_answers(partial(self.queue.fail_job, job_id, reason))
        return []

    def _store_and_record(self, cached: list[tuple[Task, str]], made: list[Made], spans: Mapping[str, Span]) -> None:
        self.queue.store_pngs(self.blobs, [(task.owner, task.key, sha, png) for task, sha, png, _ in made])
        by_job: dict[str, list[tuple[Task, str, bool]]] = {}
        for task, sha in cached:
            by_job.setdefault(task.job_id, []).append((task, sha, True))
        for task, sha, _, _ in made:
            by_job.setdefault(task.job_id, []).append((task, sha, False))
        for job_id, items in by_job.items():
            job = self.jobs.get(job_id)
            if job is None:
                continue
            span = spans.get(job_id)
            replaced = {image.task.index for image in made if image.replaced and image.task.job_id == job_id}
            with logs.bound(**job.ids()), tracing.use(span):
                result = self.queue.record(job, [(task.index, sha, hit) for task, sha, hit in items], replaced)
            if span is not None and result.outcome == RecordOutcome.finished:
                span.add_event("job succeeded", {"gift.images": result.total})
            if result.outcome == RecordOutcome.dropped:
                self._forget(job_id)
                continue
            self.queue.ack(job_id, [task.entry_id for task, _, _ in items if self.backlog.complete(task)])
            if result.outcome == RecordOutcome.finished:
                self.jobs.pop(job_id, None)


def unavailable_reason(error: Exception) -> str:
    """Why Redis did not take a call; a refused write's message would quote its arguments (PNG bytes)."""
    if isinstance(error, redis_errors.OutOfMemoryError):
        return "full: used memory is over maxmemory, writes are refused"
    return str(error)


class ModelSpec(NamedTuple):
    """A model to serve: ``NAME=DIR`` or ``NAME=DIR@BATCH`` (images per pipeline call for this model)."""

    name: str
    directory: Path
    batch_size: int | None = None


def parse_model_spec(spec: str) -> ModelSpec:
    name, sep, rest = spec.strip().partition("=")
    directory, at, batch = rest.rpartition("@")
    if not at or "/" in batch:  # no batch, or an "@" inside the directory's path
        directory, at, batch = rest, "", ""
    if not sep or not name or not directory or (at and not (batch.isdigit() and int(batch) >= 1)):
        raise UserError(
            f"model {spec!r}: expected NAME=DIR or NAME=DIR@BATCH (BATCH a whole number of at least 1), "
            "for example sd15=/models/stable-diffusion-v1-5@32"
        )
    return ModelSpec(name, Path(directory), int(batch) if at else None)


# Models that installed plugins provide: a callable of the local cache folder that returns a pipeline directory.
def device_of(models: dict[str, synthesis.LoadedModel]) -> str:
    """Where the worker's pipelines run, as GET /v1/workers shows it (``cuda:0``, ``cpu``)."""
    devices = {str(getattr(m.pipeline, "device", m.variant.get("device", "unknown"))) for m in models.values()}
    return ", ".join(sorted(devices))


PLUGIN_MODELS: Registry[Callable[[Path], Path]] = Registry("gift.generator.models", "generator model")


def plugin_models(home: Path) -> list[ModelSpec]:
    """What a worker given no --model serves: every model an installed plugin provides, under its registered name."""
    models = [ModelSpec(name, find_dir(home)) for name, find_dir in PLUGIN_MODELS.items()]
    if not models:
        raise UserError("no --model given and no installed plugin provides one: pass --model NAME=DIR")
    return models


def run_worker(models: list[ModelSpec], batch_size: int | None = None) -> None:
    """Serve until SIGTERM or Ctrl-C, which finish the batch in hand; a second Ctrl-C stops at once (status 130)."""
    flags = {"batch_size": ("--batch-size", batch_size)} if batch_size is not None else {}
    settings = load(WorkerSettings, flags)
    logs.configure(settings.log_format)
    if traces := tracing.setup("gift-worker", settings.otlp_endpoint):
        log.info("traces go to %s over OTLP/HTTP", traces)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    device = resolve_device(settings.device)
    if not models and settings.models:
        models = [parse_model_spec(spec) for spec in settings.models.split(",") if spec.strip()]
    if not models:
        models = plugin_models(settings.home)
    options = synthesis.RuntimeOptions(scheduler=settings.scheduler, compile_unet=settings.compile_unet)
    loaded = {m.name: synthesis.load_model(m.name, m.directory, device, options, m.batch_size) for m in models}
    worker = Worker(loaded, settings)
    logs.set_process_fields(worker_id=worker.consumer)  # on every line from here on, whatever its thread
    signal.signal(signal.SIGTERM, partial(_stop, worker, "SIGTERM"))
    signal.signal(signal.SIGINT, partial(_stop, worker, "Ctrl-C"))
    try:
        worker.run()
    finally:
        tracing.close()
    if worker.interrupted:
        raise KeyboardInterrupt  # the command line's status 130, as for any Ctrl-C


def _stop(worker: Worker, cause: str, *_: object) -> None:
    """The first stop finishes the batch in hand and hands the rest over; a second Ctrl-C stops at once."""
    if worker.stopping.is_set() and cause == "Ctrl-C":
        log.warning("Ctrl-C again: stopping now; chunks in hand are taken over after GIFT_CLAIM_TIMEOUT_SECONDS")
        raise KeyboardInterrupt
    worker.interrupted = worker.interrupted or cause == "Ctrl-C"
    log.info("%s: finishing the batch in hand, then handing the rest over%s", cause,
             " (Ctrl-C again stops at once)" if cause == "Ctrl-C" else "")  # fmt: skip
    worker.stopping.set()
