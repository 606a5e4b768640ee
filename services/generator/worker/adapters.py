"""LoRA adapters loaded into a worker's pipelines on demand, kept within a count (per model) and a byte limit.

A pipeline holds its loaded adapters side by side (diffusers' ``load_lora_weights`` under an adapter name, PEFT
layers beside the base weights); a call uses one of them at its scale (``set_adapters``) or none
(``disable_lora``), so changing adapters between batches never reloads the base model. The least recently used
adapter goes (``delete_adapters``) when a new one would pass a limit. The batcher groups a call's images by
adapter and scale, so a switch happens at most once per call.

With a compiled UNet (GIFT_COMPILE_UNET) a new adapter's layers would make torch.compile compile again; diffusers'
hot-swap (``pipeline.enable_lora_hotswap(target_rank=GIFT_MAX_ADAPTER_RANK)`` before compiling, then
``load_lora_weights(..., hotswap=True, adapter_name=<the one slot>)``) swaps weights in place instead. That mode is
not built yet: a worker with a compiled UNet loads adapters as above and recompiles.
"""

from __future__ import annotations

import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.generator.worker.synthesis import LoadedModel


class AdapterGone(Exception):
    """The adapter's file is no longer stored: it was deleted after its jobs were queued."""


def deleted(adapter: str) -> str:
    """Why a job whose adapter was deleted failed: the error its tenant reads."""
    return f"adapter {adapter} was deleted while the job was queued"


@dataclass(frozen=True)
class Switch:
    """What preparing a pipeline call's adapter took: a load (a cache miss), and the seconds of a change."""

    loaded: bool
    hit: bool  # the adapter was loaded already
    seconds: float | None  # None: the pipeline already had this adapter and scale (or none) active


class AdapterCache:
    """``fetch(id)`` returns an adapter's file, or None when it is gone; files are staged under ``directory`` for
    diffusers to read (it reads the adapter's own settings, such as alpha, from the file's metadata)."""

    def __init__(self, fetch: Callable[[str], bytes | None], directory: Path, max_count: int, max_bytes: int):
        self.fetch, self.directory, self.max_count, self.max_bytes = fetch, directory, max_count, max_bytes
        # (model name, id) -> (the model, the file's bytes), least recently used first
        self._loaded: OrderedDict[tuple[str, str], tuple[LoadedModel, int]] = OrderedDict()
        self._active: dict[str, tuple[str, float] | None] = {}  # model -> (id, scale) in use

    @property
    def loaded_bytes(self) -> int:
        return sum(size for _, size in self._loaded.values())

    def loaded(self, model: str) -> list[str]:
        """The adapters loaded into ``model``'s pipeline, least recently used first."""
        return [adapter for name, adapter in self._loaded if name == model]

    def activate(self, model: LoadedModel, adapter: str | None, scale: float) -> Switch:
        """Make ``model``'s next call use ``adapter`` at ``scale`` (None: the base model alone)."""
        wanted = None if adapter is None else (adapter, scale)
        current = self._active.get(model.name)
        hit = adapter is not None and (model.name, adapter) in self._loaded
        if wanted == current:
            return Switch(loaded=False, hit=hit, seconds=None)
        started = time.perf_counter()
        if adapter is None:
            model.pipeline.disable_lora()
        else:
            if hit:
                self._loaded.move_to_end((model.name, adapter))
            else:
                self._load(model, adapter)
            if current is None:
                model.pipeline.enable_lora()
            model.pipeline.set_adapters([adapter_name(adapter)], adapter_weights=[scale])
        self._active[model.name] = wanted
        return Switch(loaded=not hit and adapter is not None, hit=hit, seconds=time.perf_counter() - started)

    def base(self, model: LoadedModel) -> None:
        """Put ``model`` on its base weights alone, whatever was active: around a training, which adds and deletes
        its own LoRA (PEFT may make a loaded adapter active when one is deleted)."""
        if self.loaded(model.name):
            model.pipeline.disable_lora()
        self._active[model.name] = None

    def _load(self, model: LoadedModel, adapter: str) -> None:
        data = self.fetch(adapter)
        if data is None:
            raise AdapterGone(deleted(adapter))
        self._make_room(model.name, len(data))
        self.directory.mkdir(parents=True, exist_ok=True)
        # this process's own file, gone once loaded: workers sharing GIFT_HOME never read each other's
        with tempfile.NamedTemporaryFile(dir=self.directory, prefix=f".{adapter[:16]}.", suffix=".safetensors") as file:
            file.write(data)
            file.flush()
            try:
                model.pipeline.load_lora_weights(file.name, adapter_name=adapter_name(adapter))
            except Exception:
                self._unload(model, adapter)  # whatever layers it got before failing must not stay in the pipeline
                raise
        self._loaded[(model.name, adapter)] = (model, len(data))

    def _make_room(self, model: str, size: int) -> None:
        """Unload least recently used adapters until one more of ``size`` bytes fits: the model's oldest while it
        has its count, then anyone's oldest while the bytes would pass the limit."""
        while len(mine := self.loaded(model)) >= self.max_count:
            owner, _ = self._loaded[(model, mine[0])]
            self._unload(owner, mine[0])
        while self._loaded and self.loaded_bytes + size > self.max_bytes:
            (_, adapter), (owner, _) = next(iter(self._loaded.items()))
            self._unload(owner, adapter)

    def _unload(self, model: LoadedModel, adapter: str) -> None:
        name = adapter_name(adapter)
        if name in _names(model):
            model.pipeline.delete_adapters([name])
        self._loaded.pop((model.name, adapter), None)
        active = self._active.get(model.name)
        if active is not None and active[0] == adapter:
            self._active[model.name] = None
            if self.loaded(model.name):  # PEFT makes another loaded adapter the active one: back to the base
                model.pipeline.disable_lora()


def adapter_name(adapter: str) -> str:
    """The name an adapter has inside a pipeline: PEFT's names must be valid module names."""
    return f"gift_{adapter[:32]}"


def _names(model: LoadedModel) -> set[str]:
    """The adapters the pipeline holds, whichever of its components holds them."""
    return {name for names in model.pipeline.get_list_adapters().values() for name in names}
