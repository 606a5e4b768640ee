"""A stub of the generator client for the trainer's tests: jobs answered in memory, each image a small PNG of its own
(prompt, seed), archives streamed in chunks as the API streams them."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

from PIL import Image

from gift_common.client import GeneratorHTTPError
from gift_common.schemas import ImageInfo, JobRequest, JobStatus


def png(prompt: str, seed: int) -> bytes:
    """A distinct small PNG for each (prompt, seed), as a generator would make."""
    shade = int(hashlib.sha256(f"{prompt}/{seed}".encode()).hexdigest()[:2], 16)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, 255 - shade, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


class FakeGenerator:
    """The three client calls the trainer makes, answered in memory; counts them. `archives` says what the archives
    hold, in turn (then whole ones): "whole", "evicted" (a 410), "corrupt" (one image's bytes changed), "short"
    (the stream ends one image early)."""

    def __init__(self, archives: Sequence[str] = ()) -> None:
        self.calls: Counter[str] = Counter()
        self.order: list[str] = []
        self.store: dict[str, bytes] = {}
        self.jobs: dict[str, JobRequest] = {}
        self.archives = list(archives)
        self.replaced = 0  # what every job reports of its safety checker's redraws

    def submit(self, request: JobRequest) -> JobStatus:
        self._record("submit")
        self.jobs[str(len(self.jobs))] = request
        return self._status(str(len(self.jobs) - 1))

    def wait(self, job_id: str, **_: object) -> JobStatus:
        self._record("wait")
        return self._status(job_id)

    @contextmanager
    def archive(self, job_id: str) -> Iterator[Iterator[bytes]]:
        self._record("archive")
        kind = self.archives.pop(0) if self.archives else "whole"
        if kind == "evicted":
            raise GeneratorHTTPError(410, f"images [0] of job {job_id} were evicted", "GET", "/archive")
        images = self._status(job_id).images
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w|") as tar:
            for info in images[:-1] if kind == "short" else images:
                png = self.store[info.sha256]
                for name, data in ((f"{info.index:06d}.png", png[:-1] + b"!" if kind == "corrupt" else png),
                                   (f"{info.index:06d}.txt", info.prompt.encode())):  # fmt: skip
                    member = tarfile.TarInfo(name)
                    member.size = len(data)
                    tar.addfile(member, io.BytesIO(data))
        data = buffer.getvalue()
        yield iter([data[i : i + 1000] for i in range(0, len(data), 1000)])

    def _record(self, call: str) -> None:
        self.calls[call] += 1
        if not self.order or self.order[-1] != call:
            self.order.append(call)

    def close(self) -> None:
        pass

    def _status(self, job_id: str) -> JobStatus:
        request, images = self.jobs[job_id], []
        for i, prompt in enumerate(request.prompts):
            data = png(prompt, request.seed_of(i))
            sha = hashlib.sha256(data).hexdigest()
            self.store[sha] = data
            images.append(
                ImageInfo(index=i, prompt=prompt, seed=request.seed_of(i), sha256=sha, url=f"/v1/images/{sha}")
            )
        now = datetime.now(UTC)
        return JobStatus(id=job_id, status="succeeded", total=len(images), done=len(images), cached=0,
                         replaced=self.replaced, created_at=now, finished_at=now, images=images)  # fmt: skip
