"""Open_clip models from names, local JSON architectures and local checkpoints, never from the network.

Real scale and the embedded default use the same calls; only the files differ. A missing file is a clear error
that says what to put where, instead of a silent download.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import open_clip
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from torch import nn

from gift_common.manifest import verify as verify_manifest

REMOTE_SCHEMA = "hf-hub:"
# A tiny CLIP (ViT 32 px, two layers each side) for smoke runs, tests and benchmarks on a CPU.
TINY_TEST_ARCHITECTURE = Path(__file__).parent / "data" / "gift-test-tiny.json"


def resolve_architecture(name_or_config: str | Path) -> str:
    """The open_clip model name for a built-in name, a `local-dir:` folder, or a JSON architecture file.

    A JSON file is registered with open_clip under its file stem, so the tokenizer lookup finds it too.
    """
    name = str(name_or_config)
    if name.startswith(REMOTE_SCHEMA):
        raise ValueError(f"{name}: models are never downloaded; give a local folder as 'local-dir:<path>'")
    path = Path(name)
    if path.suffix == ".json":
        if not path.is_file():
            raise FileNotFoundError(f"architecture config {path} not found: put the open_clip model JSON there")
        open_clip.add_model_config(path)
        return path.stem
    if name not in open_clip.list_models() and not name.startswith("local-dir:"):
        raise ValueError(f"unknown architecture {name!r}: use an open_clip model name or a JSON config path")
    return name


def create_model(
    name_or_config: str | Path, pretrained: str | Path | None = None, device: str | torch.device = "cpu"
) -> nn.Module:
    """An open_clip model with random weights, or with the weights of a local checkpoint file.

    `pretrained` must be a file: open_clip's tags ('openai', 'laion2b_…') would download and are refused.
    """
    if pretrained is not None and not Path(pretrained).is_file():
        raise FileNotFoundError(
            f"checkpoint {pretrained} not found: put the model's weights file (a state dict) at that path"
        )
    if pretrained is not None:
        verify_manifest(Path(pretrained))  # shipped weights with a manifest: a damaged file is a clear error
    return open_clip.create_model(
        resolve_architecture(name_or_config),
        pretrained=None if pretrained is None else str(pretrained),
        device=device,
        pretrained_image=False,
        pretrained_text=False,
    )


def create_tokenizer(name_or_config: str | Path) -> Callable[..., torch.Tensor]:
    """The tokenizer that goes with the architecture (open_clip's BPE for CLIP text towers, bundled, offline)."""
    return open_clip.get_tokenizer(resolve_architecture(name_or_config), **_own_bpe(name_or_config))


def _own_bpe(name_or_config: str | Path) -> dict[str, str]:
    """A JSON architecture may name its own BPE file (``text_cfg.tokenizer_kwargs.bpe_path``) beside itself;
    open_clip would look for a relative path in the working directory, so it is resolved against the JSON's folder."""
    path = Path(name_or_config)
    if path.suffix != ".json":
        return {}
    kwargs = json.loads(path.read_text(encoding="utf-8")).get("text_cfg", {}).get("tokenizer_kwargs") or {}
    bpe = kwargs.get("bpe_path")
    return {"bpe_path": str(path.parent / bpe)} if bpe else {}


def image_transforms(model: nn.Module) -> tuple[Callable, Callable]:
    """(train, eval) preprocessing for the model's image size: augmentation for task data, none for replay."""
    cfg = PreprocessCfg(**open_clip.get_model_preprocess_cfg(model))
    return image_transform_v2(cfg, is_train=True), image_transform_v2(cfg, is_train=False)
