"""Pytest fixtures the project's tests and the tiny world's share (``pytest_plugins`` in their conftest.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import CLIPTokenizer

from gift_common.clip_tokenizer import write_clip_tokenizer


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch thread for a module (its tests opt in), restored after it: tiny matrices ran up to 30x slower on two
    threads of a busy 2-core machine, and one is what the tiny configs ask anyway."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> CLIPTokenizer:
    """open_clip's tokenizer as the Hugging Face files the project writes (the stand-ins' and the tests' pipelines)."""
    directory = tmp_path_factory.mktemp("tokenizer")
    write_clip_tokenizer(directory)
    return CLIPTokenizer.from_pretrained(directory)


@pytest.fixture(scope="module")
def tiny_standins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The stand-ins' writer with SD 1.5's layout cut to toy widths (and RN50 for the CLIP): the whole path, fast."""
    from services.testing import standins

    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {"block_out_channels": [32, 32, 64, 64], "norm_num_groups": 8, "sample_size": 8}.items():
            patch.setitem(standins.UNET_CONFIG, key, value)
        patch.setitem(standins.UNET_CONFIG, "cross_attention_dim", 32)
        patch.setitem(standins.VAE_CONFIG, "block_out_channels", [8, 8, 16, 16])
        patch.setitem(standins.VAE_CONFIG, "norm_num_groups", 4)
        for key, value in text.items():
            patch.setitem(standins.TEXT_ENCODER_CONFIG, key, value)
        patch.setattr(standins, "VIT_NAME", "RN50")  # the smallest built-in architecture; the call is the same
        return standins.write_standins(tmp_path_factory.mktemp("standins"))


SAFETY_PROMPTS = [f"a photo of a {name}." for name in ("cat", "dog", "boat", "tree")]  # seeds 0..3, 2 PNDM steps


@pytest.fixture(scope="module")
def checked_sd_dir(tiny_standins: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SD stand-in with a safety checker that flags about half of SAFETY_PROMPTS' first draws."""
    import io

    import numpy as np
    from PIL import Image

    from services.generator.worker.synthesis import RuntimeOptions, generate, load_model
    from services.testing.standins import SD15_NAME, add_safety_checker

    directory = tmp_path_factory.mktemp("checked") / "sd"
    shutil.copytree(tiny_standins[SD15_NAME], directory)
    plain = load_model("plain", directory, torch.device("cpu"), RuntimeOptions(scheduler="directory"))
    n = len(SAFETY_PROMPTS)
    drawn = generate(plain, prompts=SAFETY_PROMPTS, negative_prompts=[None] * n, seeds=list(range(n)),
                     num_inference_steps=2, guidance_scale=5.0, height=plain.height, width=plain.width)  # fmt: skip
    add_safety_checker(directory, [np.asarray(Image.open(io.BytesIO(png)).convert("RGB")) for png in drawn.pngs])
    return directory
