"""Where image bytes live: in Redis (the embedded default), in a directory that API and workers share, or in an
S3-compatible object store (``GIFT_BLOB_STORE``: ``redis``, ``file:///DIR``, ``s3://BUCKET/PREFIX``).

Adapter files (``kind`` ``safetensors``) are kept the same way under ``redis_keys.adapter_file``, in the store under
``adapters/``; they have no TTL, are deleted with their record, and the sweep never touches them.

Redis keeps, for every stored image, its key ``redis_keys.png(sha256, owner)`` with the image TTL. Its value is the
bytes themselves on the ``redis`` backend, and empty on the others, where the bytes are in the store under the same
name. That key is the truth about whether an image exists, so cache lookups, TTL refreshes, expiry, cache scopes and
``410``/``404`` answers mean the same on every backend; a reader that finds bytes in the key serves them whatever
the backend (images stored before a change of backend stay readable). Bytes are written before their key, and
bytes whose key has expired are garbage that ``sweep`` deletes after a grace period (the grace covers a worker that
has written bytes and not yet their key).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple, Protocol
from urllib.parse import quote, unquote, urlsplit

from redis import Redis

from gift_common import redis_keys
from gift_common.errors import UserError

CONTENT_TYPES = {"png": "image/png", "safetensors": "application/octet-stream"}


class BlobName(NamedTuple):
    sha256: str
    owner: str | None = None
    kind: str = "png"  # or "safetensors": an adapter's file

    def path(self) -> str:
        """Two levels of fan-out, so that no directory or listing page holds millions of names; a tenant's own
        images under its (quoted) name; adapters under ``adapters/``, which the sweep's listing leaves out."""
        within = f"{self.sha256[:2]}/{self.sha256}.{self.kind}"
        within = within if self.kind == "png" else f"adapters/{within}"
        return within if self.owner is None else f"tenant/{quote(self.owner, safe='')}/{within}"

    @classmethod
    def from_path(cls, path: str) -> BlobName | None:
        """The name a stored path stands for; None for a path this module did not write."""
        parts = path.split("/")
        if len(parts) == 2 and parts[1].endswith(".png"):
            return cls(parts[1].removesuffix(".png"))
        if len(parts) == 4 and parts[0] == "tenant" and parts[3].endswith(".png"):
            return cls(parts[3].removesuffix(".png"), unquote(parts[1]))
        return None


class BlobStore(Protocol):
    """PNG bytes by SHA-256 and cache scope (``owner``: None, or the tenant of a tenant-scoped image), outside
    Redis. Writes are idempotent: a name always holds the same bytes."""

    url: str

    def put(self, name: BlobName, data: bytes) -> None: ...

    def get(self, name: BlobName) -> bytes | None:
        """The bytes, or None when the store does not hold them."""

    def delete(self, names: Iterable[BlobName]) -> None: ...

    def listing(self) -> Iterator[tuple[BlobName, float]]:
        """Every stored name with its last-modified time (Unix seconds)."""


def open_blob_store(url: str, s3_endpoint_url: str | None = None) -> BlobStore | None:
    """The store a ``GIFT_BLOB_STORE`` value names; None for ``redis`` (bytes stay in Redis)."""
    parts = urlsplit(url)
    if url == "redis":
        return None
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise UserError(f"GIFT_BLOB_STORE={url!r}: a file URL names a local directory: file:///path/to/dir")
        return DirectoryStore(Path(unquote(parts.path)))
    if parts.scheme == "s3":
        if not parts.netloc:
            raise UserError(f"GIFT_BLOB_STORE={url!r}: name the bucket: s3://BUCKET or s3://BUCKET/PREFIX")
        return S3Store(parts.netloc, parts.path.strip("/"), s3_endpoint_url)
    raise UserError(f"GIFT_BLOB_STORE={url!r}: use redis, file:///DIR or s3://BUCKET/PREFIX")


class DirectoryStore:
    """A directory on a volume that the API and every worker mount at the same path."""

    def __init__(self, root: Path) -> None:
        if not root.is_absolute():
            raise UserError(f"GIFT_BLOB_STORE: the directory {root} must be an absolute path")
        self.root, self.url = root, root.as_uri()

    def put(self, name: BlobName, data: bytes) -> None:
        path = self.root / name.path()
        if path.is_file():
            os.utime(path)  # written again: the sweeper's grace period starts anew, as with a new S3 object
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with tmp.open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())  # the marker that follows promises the bytes survive a crash
        os.replace(tmp, path)

    def get(self, name: BlobName) -> bytes | None:
        try:
            return (self.root / name.path()).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, names: Iterable[BlobName]) -> None:
        for name in names:
            (self.root / name.path()).unlink(missing_ok=True)

    def listing(self) -> Iterator[tuple[BlobName, float]]:
        for path in [*self.root.glob("??/*.png"), *self.root.glob("tenant/*/??/*.png")]:
            name = BlobName.from_path(path.relative_to(self.root).as_posix())
            try:
                if name is not None:
                    yield name, path.stat().st_mtime
            except FileNotFoundError:  # swept or replaced meanwhile
                continue


class S3Store:
    """A bucket (and key prefix) of any S3-compatible store, through boto3; credentials come from the usual AWS
    variables, the endpoint from ``GIFT_S3_ENDPOINT_URL`` (unset: AWS)."""

    DELETE_BATCH = 1000  # the most keys one DeleteObjects request takes

    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None) -> None:
        import boto3  # only deployments that store bytes in S3 need it

        self.bucket, self.prefix = bucket, f"{prefix}/" if prefix else ""
        self.url = f"s3://{bucket}/{prefix}"
        self._s3 = boto3.client("s3", endpoint_url=endpoint_url or None)  # "" (compose's unset) means AWS too
        self._missing = self._s3.exceptions.NoSuchKey

    def _key(self, name: BlobName) -> str:
        return self.prefix + name.path()

    def put(self, name: BlobName, data: bytes) -> None:
        self._s3.put_object(Bucket=self.bucket, Key=self._key(name), Body=data, ContentType=CONTENT_TYPES[name.kind])

    def get(self, name: BlobName) -> bytes | None:
        try:
            data: bytes = self._s3.get_object(Bucket=self.bucket, Key=self._key(name))["Body"].read()  # boto3: untyped
            return data
        except self._missing:
            return None

    def delete(self, names: Iterable[BlobName]) -> None:
        keys = [{"Key": self._key(name)} for name in names]
        for start in range(0, len(keys), self.DELETE_BATCH):
            batch = keys[start : start + self.DELETE_BATCH]
            self._s3.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def listing(self) -> Iterator[tuple[BlobName, float]]:
        pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
        for page in pages:
            for item in page.get("Contents", ()):
                name = BlobName.from_path(item["Key"].removeprefix(self.prefix))
                if name is not None:
                    yield name, item["LastModified"].timestamp()


def sweep(redis: Redis, store: BlobStore, grace_seconds: float, batch: int = 512) -> int:
    """Delete stored bytes whose Redis key expired, written at least ``grace_seconds`` ago; returns how many."""
    cutoff, deleted = time.time() - grace_seconds, 0
    candidates = (name for name, modified in store.listing() if modified < cutoff)
    for chunk in _chunks(candidates, batch):
        with redis.pipeline(transaction=False) as pipe:
            for name in chunk:
                pipe.exists(redis_keys.png(name.sha256, name.owner))
            alive = pipe.execute()
        orphans = [name for name, exists in zip(chunk, alive, strict=True) if not exists]
        store.delete(orphans)
        deleted += len(orphans)
    return deleted


def _chunks(items: Iterable[BlobName], size: int) -> Iterator[list[BlobName]]:
    chunk: list[BlobName] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
