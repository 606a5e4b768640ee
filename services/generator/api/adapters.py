"""Uploaded LoRA adapters, on Redis and the blob store: check, keep, list, read, delete, and resolve a job's.

An adapter is named by the SHA-256 of its file. It belongs to the tenant that uploaded it (``redis_keys.adapter(id,
tenant)``) or, uploaded as shared, to every tenant (``redis_keys.adapter(id)``, its uploader in the record): a
tenant sees its own and the shared ones, never another's own, which answer as if they did not exist. The bytes are
written before the record that names them (the blob store first, then Redis in one MULTI), and a delete takes the
record first: a reader that finds a record finds its bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import datetime

from redis.asyncio import Redis

from gift_common import redis_keys
from gift_common.schemas import AdapterInfo, JobRequest
from gift_common.settings import QueueSettings
from services.generator import adapter_files, replies, store
from services.generator.api.errors import JobError
from services.generator.blobs import BlobName, BlobStore


def scopes(tenant: str) -> tuple[str, None]:
    """Where a tenant's adapter ids are looked up, in order: its own, then the shared ones."""
    return tenant, None


class AdapterService:
    """``redis`` decodes replies to text; ``blobs`` is the same server without decoding, for the files' bytes."""

    def __init__(self, redis: Redis, blobs: Redis, settings: QueueSettings, blob_store: BlobStore | None = None):
        self.redis, self.blobs, self.settings, self.blob_store = redis, blobs, settings, blob_store

    async def upload(
        self, data: bytes, model: str, tenant: str, *, shared: bool, name: str | None
    ) -> tuple[AdapterInfo, bool]:
        """Check and keep an adapter of ``model``; returns it and whether it is new (the same file uploaded again
        into the same scope is the same adapter). The body limit (GIFT_MAX_ADAPTER_BYTES) was applied before."""
        layers = await self.layers(model)
        try:
            checked = await asyncio.to_thread(adapter_files.check, data, layers, model, self.settings.max_adapter_rank)
        except adapter_files.AdapterRejected as error:
            raise JobError(422, f"the file: {error}") from None
        sha = hashlib.sha256(data).hexdigest()
        owner = None if shared else tenant
        if (existing := await self._record(sha, owner)) is not None:
            if existing.model != model:
                raise JobError(409, f"model: adapter {sha} is already uploaded for model {existing.model!r}")
            return existing, False
        created_at = datetime.fromisoformat(store.now_iso())
        info = AdapterInfo(id=sha, model=model, name=name, rank=checked.rank, layers=checked.layers,
                           bytes=len(data), shared=shared, created_at=created_at)  # fmt: skip
        await self._keep(info, data, owner, tenant)
        return info, True

    async def layers(self, model: str) -> dict[str, list[int]]:
        """The model's adaptable layers as its workers registered them."""
        layers = replies.optional_text(await self.redis.get(redis_keys.model_layers(model)))
        if layers is not None:
            loaded: dict[str, list[int]] = json.loads(layers)
            return loaded
        registered = sorted(replies.texts(await self.redis.hkeys(redis_keys.MODELS)))
        if model in registered:
            raise JobError(422, f"model: no worker of {model!r} has said which layers it has yet (a worker from "
                                "before adapters); upgrade its workers")  # fmt: skip
        raise JobError(422, f"model: unknown model {model!r}; registered: {', '.join(registered) or 'none yet'}")

    async def _keep(self, info: AdapterInfo, data: bytes, owner: str | None, tenant: str) -> None:
        if self.blob_store is not None:
            await asyncio.to_thread(self.blob_store.put, BlobName(info.id, owner, "safetensors"), data)
        record = {**json.loads(info.model_dump_json()), "tenant": tenant, "shared": int(info.shared)}
        record = {key: str(value) for key, value in record.items() if value is not None}
        async with self.blobs.pipeline(transaction=True) as pipe:
            pipe.set(redis_keys.adapter_file(info.id, owner), data if self.blob_store is None else b"")
            pipe.hset(redis_keys.adapter(info.id, owner), mapping=record)
            pipe.zadd(redis_keys.adapters(owner), {info.id: info.created_at.timestamp()})
            await pipe.execute()

    async def _record(self, sha: str, owner: str | None) -> AdapterInfo | None:
        fields = replies.text_hash(await self.redis.hgetall(redis_keys.adapter(sha, owner)))
        return _info(fields) if fields else None

    async def find(self, sha: str, tenant: str) -> AdapterInfo | None:
        """The tenant's own adapter of that id, else the shared one; None for another tenant's own or none."""
        for owner in scopes(tenant):
            if (info := await self._record(sha, owner)) is not None:
                return info
        return None

    async def listing(self, tenant: str) -> list[AdapterInfo]:
        """The tenant's own adapters, then the shared ones, each oldest first."""
        found = []
        for owner in scopes(tenant):
            for sha in replies.texts(await self.redis.zrange(redis_keys.adapters(owner), 0, -1)):
                if (info := await self._record(sha, owner)) is not None:
                    found.append(info)
        return found

    async def delete(self, sha: str, tenant: str) -> AdapterInfo | None:
        """Delete the tenant's own adapter of that id, else a shared one it uploaded; None when it has neither.
        Queued jobs that name it fail when a worker reaches them (worker/main.py)."""
        for owner in scopes(tenant):
            record = replies.text_hash(await self.redis.hgetall(redis_keys.adapter(sha, owner)))
            if not record:
                continue
            if record.get("tenant") != tenant:
                raise JobError(403, f"adapter {sha} is shared by another tenant; only its uploader may delete it")
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(redis_keys.adapter(sha, owner), redis_keys.adapter_file(sha, owner))
                pipe.zrem(redis_keys.adapters(owner), sha)
                await pipe.execute()
            if self.blob_store is not None:
                await asyncio.to_thread(self.blob_store.delete, [BlobName(sha, owner, "safetensors")])
            return _info(record)
        return None

    async def check_job(self, request: JobRequest, tenant: str) -> None:
        """Refuse a job whose adapter the tenant cannot use, or one made for another model."""
        if request.adapter is None:
            return
        info = await self.find(request.adapter, tenant)
        if info is None:
            raise JobError(422, f"adapter: no adapter {request.adapter} (never uploaded, deleted, or another "
                                "tenant's own): GET /v1/adapters lists yours")  # fmt: skip
        if info.model != request.model:
            raise JobError(422, f"adapter: adapter {request.adapter} is for model {info.model!r}, not "
                                f"{request.model!r}")  # fmt: skip


def _info(record: dict[str, str]) -> AdapterInfo:
    return AdapterInfo.model_validate({**record, "shared": record.get("shared") == "1"})
