"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest
from tinyworld.tokenizer import write_clip_tokenizer
from transformers import CLIPTokenizer


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> CLIPTokenizer:
    """The generator pipeline's tokenizer, as the files the project writes load it."""
    directory = tmp_path_factory.mktemp("tokenizer")
    write_clip_tokenizer(directory)
    return CLIPTokenizer.from_pretrained(directory)
