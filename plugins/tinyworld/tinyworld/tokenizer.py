"""A Hugging Face CLIPTokenizer built from open_clip's own BPE file: the same ids, and no download.

``write_clip_tokenizer`` reproduces open_clip's ``SimpleTokenizer`` vocabulary id for id (byte symbols, byte symbols
ending a word, the 48,894 merges, then the two specials), under the names Stable Diffusion uses: ``<|startoftext|>``
(49406) and ``<|endoftext|>`` (49407, also padding). On ordinary prompts ``CLIPTokenizer.from_pretrained(dir)`` then
gives open_clip's ids exactly; the two differ only in how they clean text, which the tokenizer files cannot change
(transformers' CLIPTokenizer hard-codes its normalizer NFC -> collapse whitespace -> lowercase, and its pre-tokenizer):

- open_clip runs ``ftfy.fix_text`` (curly quotes, ligatures, full-width forms, control and format characters,
  mojibake) and ``html.unescape`` twice (``&amp;`` -> ``&``); transformers uses neither (4.x used ftfy, never
  ``html.unescape``);
- open_clip's ``str.lower`` gives a word-final sigma (``ΟΔΟΣ`` -> ``οδος``), the HF per-character lowercase does not;
- open_clip treats ``<start_of_text>`` / ``<end_of_text>`` in a prompt (any case) as its specials, HF treats
  ``<|startoftext|>`` / ``<|endoftext|>`` as its own; open_clip's case-insensitive regex drops U+0345.

``normalize_prompt`` resolves all of these: apply it before the HF tokenizer and the ids equal open_clip's on the raw
text. Two cases remain that no input to the HF tokenizer can reproduce:

- open_clip's cleaned text is not NFC, which happens only when ``html.unescape`` decodes an entity that ftfy left
  alone (ftfy skips HTML in text containing ``<``, and entities without ``;``) into a combining mark that NFC would
  compose or reorder: ``"&gt\u0338"`` -> ``">\u0338"`` (HF sees ``"≯"``), ``"<b>=&#824;</b>"``;
- code points unassigned in Python 3.11's Unicode 14.0 tables, which ``regex`` (open_clip) and the tokenizers
  library classify by different, newer Unicode versions: e.g. U+1C89, U+209D, U+323B0 next to letters.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

import regex
from open_clip.tokenizer import SimpleTokenizer, bytes_to_unicode, default_bpe

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
MODEL_MAX_LENGTH = 77
# open_clip's SimpleTokenizer keeps these merge lines of its BPE file (line 0 is a header).
_MERGES_END = 49152 - 256 - 2 + 1


def _read_merges() -> list[str]:
    """The merge rules exactly as open_clip's SimpleTokenizer selects them."""
    with gzip.open(default_bpe(), "rt", encoding="utf-8") as file:
        return file.read().split("\n")[1:_MERGES_END]


def _build_vocab(merges: list[str]) -> dict[str, int]:
    """Bytes, bytes ending a word, merged symbols, then the two specials: the ids open_clip assigns."""
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m.split()) for m in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {token: i for i, token in enumerate(tokens)}


def _special(content: str) -> dict[str, object]:
    """Matched verbatim in the raw text, as in Stable Diffusion's tokenizer, so normalize_prompt's output hits it."""
    return dict(content=content, lstrip=False, normalized=False, rstrip=False, single_word=False, special=True)


def write_clip_tokenizer(directory: Path) -> None:
    """Write vocab.json, merges.txt and the configs that `CLIPTokenizer.from_pretrained` reads."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    merges = _read_merges()
    vocab = _build_vocab(merges)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    specials = {"bos_token": _special(BOS_TOKEN), "eos_token": _special(EOS_TOKEN), "pad_token": _special(EOS_TOKEN)}
    specials["unk_token"] = _special(EOS_TOKEN)
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MODEL_MAX_LENGTH,
        "clean_up_tokenization_spaces": True,
        "errors": "replace",
        "added_tokens_decoder": {
            str(vocab[BOS_TOKEN]): _special(BOS_TOKEN),
            str(vocab[EOS_TOKEN]): _special(EOS_TOKEN),
        },
        **{k: v["content"] for k, v in specials.items()},
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (directory / "special_tokens_map.json").write_text(json.dumps(specials, indent=2), encoding="utf-8")


@lru_cache(maxsize=1)
def _open_clip_tokenizer() -> SimpleTokenizer:
    return SimpleTokenizer()


_SPECIAL_NAMES = {"<start_of_text>": BOS_TOKEN, "<end_of_text>": EOS_TOKEN}
# str.lower() turns U+0130 into "i" + U+0307, which open_clip splits into two pieces; the HF normalizer's NFC would
# reorder U+0307 after a following lower-class combining mark, so hand it U+0130 to lowercase itself.
_LOWER_DOTTED_I_SPLIT = "i \u0307"


def normalize_prompt(text: str) -> str:
    """open_clip's cleaning and pre-tokenization, re-joined with spaces so the HF tokenizer gives open_clip's ids."""
    reference = _open_clip_tokenizer()
    pieces = regex.findall(reference.pat, reference.clean_fn(text))
    joined = " ".join(_SPECIAL_NAMES.get(piece, piece) for piece in pieces)
    return joined.replace(_LOWER_DOTTED_I_SPLIT, "\u0130")
