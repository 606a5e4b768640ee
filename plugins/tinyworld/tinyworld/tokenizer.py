"""Prompts cleaned as open_clip cleans them, so the HF CLIPTokenizer gives open_clip's ids on any text.

The tokenizer that ``gift_common.clip_tokenizer.write_clip_tokenizer`` writes from open_clip's BPE file gives
open_clip's ids exactly on ordinary prompts; the two differ only in how they clean text, which the tokenizer files
cannot change (transformers' CLIPTokenizer hard-codes its normalizer NFC -> collapse whitespace -> lowercase, and
its pre-tokenizer):

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

from functools import lru_cache

import regex
from open_clip.tokenizer import SimpleTokenizer

from gift_common.clip_tokenizer import BOS_TOKEN, EOS_TOKEN


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
