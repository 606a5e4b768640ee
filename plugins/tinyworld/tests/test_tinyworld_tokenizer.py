"""The HF tokenizer written from open_clip's BPE file must give open_clip's ids, so one text encoder serves both."""

from __future__ import annotations

import random
import unicodedata

import open_clip
import pytest
from open_clip.tokenizer import basic_clean, whitespace_clean
from tinyworld.tokenizer import normalize_prompt
from transformers import CLIPTokenizer

BOS, EOS, LENGTH = 49406, 49407, 77

EDGE_CASES = [
    "",
    "a photo of a cat",
    "A PHOTO Of A Cat!!",
    "it's a dog's life, don't you think? I'LL SEE, we'd've",
    "'s 't 're 've 'm 'll 'd 'S 'T",
    "tom &amp; jerry &lt;b&gt;bold&lt;/b&gt; &#39;quoted&#39; &quot;x&quot; &nbsp;gap &copy 2024 &amp;amp;",
    "<b>bold</b> &amp; <i>it</i>",
    "“curly” ‘quotes’ and ʼapostrophe",
    "ﬁne ﬂower ĳssel ǆ ŉ",
    "ｆｕｌｌ　ｗｉｄｔｈ ＡＢＣ １２３ ｶﾀｶﾅ",
    "mojibake: cafÃ© â€™s",
    "ΟΔΟΣ Σίσυφος ΣΣ",
    "İstanbul İ\u0338 DİYARBAKIR",
    "e\u0301 a\u0308 decomposed",
    "a\u0345b",
    "emoji 👍🏽 🇫🇷 👨‍👩‍👧 ❤️ 🙂🙂🙂",
    "tabs\tnewlines\n\rcarriage\u2028nbsp\xa0ideo\u3000space   runs",
    "control\x00\x07\x1b[31m\x1c\x7f\x85\x9d chars \ufeff\u200b\u200d\u206a",
    "<|startoftext|> <|endoftext|> <|ENDOFTEXT|> x<|endoftext|>y !<|endoftext|>!",
    "<start_of_text> <END_OF_TEXT> a<end_of_text>b !<start_of_text>",
    "#hashtag ## ### @user ... …",
    "3.14159 1,000,000 ٣٤ ²½ Ⅻ",
    "naïve café résumé Ångström Øre ß ẞ",
    "日本語のテキスト 中文 한국어 العربية עברית हिन्दी",
    "word " * 120,
    "supercalifragilisticexpialidocious" * 10,
]


@pytest.fixture(scope="module")
def reference() -> open_clip.tokenizer.SimpleTokenizer:
    return open_clip.get_tokenizer("ViT-B-32")


def open_clip_ids(reference, texts: list[str]) -> list[list[int]]:
    """open_clip's ids, its 0 padding turned into the HF pad id (the content always ends with a nonzero EOS)."""
    rows = []
    for row in reference(texts).tolist():
        while row[-1] == 0:
            row.pop()
        rows.append(row + [EOS] * (LENGTH - len(row)))
    return rows


def hf_ids(tokenizer: CLIPTokenizer, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, padding="max_length", max_length=LENGTH, truncation=True).input_ids


def plain_text(rng: random.Random) -> str:
    """Caption-like text that needs no cleaning: ids must agree without normalize_prompt."""
    words = ["cat", "Dog", "RED", "ball", "it's", "don't", "naïve", "Café", "über", "中文", "🙂", "👍🏽", "x2", "3.5"]
    punct = [",", ".", "!", "?", "-", "(", ")", ":", ";", "'", '"', "/", "#", "@", "%", "+", "="]
    spaces = [" ", "  ", "\t", "\n", " \n "]
    pieces = [rng.choice(words) + rng.choice(["", "", rng.choice(punct)]) for _ in range(rng.randint(0, 90))]
    return "".join(piece + rng.choice(spaces) for piece in pieces)


WIDE = [(0x20, 0x7E)] * 6 + [
    (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x4FF), (0x590, 0x6FF), (0x900, 0x97F), (0x3040, 0x30FF),
    (0x4E00, 0x4FFF), (0xAC00, 0xAD00), (0x1F300, 0x1F64F), (0x1F900, 0x1F9FF), (0xFF00, 0xFFEF),
    (0x2000, 0x2BFF), (0xFB00, 0xFB4F), (0x0, 0x1F), (0x7F, 0x9F), (0x0, 0x10FFFF),
]  # fmt: skip
FRAGMENTS = [
    "&amp;", "&#39;", "&lt;", "&gt;", "&quot;", "&#x1F600;", "&amp;amp;", "&eacute;", "'s", "'T", "'LL", "<b>",
    "<|endoftext|>", "<start_of_text>", "<END_OF_TEXT>", "Ã©", "â€™", "İ", "Σ", "\u200d", "\ufe0f", "👍🏽",
]  # fmt: skip
WHITESPACE = [" ", "   ", "\t", "\n", "\r\n", "\x0b", "\x0c", "\xa0", "\u3000", "\u2028", "\x85", "\x1c", "\u2009"]


def wide_char(rng: random.Random) -> str:
    """Any character the Unicode 14.0 tables assign (see the module docstring for unassigned ones)."""
    roll = rng.random()
    if roll < 0.1:
        return rng.choice(FRAGMENTS)
    if roll < 0.2:
        return rng.choice(WHITESPACE)
    while True:
        char = chr(rng.randint(*rng.choice(WIDE)))
        if unicodedata.category(char) not in ("Cn", "Cs"):
            return char.upper() if rng.random() < 0.2 else char


def wide_text(rng: random.Random) -> str:
    return "".join(
        wide_char(rng) for _ in range(rng.choice([rng.randint(0, 8), rng.randint(0, 40), rng.randint(0, 300)]))
    )


def cleaned_is_nfc(text: str) -> bool:
    """False for the documented case no tokenizer input can match: HTML unescaped into a non-NFC sequence."""
    return unicodedata.is_normalized("NFC", whitespace_clean(basic_clean(text)))


def test_vocabulary_is_open_clip_s_under_stable_diffusion_names(hf_tokenizer, reference):
    renamed = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    assert hf_tokenizer.get_vocab() == {renamed.get(token, token): i for token, i in reference.encoder.items()}
    assert (hf_tokenizer.bos_token_id, hf_tokenizer.eos_token_id, hf_tokenizer.pad_token_id) == (BOS, EOS, EOS)
    assert hf_tokenizer.model_max_length == LENGTH


def test_plain_prompts_agree_without_normalization(hf_tokenizer, reference):
    rng = random.Random(0)
    texts = [plain_text(rng) for _ in range(400)] + EDGE_CASES[:5] + EDGE_CASES[-4:]
    assert hf_ids(hf_tokenizer, texts) == open_clip_ids(reference, texts)


@pytest.mark.parametrize("text", EDGE_CASES)
def test_edge_cases_agree_after_normalize_prompt(hf_tokenizer, reference, text):
    assert hf_ids(hf_tokenizer, [normalize_prompt(text)]) == open_clip_ids(reference, [text])


def test_wide_random_texts_agree_after_normalize_prompt(hf_tokenizer, reference):
    rng = random.Random(1)
    texts = [wide_text(rng) for _ in range(1500)]
    comparable = [text for text in texts if cleaned_is_nfc(text)]
    assert len(comparable) > 0.99 * len(texts)
    assert any(len(ids) > LENGTH for ids in map(reference.encode, comparable))  # truncation is exercised
    assert hf_ids(hf_tokenizer, [normalize_prompt(t) for t in comparable]) == open_clip_ids(reference, comparable)


@pytest.mark.parametrize("text", ["&gt\u0338", "<b>=&#824;</b>", "a\u1c89b", "a\U000323b0b"])
def test_documented_limits_still_disagree(hf_tokenizer, reference, text):
    """If one starts agreeing (a library update), drop it from the module docstring."""
    assert hf_ids(hf_tokenizer, [normalize_prompt(text)]) != open_clip_ids(reference, [text])
