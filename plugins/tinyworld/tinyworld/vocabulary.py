"""The world's own tokenizer: byte-level BPE whose merges make exactly the world's words.

open_clip's tokenizer has 49,408 tokens; the world's captions and the tasks' prompts use about 170 of them, and the
other rows of the token table were 77% of the tiny CLIP, never trained, and so unlike any real CLIP (in ViT-B/16 the
table is 17% of the model). The world's tokenizer keeps open_clip's format and algorithm (the 512 byte symbols, so
any text still tokenizes, then merges, then the two specials) with merges learnt from the world's words alone: each
word is one token, any other word falls apart into pieces. Both the tiny CLIP (``tiny-clip.json`` names the file) and
the text-to-image model's tokenizer (``gift_common.clip_tokenizer`` writes it from the same file) use it.

    python -m tinyworld.vocabulary        # rewrite world-bpe.txt.gz from the world's words
"""

from __future__ import annotations

import gzip
import io
import itertools
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import regex

BPE_FILE = Path(__file__).with_name("world-bpe.txt.gz")
HEADER = "#version: 0.2 (the tiny world's words)"
# open_clip's pre-tokenizer (open_clip.tokenizer.SimpleTokenizer.pat) without its special tokens.
_PIECES = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE)


def world_texts() -> list[str]:
    """Every prompt the world can say: its concept prompts and every caption's words. The tasks' own template words
    ("texture", "satellite") are not among them: pre-training never sees them, so they tokenize into pieces, as a
    word a CLIP never read would."""
    from tinyworld.world import (
        _POSITION_WORDS,
        CONCEPT_NAMES,
        CONCEPT_TEMPLATES,
        COUNTS,
        FAMILIES,
        FIGURES,
        PREFIXES,
        phrase,
    )

    texts = [template.format(name) for template in CONCEPT_TEMPLATES for name in CONCEPT_NAMES]
    texts += list(PREFIXES) + list(_POSITION_WORDS.values())
    backgrounds = (*FAMILIES["background"], "red")  # scenes, and a plain colour ("on a red background")
    for kind in (*FIGURES, "pattern", "thing"):
        for i, value in enumerate(FAMILIES[kind] if kind in FIGURES else ("",)):
            for count in COUNTS:  # the singular and the plural of every noun
                facts = {"size": "small", "colour": "red", "position": "left", "count": count}
                facts["background"] = backgrounds[i % len(backgrounds)]
                if kind != "pattern":
                    facts["pattern"] = "striped"
                if value:
                    facts[kind] = value
                texts.append(phrase(facts, kind))
    return texts


def words(texts: Iterable[str]) -> list[str]:
    """The distinct words of two letters or more, as open_clip cleans and splits them (single symbols are bytes)."""
    found = {piece for text in texts for piece in _PIECES.findall(text.lower()) if len(piece) > 1}
    return sorted(piece for piece in found if piece.isalpha())


def learn_merges(vocabulary: Iterable[str]) -> list[tuple[str, str]]:
    """BPE merges until every word is one symbol: the most frequent pair first, ties by the pair itself.

    Applying the merges in rank order to a word of the vocabulary (as open_clip and transformers do) repeats the
    learning's steps on it, so each word ends as a single token."""
    words_ = [(*word[:-1], word[-1] + "</w>") for word in vocabulary]
    merges: list[tuple[str, str]] = []
    while True:
        pairs = Counter(pair for word in words_ for pair in itertools.pairwise(word))
        if not pairs:
            return merges
        best = max(pairs, key=lambda pair: (pairs[pair], pair))
        merges.append(best)
        words_ = [_merge(word, best) for word in words_]


def _merge(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    merged: list[str] = []
    i = 0
    while i < len(word):
        if word[i : i + 2] == pair:
            merged.append(pair[0] + pair[1])
            i += 2
        else:
            merged.append(word[i])
            i += 1
    return tuple(merged)


def bpe_bytes(merges: list[tuple[str, str]]) -> bytes:
    """The merges in open_clip's BPE file format (gzip, a header line, no final newline: open_clip would read an
    empty last line as one more token), byte for byte the same on every run."""
    text = "\n".join([HEADER, *(" ".join(pair) for pair in merges)])
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as file:
        file.write(text.encode("utf-8"))
    return buffer.getvalue()


def vocab_size(bpe_file: Path = BPE_FILE) -> int:
    """Tokens of a BPE file in open_clip's layout: 512 byte symbols, one per merge, two specials."""
    with gzip.open(bpe_file, "rt", encoding="utf-8") as file:
        merges = file.read().split("\n")[1:]
    return 512 + len(merges) + 2


def main() -> None:
    vocabulary = words(world_texts())
    BPE_FILE.write_bytes(bpe_bytes(learn_merges(vocabulary)))
    print(f"{BPE_FILE}: {len(vocabulary)} words, {vocab_size()} tokens")


if __name__ == "__main__":
    main()
