"""A Hugging Face CLIPTokenizer written from open_clip's own BPE file: the same ids, and no download.

``write_clip_tokenizer`` reproduces open_clip's ``SimpleTokenizer`` vocabulary id for id (byte symbols, byte symbols
ending a word, the 48,894 merges, then the two specials), under the names Stable Diffusion uses: ``<|startoftext|>``
(49406) and ``<|endoftext|>`` (49407, also padding); given another BPE file in open_clip's format, that file's. The
tiny world's pipeline (with its own words' file) and the full-size stand-ins write their ``tokenizer/`` folder with
it. It reads open_clip's bundled file without importing open_clip (and so torch): this module stays light. How the
two tokenizers still differ in text cleaning: ``tinyworld/tokenizer.py``.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

from gift_common.errors import UserError

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
MODEL_MAX_LENGTH = 77
BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
# open_clip's SimpleTokenizer keeps these merge lines of its BPE file (line 0 is a header).
_MERGES_END = 49152 - 256 - 2 + 1


def bpe_path() -> Path:
    """open_clip's bundled BPE file, found without importing the package."""
    spec = importlib.util.find_spec("open_clip")
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = Path(locations[0]) / BPE_FILE if locations else None
    if path is None or not path.is_file():
        raise UserError(f"open_clip's {BPE_FILE} not found: install open_clip_torch to write a CLIP tokenizer")
    return path


def byte_symbols() -> list[str]:
    """GPT-2's printable stand-in for each byte, in vocabulary order (open_clip's ``bytes_to_unicode`` values)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]


def _read_merges(bpe: Path) -> list[str]:
    """The merge rules exactly as open_clip's SimpleTokenizer selects them."""
    with gzip.open(bpe, "rt", encoding="utf-8") as file:
        return file.read().split("\n")[1:_MERGES_END]


def _build_vocab(merges: list[str]) -> dict[str, int]:
    """Bytes, bytes ending a word, merged symbols, then the two specials: the ids open_clip assigns."""
    symbols = byte_symbols()
    tokens = symbols + [c + "</w>" for c in symbols] + ["".join(m.split()) for m in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {token: i for i, token in enumerate(tokens)}


def _special(content: str) -> dict[str, object]:
    """Matched verbatim in the raw text, as in Stable Diffusion's tokenizer."""
    return dict(content=content, lstrip=False, normalized=False, rstrip=False, single_word=False, special=True)


def write_clip_tokenizer(directory: Path, bpe: Path | None = None) -> None:
    """Write vocab.json, merges.txt and the configs that `CLIPTokenizer.from_pretrained` reads, from open_clip's
    BPE file or from another in its format (``bpe``: the tiny world's own words)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    merges = _read_merges(bpe or bpe_path())
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
