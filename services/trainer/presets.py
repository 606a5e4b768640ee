"""The built-in methods (METHOD.md): the weight of each loss term, 0 switching it off, and the settings the terms share.
Light, so that a run config is checked without importing torch; methods.py builds the terms from these settings.
Each preset is registered as a method (registries.METHODS), beside those plugins register under `gift.methods`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.trainer.methods import LossTerm


@dataclass(frozen=True)
class MethodSettings:
    """Term weights (0 switches a term off) and shared settings; a config file maps onto these fields."""

    distill: float = 0.0
    ita: float = 0.0
    awc: float = 0.0
    l2: float = 0.0
    ewc: float = 0.0
    lwf: float = 0.0
    tau: float = 2.0
    label_smoothing: float = 0.2
    ewc_batches: int = 10


GIFT = MethodSettings(distill=1.0, ita=0.25, awc=1.0)

PRESETS: dict[str, MethodSettings] = {
    "ft": MethodSettings(),
    "l2": MethodSettings(l2=1.0),
    "ewc": MethodSettings(ewc=1.0),
    "lwf": MethodSettings(lwf=1.0),
    # ZSCL's setting when the replay set holds real pre-training images: the reference synthetic data tries to reach
    "replay_distill": MethodSettings(distill=1.0),
    "gift": GIFT,
    "gift_no_distill": replace(GIFT, distill=0.0),
    "gift_no_ita": replace(GIFT, ita=0.0),
    "gift_no_awc": replace(GIFT, awc=0.0),
    "gift_l2": replace(GIFT, awc=0.0, l2=1.0),
}


@dataclass(frozen=True)
class Preset:
    """A built-in method (plugins.Method): METHOD.md's terms, weighted as `defaults` says."""

    defaults: MethodSettings

    def build_terms(self, settings: MethodSettings) -> list[LossTerm]:
        from services.trainer.methods import build_terms  # torch: only when a run starts

        return build_terms(settings)


def preset(name: str, **overrides: Any) -> MethodSettings:
    """A named method (PRESETS), with any setting changed, e.g. `preset("gift", ita=0.5)`."""
    if name not in PRESETS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)
