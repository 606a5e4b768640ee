"""The synthetic sets S_t of METHOD.md: prompts drawn from P_t, images from the generator, kept in a local cache.

S_t depends only on the settings and the class names of tasks before t, so every set is known when the run starts.
A background thread obtains them in the order the tasks need them (the generator shares its workers among queued
jobs, so asking for all at once would delay the first), while the engine trains. Sets are stored by content:
`images/<sha256>.png` and `sets/<request key>.json`; a rerun or a resume reads them without the generator, and
every image's SHA-256 is checked when it arrives and whenever it is read.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from gift_common.client import GeneratorClient, GeneratorError, GeneratorUnavailable
from gift_common.errors import UserError
from gift_common.schemas import JobRequest
from gift_common.settings import Settings
from services.trainer.config import SyntheticConfig

POLL_SECONDS = 1.0  # how often a process that does not fetch looks for the set another process stores


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
        height=settings.height,
        width=settings.width,
        negative_prompt=settings.negative_prompt,
    )


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
        if hashlib.sha256(png).hexdigest() != sha256:
            raise GeneratorError(f"image {sha256} arrived with other bytes; not stored")
        atomic_write(self.image_path(sha256), png)

    def store(self, request: JobRequest, shas: Sequence[str]) -> list[Path]:
        """Record the set once all of its images are stored; returns their paths."""
        body = {"request": request.model_dump(mode="json", exclude_none=True), "images": list(shas)}
        atomic_write(self.manifest_path(request), json.dumps(body).encode())
        return [self.image_path(sha) for sha in shas]

    def _intact(self, path: Path) -> bool:
        if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == path.stem:
            return True
        path.unlink(missing_ok=True)  # corrupt: fetched again next time
        return False


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def fetch_set(client: GeneratorClient, cache: SetCache, request: JobRequest, timeout: float | None) -> list[Path]:
    """Generate the set (images the generator already has cost no GPU time), download what is not stored locally."""
    job = client.submit(request)
    job = client.wait(job.id, timeout=timeout, progress=False)
    images = sorted(job.images, key=lambda info: info.index)
    if [info.index for info in images] != list(range(len(request.prompts))):
        raise GeneratorError(f"job {job.id} succeeded but lists {len(images)} of its {len(request.prompts)} images")
    for sha in dict.fromkeys(info.sha256 for info in images):
        if not cache.has_image(sha):
            cache.store_image(sha, client.image(sha))
    return cache.store(request, [info.sha256 for info in images])


class SyntheticSets:
    """Obtains the sets of a run's tasks one after another in a background thread; `paths(t)` waits for set t.

    Only the process that `fetches` talks to the generator (one per machine under torchrun); the others wait for
    it to store each set in the shared cache. Jobs left running when a run stops are kept by the generator, so a
    rerun finds their images there.
    """

    def __init__(
        self,
        requests: dict[str, JobRequest],
        cache: SetCache,
        client_factory: Callable[[], GeneratorClient],
        *,
        fetch: bool = True,
        timeout: float | None = None,
    ) -> None:
        self.requests, self.cache, self.timeout, self.fetch = requests, cache, timeout, fetch
        self._client_factory = client_factory
        self._client: GeneratorClient | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="synthetic-sets")
        self._sets: dict[str, Future[list[Path]]] = {
            task: self._executor.submit(self._obtain, request) for task, request in requests.items()
        }

    def ready(self, task: str) -> bool:
        return self._sets[task].done()

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

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._client is not None:
            self._client.close()

    def _obtain(self, request: JobRequest) -> list[Path]:
        cached = self.cache.load(request)
        if cached is not None:
            return cached
        if not self.fetch:
            return self._wait_for_store(request)
        if self._client is None:
            self._client = self._client_factory()
        return fetch_set(self._client, self.cache, request, self.timeout)

    def _wait_for_store(self, request: JobRequest) -> list[Path]:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while (paths := self.cache.load(request)) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"no set stored under {self.cache.manifest_path(request)} after {self.timeout:g} s")
            time.sleep(POLL_SECONDS)
        return paths


def default_cache_dir(settings: SyntheticConfig) -> Path:
    return settings.cache_dir or Settings().home / "synthetic"


class SyntheticPairs(Dataset):
    """(image, prompt tokens, index) of one synthetic set; images with the evaluation transform, no augmentation."""

    def __init__(self, paths: Sequence[Path], tokens: torch.Tensor, transform: Callable) -> None:
        if len(paths) != len(tokens):
            raise ValueError(f"{len(paths)} images for {len(tokens)} prompts")
        self.paths, self.tokens, self.transform = list(paths), tokens, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        with Image.open(self.paths[index]) as image:
            return self.transform(image), self.tokens[index], index
