"""What a run config names besides its datasets (sources.py): methods, concept lists, replay sources, pre-training
probes and shipped CLIP models, registered by name. A config is checked against these names without importing torch;
each implementation loads when a run asks for it (gift_common.plugins.Registry loads a plugin's entry point then too).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gift_common.plugins import Registry
from services.trainer.fields import DEFAULT_TEMPLATE
from services.trainer.presets import PRESETS, Preset
from services.trainer.sources import DATA_DIR

if TYPE_CHECKING:
    from services.trainer.plugins import ConceptList, Method, ProbeSource, ReplaySets, ReplaySource

METHODS: Registry[Method] = Registry("gift.methods", "method", {name: Preset(s) for name, s in PRESETS.items()})


@cache
def imagenet_classnames() -> list[str]:
    """ImageNet's 1,000 class names (CLIP's cleaned wording): the pre-training concepts of METHOD.md."""
    return (DATA_DIR / "imagenet_classnames.txt").read_text().splitlines()


@dataclass(frozen=True)
class ImageNetConcepts:
    template: str = DEFAULT_TEMPLATE

    def names(self) -> list[str]:
        return imagenet_classnames()


CONCEPTS: Registry[ConceptList] = Registry("gift.concepts", "concept list", {"imagenet": ImageNetConcepts()})


def generator_sets(requests: Mapping[str, Any], settings: Any) -> ReplaySets:
    """The built-in replay source, the generator (synthetic.generator_sets), imported when a run starts it."""
    from services.trainer import synthetic

    return synthetic.generator_sets(requests, settings)


REPLAY_SOURCES: Registry[ReplaySource] = Registry("gift.replay", "replay source", {"generator": generator_sets})
PROBES: Registry[ProbeSource] = Registry("gift.probes", "pre-training probe")
# CLIP models a plugin installs with itself, as (architecture JSON, weights file): `model: {shipped: NAME}`.
SHIPPED_MODELS: Registry[Callable[[], tuple[Path, Path]]] = Registry("gift.clip_models", "shipped CLIP model")
