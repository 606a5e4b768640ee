"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest
from transformers import CLIPTokenizer

from gift_common.clip_tokenizer import write_clip_tokenizer


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> CLIPTokenizer:
    """The generator pipeline's tokenizer, as the files the project writes load it."""
    directory = tmp_path_factory.mktemp("tokenizer")
    write_clip_tokenizer(directory)
    return CLIPTokenizer.from_pretrained(directory)
