"""The synthetic sets S_t of METHOD.md: prompts drawn from P_t, images from the generator, kept in a local cache.

S_t depends only on the settings and the class names of tasks before t, so every set is known when the run starts
(under synthetic.adapt, a set's jobs also name the adapters of the tasks before t, so each set is asked for when its
task starts: one job per adapter, each image with the seed it has without adapt). A background thread obtains them
in the order the tasks need them (the generator shares its workers among queued jobs, so asking for all at once
would delay the first), while the engine trains. A job's images arrive as one streamed archive
(`GET /v1/jobs/{id}/archive`), one request however many images it holds. Sets are stored by content:
`images/<sha256>.png` and `sets/<request key>.json`; a rerun or a resume reads them without the generator, and
every image's SHA-256 is checked when it arrives and whenever it is read.

Replay images come from a registered source (`registries.REPLAY_SOURCES`, `synthetic.source`): the generator is
built in; a plugin may pair the same prompts with real pre-training images instead (replay distillation on real
data, the reference synthetic data tries to reach). The pre-training concepts of the prompts are a registered
concept list (`registries.CONCEPTS`, `synthetic.concepts`: ImageNet's class names built in) or a file.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from gift_common.client import (
    LONG_POLL_SECONDS,
    GeneratorClient,
    GeneratorError,
    GeneratorHTTPError,
    GeneratorUnavailable,
    IntegrityError,
    JobTimeout,
)
from gift_common.errors import UserError
from gift_common.files import atomic_write
from gift_common.schemas import JobRequest, JobStatus
from gift_common.settings import HomeSettings, load
from services.trainer import distributed
from services.trainer.registries import CONCEPTS

if TYPE_CHECKING:
    from services.trainer.config import SyntheticConfig
    from services.trainer.plugins import ReplaySets

POLL_SECONDS = 1.0  # how long a process that does not fetch waits for another's stored set before looking again
T = TypeVar("T")


# --- the prompts ------------------------------------------------------------------------------------------------


def concept_names(spec: str) -> list[str]:
    """A registered concept list's names, or a text file's (one concept per line, blank lines ignored)."""
    if spec in CONCEPTS:
        return CONCEPTS.get(spec).names()
    path = Path(spec)
    if not path.is_file():
        known = ", ".join(CONCEPTS.names())
        raise UserError(f"synthetic.concepts: {path} is not a file; give one of {known} or a file with one name a line")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise UserError(f"synthetic.concepts: {path} lists no concept")
    return names


def prompt_pool(
    concepts: Sequence[str], concept_template: str, previous: Sequence[tuple[Sequence[str], str]]
) -> list[str]:
    """P_t: every pre-training concept in the concept template, and every class of the earlier tasks in its task's
    template, each prompt once (in a stable order, so that sampling from the pool is reproducible)."""
    prompts = [concept_template.format(c) for c in concepts]
    prompts += [template.format(c) for names, template in previous for c in names]
    return list(dict.fromkeys(prompts))


def set_request(pool: Sequence[str], settings: SyntheticConfig, task_index: int) -> JobRequest:
    """S_t as a generator job: `size` prompts drawn uniformly from P_t, image i with its own seed."""
    rng = random.Random(f"gift-synthetic/{settings.seed}/{task_index}")
    return JobRequest(
        prompts=[rng.choice(pool) for _ in range(settings.size)],
        model=settings.model,
        seed=settings.seed + task_index * settings.size,  # seeds never repeat across the tasks of a run
        num_inference_steps=settings.steps,
        guidance_scale=settings.guidance,
        scheduler=settings.scheduler,
        height=settings.height,
        width=settings.width,
        negative_prompt=settings.negative_prompt,
    )


@dataclass(frozen=True)
class Part:
    """One generator job of a set: the set's images at `indices` (in that order), as `request` makes them."""

    indices: tuple[int, ...]
    request: JobRequest


def whole(request: JobRequest) -> list[Part]:
    """A set made by one job: every set without synthetic.adapt, and any set no adapter applies to."""
    return [Part(tuple(range(len(request.prompts))), request)]


def split_by_adapter(request: JobRequest, adapters: Mapping[str, str], scale: float) -> list[Part]:
    """The set's prompts grouped by the adapter `adapters` names for them (none: the base model), one job a group,
    each image keeping the seed it has in `request`; a set no adapter applies to stays the one job `request`."""
    groups: dict[str | None, list[int]] = {}
    for index, prompt in enumerate(request.prompts):
        groups.setdefault(adapters.get(prompt), []).append(index)
    if list(groups) == [None]:
        return whole(request)
    return [Part(tuple(indices), part_request(request, indices, adapter, scale)) for adapter, indices in groups.items()]


def part_request(request: JobRequest, indices: Sequence[int], adapter: str | None, scale: float) -> JobRequest:
    """The images of `request` at `indices` with their own seeds, made with `adapter` at `scale` where one is named."""
    fields = request.model_dump(exclude={"seed", "seeds", "adapter", "adapter_scale"}, exclude_none=True)
    with_adapter = {} if adapter is None else {"adapter": adapter, "adapter_scale": scale}
    return JobRequest.model_validate({**fields, "prompts": [request.prompts[i] for i in indices],
                                      "seeds": [request.seed_of(i) for i in indices], **with_adapter})  # fmt: skip


class SetCache:
    """Content-addressed store of synthetic sets: PNGs by their SHA-256, and per request the list of its images."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @staticmethod
    def key(request: JobRequest) -> str:
        return hashlib.sha256(request.model_dump_json(exclude_none=True).encode()).hexdigest()

    def image_path(self, sha256: str) -> Path:
        return self.root / "images" / sha256[:2] / f"{sha256}.png"

    def manifest_path(self, request: JobRequest) -> Path:
        return self.root / "sets" / f"{self.key(request)}.json"

    def has_image(self, sha256: str) -> bool:
        return self.image_path(sha256).is_file()

    def load(self, request: JobRequest) -> list[Path] | None:
        """The set's image files in prompt order, every one verified; None if any is missing or corrupt."""
        manifest = self.manifest_path(request)
        if not manifest.is_file():
            return None
        paths = [self.image_path(sha) for sha in json.loads(manifest.read_text())["images"]]
        return paths if all(self._intact(path) for path in paths) else None

    def store_image(self, sha256: str, png: bytes) -> None:
        """Store `png` under its name, once its bytes hash to it: the one check of a downloaded image."""
        if (actual := hashlib.sha256(png).hexdigest()) != sha256:
            raise IntegrityError(sha256, actual)
        atomic_write(self.image_path(sha256), png)

    def store(self, request: JobRequest, shas: Sequence[str], replaced: int) -> list[Path]:
        """Record the set once all of its images are stored, with the number of images the generator's safety
        checker had it draw again (the job's `replaced`); returns their paths."""
        body = {"request": request.model_dump(mode="json", exclude_none=True), "images": list(shas),
                "replaced": replaced}  # fmt: skip
        atomic_write(self.manifest_path(request), json.dumps(body).encode())
        return [self.image_path(sha) for sha in shas]

    def replaced(self, request: JobRequest) -> int | None:
        """The stored set's `replaced`; None for a set stored before the count was kept."""
        count = json.loads(self.manifest_path(request).read_text()).get("replaced")
        return None if count is None else int(count)

    def _intact(self, path: Path) -> bool:
        if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == path.stem:
            return True
        path.unlink(missing_ok=True)  # corrupt: fetched again next time
        return False


def download_set(client: GeneratorClient, cache: SetCache, request: JobRequest, job: JobStatus) -> list[Path]:
    """Store the images of a finished job that the cache lacks, from the job's archive in one request, then the set's
    manifest. Each image is checked against the SHA-256 the job lists for it as it is stored."""
    images = sorted(job.images, key=lambda info: info.index)
    if [info.index for info in images] != list(range(len(request.prompts))):
        raise GeneratorError(f"job {job.id} succeeded but lists {len(images)} of its {len(request.prompts)} images")
    shas = [info.sha256 for info in images]
    if not all(cache.has_image(sha) for sha in shas):
        with client.archive(job.id) as chunks:
            received = store_archive(cache, shas, ChunkReader(chunks))
        if received < len(shas):
            raise GeneratorError(f"the archive of job {job.id} ended after {received} of its {len(shas)} images")
    return cache.store(request, shas, job.replaced)


def store_archive(cache: SetCache, shas: Sequence[str], tar_file: BinaryIO) -> int:
    """Store the PNGs of a streamed archive (`{index:06d}.png`, API.md) that the cache lacks; the number received."""
    received = 0
    try:
        with tarfile.open(fileobj=tar_file, mode="r|") as tar:
            for member in tar:
                stem, _, kind = member.name.partition(".")
                if kind != "png":
                    continue  # the prompt and parameters: the trainer has them from its request
                file = tar.extractfile(member)
                if file is None or not (stem.isdigit() and int(stem) < len(shas)):
                    raise GeneratorError(f"the archive holds {member.name!r}, not an image of this job")
                if not cache.has_image(sha := shas[int(stem)]):
                    cache.store_image(sha, file.read())
                received += 1
    except tarfile.TarError as error:
        raise GeneratorError(f"the archive is not a readable tar: {error}") from None
    return received


class ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks, for tarfile to read a streamed archive from."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks, self._pending = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            self._pending = next(self._chunks, b"")
            if not self._pending:
                return 0  # the end of the stream
        size = min(len(buffer), len(self._pending))
        buffer[:size], self._pending = self._pending[:size], self._pending[size:]
        return size


class SyntheticSets:
    """Obtains the sets of a run's tasks in order in a background thread; `paths(task)` waits for the task's set.

    A set is one job, or several (`parts`: synthetic.adapt's, one per adapter), each cached as a set of its own.
    One job at a time, so that the set needed first is made first; the next job is submitted as soon as the
    current one is generated, so the generator works on it while this one downloads. Only the process that
    `fetches` talks to the generator (one per machine under torchrun); the others wait for it to store each set in
    the shared cache. A stopped run leaves its job to the generator, whose cache then serves a rerun.
    """

    def __init__(
        self,
        requests: dict[str, JobRequest],
        cache: SetCache,
        client_factory: Callable[[], GeneratorClient],
        *,
        fetch: bool = True,
        timeout: float | None = None,
        parts: Mapping[str, list[Part]] | None = None,
    ) -> None:
        self.requests, self.cache, self.timeout, self.fetch = requests, cache, timeout, fetch
        self.parts = {task: whole(request) for task, request in requests.items()} | dict(parts or {})
        self._client_factory = client_factory
        self._client: GeneratorClient | None = None
        self._queue = [part.request for task in requests for part in self.parts[task]]  # in the order needed
        self._jobs: dict[int, str] = {}
        self._sets: dict[str, Future[list[Path]]] = {task: Future() for task in requests}
        self._stop = threading.Event()
        threading.Thread(target=self._run, name="synthetic-sets", daemon=True).start()

    def ready(self, task: str) -> bool:
        return self._sets[task].done()

    def images(self, task: str) -> list[Path]:
        """The task's images as SyntheticPairs takes them (what `WorldSets` also answers)."""
        return self.paths(task)

    def paths(self, task: str) -> list[Path]:
        """The image files of the task's set, in prompt order (waits while the set is being made)."""
        try:
            return self._sets[task].result()
        except GeneratorUnavailable as error:
            raise UserError(
                f"synthetic set of task {task}: {error}; start the generator (gift generator serve/worker) or set "
                "synthetic.generator_url or GIFT_GENERATOR_URL"
            ) from None
        except (GeneratorError, TimeoutError) as error:
            raise UserError(f"synthetic set of task {task}: {error}") from None

    def replaced(self, task: str) -> int | None:
        """The images of the task's set that the safety checker blacked out and the generator drew again, as the
        set's job reported them (images its cache served count 0); None for a set stored before they were counted."""
        self.paths(task)
        counts = [self.cache.replaced(part.request) for part in self.parts[task]]
        return None if None in counts else sum(count for count in counts if count is not None)

    def close(self) -> None:
        """Stop asking for sets; a wait in progress ends within one long-poll (LONG_POLL_SECONDS)."""
        self._stop.set()

    def _run(self) -> None:
        try:
            index = 0
            for task, future in self._sets.items():
                parts = self.parts[task]
                try:
                    future.set_result(stitched(parts, [self._obtain(index + i) for i in range(len(parts))]))
                except Exception as error:  # handed to whoever waits for this set
                    future.set_exception(error)
                index += len(parts)
        finally:
            if self._client is not None:
                self._client.close()

    def _obtain(self, index: int) -> list[Path]:
        request = self._queue[index]
        cached = self.cache.load(request)
        if cached is not None:
            return cached
        if not self.fetch:
            stored = f"a set stored in {self.cache.manifest_path(request)}"
            return self._until(lambda: self.cache.load(request), stored, pause=POLL_SECONDS)
        job = self._generated(self._jobs.get(index) or self._submit(index))
        following = index + 1
        if following < len(self._queue) and not self.cache.manifest_path(self._queue[following]).exists():
            self._submit(following)  # generated while this set downloads and the task trains
        try:
            return download_set(self._generator(), self.cache, request, job)
        except GeneratorHTTPError as error:
            if error.status_code != 410:
                raise
        # the server evicted images between the job's end and this download: the same request makes them again
        return download_set(self._generator(), self.cache, request, self._generated(self._submit(index)))

    def _submit(self, index: int) -> str:
        self._jobs[index] = self._generator().submit(self._queue[index]).id
        return self._jobs[index]

    def _generated(self, job_id: str) -> JobStatus:
        return self._until(lambda: self._finished(job_id), f"job {job_id}", pause=0)  # each poll waits itself

    def _finished(self, job_id: str) -> JobStatus | None:
        """The job once it has ended, else None after one long-poll (no longer than the run's own timeout)."""
        poll = LONG_POLL_SECONDS if self.timeout is None else min(LONG_POLL_SECONDS, self.timeout)
        try:
            return self._generator().wait(job_id, timeout=poll, progress=False)
        except JobTimeout:
            return None

    def _until(self, outcome: Callable[[], T | None], what: str, pause: float) -> T:
        """Call `outcome` every `pause` seconds until it is not None, the run stops, or the timeout passes."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while (result := outcome()) is None:
            if self._stop.is_set():
                raise GeneratorError(f"stopped waiting for {what}")
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"no {what} after {self.timeout:g} s")
            time.sleep(pause)
        return result

    def _generator(self) -> GeneratorClient:
        if self._client is None:
            self._client = self._client_factory()
        return self._client


def stitched(parts: Sequence[Part], paths: Sequence[list[Path]]) -> list[Path]:
    """A set's images in prompt order, from its parts' images."""
    placed: dict[int, Path] = {}
    for part, files in zip(parts, paths, strict=True):
        placed |= dict(zip(part.indices, files, strict=True))
    return [placed[index] for index in range(len(placed))]


class TaskByTask:
    """Replay sets asked for one task at a time, when the task first needs its set (synthetic.adapt: a set's parts
    are known once the adapter of the task before it exists). `open_set(task)` makes the sets of that task alone."""

    def __init__(self, requests: Mapping[str, JobRequest], open_set: Callable[[str], ReplaySets]) -> None:
        self.requests, self._open_set = requests, open_set
        self._current: tuple[str, ReplaySets] | None = None

    def ready(self, task: str) -> bool:
        return self._sets(task).ready(task)

    def images(self, task: str) -> Sequence[Path] | np.ndarray:
        return self._sets(task).images(task)

    def replaced(self, task: str) -> int | None:
        return self._sets(task).replaced(task)

    def close(self) -> None:
        if self._current is not None:
            self._current[1].close()

    def _sets(self, task: str) -> ReplaySets:
        if self._current is None or self._current[0] != task:
            self.close()
            self._current = task, self._open_set(task)
        return self._current[1]


def default_cache_dir(settings: SyntheticConfig) -> Path:
    return settings.cache_dir or load(HomeSettings).home / "synthetic"


def generator_sets(
    requests: Mapping[str, JobRequest], settings: SyntheticConfig, parts: Mapping[str, list[Part]] | None = None
) -> SyntheticSets:
    """The built-in replay source: the generator makes the sets, one process per machine asks for them."""
    return SyntheticSets(
        dict(requests),
        SetCache(default_cache_dir(settings)),
        lambda: GeneratorClient(settings.generator_url),
        fetch=distributed.local_rank() == 0,
        timeout=settings.timeout,
        parts=parts,
    )


class SyntheticPairs(Dataset):
    """(image, prompt tokens, index) of one replay set; images with the evaluation transform, no augmentation.

    Images are PNG files (the generator's, from the cache) or uint8 arrays in memory (a source's real images).
    """

    def __init__(self, images: Sequence[Path] | np.ndarray, tokens: torch.Tensor, transform: Callable) -> None:
        if len(images) != len(tokens):
            raise ValueError(f"{len(images)} images for {len(tokens)} prompts")
        self.images, self.tokens, self.transform = images, tokens, transform

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: Sequence[int]) -> SyntheticPairs:
        """The pairs at `indices`, renumbered 0..len(indices)−1 in that order (synthetic.filter's kept pairs)."""
        chosen = list(indices)
        images = self.images[chosen] if isinstance(self.images, np.ndarray) else [self.images[i] for i in chosen]
        return SyntheticPairs(images, self.tokens[chosen], self.transform)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        item = self.images[index]
        if isinstance(item, np.ndarray):
            return self.transform(Image.fromarray(item)), self.tokens[index], index
        with Image.open(item) as image:
            return self.transform(image), self.tokens[index], index
