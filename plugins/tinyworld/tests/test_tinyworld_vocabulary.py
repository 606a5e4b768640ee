"""The world's own tokenizer: every world word one token, the same ids in the CLIP and the text-to-image model."""

from __future__ import annotations

import json
import random

import pytest
from open_clip.tokenizer import SimpleTokenizer
from tinyworld import clip
from tinyworld.vocabulary import BPE_FILE, bpe_bytes, learn_merges, vocab_size, words, world_texts
from tinyworld.world import World
from transformers import CLIPTokenizer

from gift_common.clip_tokenizer import write_clip_tokenizer
from services.trainer.models import create_tokenizer


@pytest.fixture(scope="module")
def reference() -> SimpleTokenizer:
    return SimpleTokenizer(bpe_path=str(BPE_FILE), context_length=77)


@pytest.fixture(scope="module")
def captions() -> list[str]:
    return [pair.caption for pair in World(7).pairs(0, 3000)]


def test_the_shipped_file_is_what_the_world_s_words_make():
    assert BPE_FILE.read_bytes() == bpe_bytes(learn_merges(words(world_texts())))


def test_every_word_of_every_caption_is_one_token(reference, captions):
    vocabulary = words(world_texts())
    assert set(words(captions)) <= set(vocabulary)
    assert all(len(reference.encode(word)) == 1 for word in vocabulary)


def test_the_architecture_s_table_fits_the_tokenizer(reference):
    config = json.loads(clip.CONFIG.read_text())
    assert config["text_cfg"]["vocab_size"] == vocab_size() == reference.vocab_size
    assert reference.eot_token_id == vocab_size() - 1  # the text tower pools at the highest id


def test_the_trainer_finds_the_file_beside_the_architecture_from_any_folder(reference, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = "a photo of a red star."
    ids = [reference.sot_token_id, *reference.encode(text), reference.eot_token_id]
    assert len(ids) == 9  # one token per word (six) and the full stop, between the two specials
    assert create_tokenizer(clip.CONFIG)([text])[0].tolist() == ids + [0] * (24 - len(ids))


def test_the_text_to_image_model_s_tokenizer_gives_the_same_ids(reference, captions, tmp_path):
    write_clip_tokenizer(tmp_path, BPE_FILE)
    hf = CLIPTokenizer.from_pretrained(tmp_path)
    rng = random.Random(0)
    other = ["an aeroplane over the sea", "Zebra, STRIPED!", "tiger 42 cats", "naïve café", ""]
    texts = captions[:500] + [" ".join(rng.choice(other) for _ in range(rng.randint(1, 4))) for _ in range(100)]
    expected = [[reference.sot_token_id, *reference.encode(text), reference.eot_token_id] for text in texts]
    assert hf(texts).input_ids == expected
    assert hf.vocab_size == vocab_size() and hf.eos_token_id == vocab_size() - 1
