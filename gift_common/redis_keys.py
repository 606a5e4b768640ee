"""Every Redis key the generator uses, in one place so that API and workers cannot drift apart.

Every name starts with the hash tag ``{gift}``: a Redis Cluster hashes only the tag, so all keys of a deployment
share one slot, as the job model's scripts need (one reads many jobs at once). Before this tag the prefix was
``gift``; docs/ARCHITECTURE.md says how a deployment moves over.
"""

from __future__ import annotations

import hashlib

PREFIX = "{gift}"

MODELS = f"{PREFIX}:models"  # hash: model name -> ModelInfo JSON + fingerprint, written by workers
WORKERS = f"{PREFIX}:workers"  # zset: worker id -> last heartbeat (unix seconds)
MODELS_SEEN = f"{PREFIX}:models:seen"  # hash: model name -> last heartbeat of a worker serving it (unix seconds)
STATS = f"{PREFIX}:stats"  # hash: counter and histogram-bucket name -> value, written by workers
JOB_ENDED = f"{PREFIX}:job-ended"  # pub/sub channel: a job id, published when the job ends
JOB_PROGRESS = f"{PREFIX}:job-progress"  # pub/sub channel: a job id, published when images of it are recorded
GROUP = "workers"  # the consumer group of every job's work stream
WEBHOOKS = f"{PREFIX}:webhooks"  # stream: (job, attempt) of each webhook to send, read by the API processes
WEBHOOK_RETRIES = f"{PREFIX}:webhooks:retry"  # zset: "job:attempt" -> when it is due (unix seconds)
WEBHOOK_GROUP = "senders"  # the consumer group of the webhooks stream
WEBHOOKS_GIVEN_UP = f"{PREFIX}:webhooks:given-up"  # stream, capped: each webhook given up, its job and last error
BLOB_SWEEP = f"{PREFIX}:blob-sweep"  # string with a TTL: held by the one worker that sweeps expired bytes now


def active(model: str) -> str:
    """Zset: job id -> creation time, the model's jobs that still have work queued (what workers read)."""
    return f"{PREFIX}:active:{model}"


def turns(model: str) -> str:
    """Hash: tenant -> turns taken, which rotates a tenant's jobs of equal priority when workers read work."""
    return f"{PREFIX}:turns:{model}"


def job(job_id: str) -> str:
    """Hash: the job's parameters, state and counters."""
    return f"{PREFIX}:job:{job_id}"


def job_images(job_id: str) -> str:
    """Hash: image index -> the finished image's record (JSON). Written once per index (HSETNX)."""
    return f"{PREFIX}:job:{job_id}:images"


def job_order(job_id: str) -> str:
    """List: image indices in the order they were recorded, so an event stream can resume after the n-th."""
    return f"{PREFIX}:job:{job_id}:order"


def job_work(job_id: str) -> str:
    """Stream: the job's unfinished chunks of image indices, read through the consumer group."""
    return f"{PREFIX}:job:{job_id}:work"


def tenant_active(tenant: str) -> str:
    """Set: the tenant's jobs that are not finished (the queued-jobs limit counts it)."""
    return f"{PREFIX}:tenant:{tenant}:active"


def job_index(tenant: str | None, part: str) -> str:
    """Zset: job id -> creation time (microseconds), a tenant's jobs (None: every tenant's) of one listing ``part``:
    ``all``, a state's, or ``ended`` (job id -> when its hash expires); services/generator/job_index.py keeps them."""
    scope = PREFIX if tenant is None else f"{PREFIX}:tenant:{tenant}"
    return f"{scope}:jobs:{part}"


def worker(consumer: str) -> str:
    """String with a TTL: a live worker's profile and what it holds (JSON), rewritten by its heartbeat."""
    return f"{PREFIX}:worker:{consumer}"


def _scope(owner: str | None) -> str:
    """Where cached images live: the deployment's shared space, or a tenant's own (cache scope ``tenant``)."""
    return PREFIX if owner is None else f"{PREFIX}:tenant:{owner}"


def png(sha256: str, owner: str | None = None) -> str:
    """String: PNG bytes, named by their own SHA-256; ``owner`` is the tenant of a tenant-scoped image."""
    return f"{_scope(owner)}:png:{sha256}"


def cache(content_key: str, owner: str | None = None) -> str:
    """String: the SHA-256 of the PNG made for an image key (see content_key.image_key), in ``owner``'s scope."""
    return f"{_scope(owner)}:cache:{content_key}"


def idempotency(tenant: str, key: str) -> str:
    """Hash: the job a tenant's ``Idempotency-Key`` created, and its request's fingerprint; expires with the job.

    The key is hashed: a client's header value may hold any characters and lengths Redis keys should not.
    """
    return f"{PREFIX}:tenant:{tenant}:idempotency:{hashlib.sha256(key.encode()).hexdigest()}"


def adapter(sha256: str, owner: str | None = None) -> str:
    """Hash: an uploaded adapter's record (AdapterInfo's fields and its uploader); ``owner`` None: shared."""
    return f"{_scope(owner)}:adapter:{sha256}"


def adapter_file(sha256: str, owner: str | None = None) -> str:
    """String: the adapter's safetensors bytes, or empty when they are in the blob store (blobs.py)."""
    return f"{_scope(owner)}:adapter-file:{sha256}"


def adapters(owner: str | None = None) -> str:
    """Zset: adapter id -> upload time (unix seconds), a tenant's own adapters (None: the shared ones)."""
    return f"{_scope(owner)}:adapters"


def model_layers(model: str) -> str:
    """String: JSON of the layers of a model an adapter may adapt (name -> weight shape), written by its workers."""
    return f"{PREFIX}:model-layers:{model}"


ADAPTATION_ENDED = f"{PREFIX}:adaptation-ended"  # pub/sub channel: an adaptation id, published when it ends


def adaptations(model: str) -> str:
    """Stream: one entry (its id and tenant) per adaptation job of ``model`` not ended, read through ``GROUP``."""
    return f"{PREFIX}:adaptations:{model}"


def adaptation(adaptation_id: str, tenant: str) -> str:
    """Hash: an adaptation job's record (AdaptationStatus's fields, its parameters, its tenant), in its tenant's
    scope: another tenant's id is not found."""
    return f"{PREFIX}:tenant:{tenant}:adaptation:{adaptation_id}"


def adaptation_archive(adaptation_id: str, tenant: str) -> str:
    """String: the archive of images and captions the adaptation learns from, deleted when it ends."""
    return f"{PREFIX}:tenant:{tenant}:adaptation:{adaptation_id}:archive"


def adaptation_checkpoint(adaptation_id: str, tenant: str) -> str:
    """String: the adaptation's last checkpoint (LoRA weights, optimizer state, step), deleted when it ends."""
    return f"{PREFIX}:tenant:{tenant}:adaptation:{adaptation_id}:checkpoint"
