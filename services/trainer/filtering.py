"""`synthetic.filter`: replay only the pairs of a set that the task's teacher recognises best (METHOD.md).

A pair's confidence is the probability the teacher θ_{t−1} (the model the task starts from) gives the pair's own
prompt among the prompts of the pool P_t the set was drawn from: softmax over P_t of s·f_I(x)·f_T(p)ᵀ, prompts the
tokenizer cannot tell apart counting as one (as they do for ITA). The pass that computes it is the teacher's pass
over every pair that the `cached` teacher mode makes anyway: the engine takes the kept pairs' embeddings from it.

A set's choice is computed once for a teacher: the teacher's embeddings of every pair and their confidences are
stored beside the sets (`<synthetic cache>/teacher/<key>.safetensors`), the key a SHA-256 of the teacher's weights,
the pairs and the pool. A resumed run, on whatever device, keeps the same pairs and replays the same embeddings.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import Tensor, nn

from gift_common.errors import UserError
from gift_common.files import atomic_write
from services.trainer import distributed, losses
from services.trainer.context import CachedTeacher, embed
from services.trainer.precision import Precision
from services.trainer.streams import in_order
from services.trainer.synthetic import SyntheticPairs

if TYPE_CHECKING:
    from services.trainer.config import FilterConfig


@dataclass
class Choice:
    """The pairs of a set that replay, and what the teacher made of the whole set."""

    kept: Tensor  # indices into the set, ascending
    confidence: Tensor  # every pair's, on the CPU
    teacher: CachedTeacher  # the teacher's embeddings of the kept pairs, in the order of `kept`

    def summary(self) -> dict[str, Any]:
        """What metrics.json records of the choice: pairs kept, and their mean confidence before and after."""
        return {
            "kept": len(self.kept),
            "confidence": self.confidence.mean().item(),
            "kept_confidence": self.confidence[self.kept].mean().item(),
        }


@dataclass
class Pass:
    """How the teacher's pass runs: the device, the task's precision, and the loader of the ordered pass."""

    device: torch.device
    precision: Precision
    batch_size: int
    num_workers: int = 0
    pin_memory: bool = False


def choose(
    teacher: nn.Module,
    pairs: SyntheticPairs,
    pool_tokens: Tensor,
    rule: FilterConfig,
    store: TeacherStore,
    key: str,
    how: Pass,
) -> Choice:
    """The pairs `rule` keeps, from the stored pass of this teacher over this set, or from a pass made now (stored
    by the main process). Every process of a torchrun keeps process 0's choice, so their sets stay alike."""
    stored = store.load(key, len(pairs))
    if stored is None:
        loader = in_order(pairs, how.batch_size, how.num_workers, pin_memory=how.pin_memory)
        embeddings = CachedTeacher.compute(teacher, loader, how.device, how.precision)
        confidence = pool_confidence(teacher, embeddings.images, pairs.tokens, pool_tokens, how)
        if distributed.is_main():
            store.save(key, embeddings, confidence)
    else:
        read, confidence = stored
        embeddings = CachedTeacher(read.images.to(how.device), read.texts.to(how.device))
    confidence = confidence.to(how.device)
    distributed.broadcast_(confidence)
    kept = selected(confidence.cpu(), rule)
    return Choice(kept, confidence.cpu(), embeddings.subset(kept.to(how.device)))


def selected(confidence: Tensor, rule: FilterConfig) -> Tensor:
    """The indices `rule` keeps, ascending: the round(keep · N) most confident (ties to the earlier pair), or
    those at or above the threshold."""
    if rule.threshold is not None:
        chosen = torch.nonzero(confidence >= rule.threshold).squeeze(1)
    else:
        chosen = torch.sort(confidence, descending=True, stable=True).indices[: rule.count(len(confidence))]
    return chosen.sort().values


@torch.no_grad()
def pool_confidence(teacher: nn.Module, images: Tensor, pair_tokens: Tensor, pool_tokens: Tensor, how: Pass) -> Tensor:
    """Each pair's probability of its own prompt among the pool's, under the teacher (fp32)."""
    prompts, own = prompt_rows(pool_tokens, pair_tokens)
    texts = torch.cat([embed(teacher.encode_text, chunk.to(how.device), how.precision)
                       for chunk in prompts.split(how.batch_size)])  # fmt: skip
    return own_probability(images, texts, own.to(how.device), teacher.logit_scale.exp())


def prompt_rows(pool_tokens: Tensor, pair_tokens: Tensor) -> tuple[Tensor, Tensor]:
    """The pool's distinct prompts (token rows), and the row of each pair's prompt among them."""
    distinct, inverse = torch.unique(torch.cat([pool_tokens, pair_tokens]), dim=0, return_inverse=True)
    if len(inverse[: len(pool_tokens)].unique()) != len(distinct):
        raise ValueError("a pair's prompt is not in the prompt pool its set was drawn from")
    return distinct, inverse[len(pool_tokens) :]


def own_probability(images: Tensor, prompts: Tensor, own: Tensor, scale: Tensor) -> Tensor:
    """softmax over prompts of s·f_I·f_Tᵀ, at each image's own prompt."""
    probabilities = torch.softmax(losses.clip_logits(images, prompts, scale), dim=-1)
    return probabilities.gather(1, own[:, None]).squeeze(1)


def too_few(task: str, kept: int, pairs: int, batch_size: int) -> UserError:
    return UserError(f"task {task}: synthetic.filter keeps {kept} of its {pairs} synthetic pairs, fewer than a replay "
                     f"batch ({batch_size}); lower synthetic.filter.threshold, or set keep")  # fmt: skip


# --- the stored passes -----------------------------------------------------------------------------------------


def pass_key(teacher: nn.Module, pairs: SyntheticPairs, pool_tokens: Tensor, *context: str) -> str:
    """SHA-256 of what the pass computes from: the teacher's weights, the set's images and prompts, the pool, and
    `context` (the architecture and the precision)."""
    digest = hashlib.sha256("\0".join(context).encode())
    for name, tensor in teacher.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    for item in _image_digests(pairs.images):
        digest.update(item)
    for tokens in (pairs.tokens, pool_tokens):
        digest.update(f"{tuple(tokens.shape)}".encode())
        digest.update(tokens.cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _image_digests(images: Sequence[Path] | np.ndarray) -> list[bytes]:
    if isinstance(images, np.ndarray):
        pixels = np.ascontiguousarray(images).data
        return [f"{images.shape}:{images.dtype}".encode(), hashlib.sha256(pixels).digest()]
    return [hashlib.sha256(Path(path).read_bytes()).digest() for path in images]


class TeacherStore:
    """The teacher's embeddings of a set's pairs and their confidences, one safetensors file per pass."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / "teacher" / f"{key}.safetensors"

    def load(self, key: str, pairs: int) -> tuple[CachedTeacher, Tensor] | None:
        """The stored pass, or None if there is none or it is not a whole one (then it is made again)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            tensors = safetensors.torch.load(path.read_bytes())
            images, texts, confidence = tensors["images"], tensors["texts"], tensors["confidence"]
        except (SafetensorError, KeyError):
            return None
        if not len(images) == len(texts) == len(confidence) == pairs:
            return None
        return CachedTeacher(images, texts), confidence

    def save(self, key: str, embeddings: CachedTeacher, confidence: Tensor) -> None:
        tensors = {"images": embeddings.images, "texts": embeddings.texts, "confidence": confidence}
        data = safetensors.torch.save({name: t.detach().cpu().contiguous() for name, t in tensors.items()})
        atomic_write(self.path(key), data)
