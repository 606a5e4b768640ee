"""synthetic.adapt: after a task, the generator learns the task (a LoRA of its model) from the task's own images.

LoRA-Loop trains each task's adapter on the real images the model just trained on the task classifies most
confidently; `select: confident` does that here, per class so that every class keeps images, and `select: all`
takes every image (both up to `max_images`, the classes taking turns). Each image is captioned with its class's
prompt in the task's first template, the very text the prompt pool P_t of later tasks holds for that class, so that
the adapter learns what the replay will ask for. The archive goes to the generator (`POST /v1/adaptations`,
contract: docs/API.md), which trains the adapter on its own workers; the trainer only waits for its id.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import Dataset

from gift_common.adaptation_archive import write_archive
from gift_common.client import GeneratorError, GeneratorUnavailable
from gift_common.errors import UserError
from services.trainer.context import embed
from services.trainer.filtering import own_probability
from services.trainer.precision import Precision

if TYPE_CHECKING:
    from services.trainer.config import AdaptConfig, SyntheticConfig


class Adaptation(Protocol):
    """What the trainer reads of an adaptation job's status (gift_common.schemas.AdaptationStatus)."""

    @property
    def id(self) -> str: ...

    @property
    def adapter(self) -> str | None: ...


class AdaptationClient(Protocol):
    """The generator client's adaptation calls (GeneratorClient's, contract-adaptation)."""

    def adapt(
        self,
        archive: bytes,
        model: str | None = None,
        *,
        steps: int = 200,
        rank: int = 4,
        learning_rate: float = 1e-4,
        seed: int = 0,
        name: str | None = None,
        shared: bool = False,
    ) -> Adaptation: ...

    def wait_adaptation(
        self, adaptation_id: str, *, timeout: float | None = None, progress: bool = True
    ) -> Adaptation: ...

    def close(self) -> None: ...


def chosen(labels: Sequence[int], confidence: Tensor | None, share: float, max_images: int) -> list[int]:
    """The images an adapter learns from: per class the round(share · n) (at least one) most confident (ties and no
    confidence: the earlier image), then, over `max_images`, the classes taking turns best first; ascending."""
    by_class: dict[int, list[int]] = {}
    order = range(len(labels)) if confidence is None else torch.sort(confidence, descending=True, stable=True).indices
    for index in map(int, order):
        by_class.setdefault(int(labels[index]), []).append(index)
    kept = [members[: max(1, round(share * len(members)))] for _, members in sorted(by_class.items())]
    turns = sorted((rank, label) for label, members in enumerate(kept) for rank in range(len(members)))
    return sorted(kept[label][rank] for rank, label in turns[:max_images])


@torch.no_grad()
def confidences(
    model: nn.Module,
    images: Dataset,
    class_tokens: Tensor,
    transform: Callable[[Image.Image], Tensor],
    device: torch.device,
    precision: Precision,
    batch_size: int,
) -> tuple[Tensor, list[int]]:
    """Each image's probability of its own class among the task's class prompts under `model` (in eval mode, as
    evaluation sees it), and its label."""
    was_training = model.training
    model.eval()
    try:
        texts = embed(model.encode_text, class_tokens.to(device), precision)
        probabilities, labels = [], []
        for start in range(0, len(images), batch_size):  # type: ignore[arg-type]
            batch = [images[i] for i in range(start, min(start + batch_size, len(images)))]  # type: ignore[arg-type]
            pixels = torch.stack([transform(image) for image, _ in batch]).to(device)
            own = torch.tensor([label for _, label in batch], device=device)
            probabilities.append(own_probability(embed(model.encode_image, pixels, precision), texts, own,
                                                 model.logit_scale.exp()).cpu())  # fmt: skip
            labels += [int(label) for _, label in batch]
    finally:
        model.train(was_training)
    return torch.cat(probabilities), labels


def labels(images: Dataset) -> list[int]:
    """Every image's label, in order (`select: all`, which scores nothing)."""
    return [int(images[i][1]) for i in range(len(images))]  # type: ignore[arg-type]


def archive(images: Dataset, indices: Iterable[int], prompts: Sequence[str]) -> bytes:
    """The adaptation archive: each chosen image as PNG, captioned with its class's prompt."""
    return write_archive((png(images[i][0]), prompts[images[i][1]]) for i in indices)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def adapt(
    client: AdaptationClient, data: bytes, settings: SyntheticConfig, rule: AdaptConfig, name: str, progress: bool
) -> tuple[str, str]:
    """Train the task's adapter on the generator and wait for it (a progress bar where `progress`); its (adaptation
    id, adapter id)."""
    try:
        job = client.adapt(data, settings.model, steps=rule.steps, rank=rule.rank,
                           learning_rate=rule.learning_rate, seed=settings.seed, name=name)  # fmt: skip
        done = client.wait_adaptation(job.id, timeout=rule.timeout, progress=progress)
    except GeneratorUnavailable as error:
        raise UserError(f"adapter of {name}: {error}; start the generator (gift generator serve/worker) or set "
                        "synthetic.generator_url or GIFT_GENERATOR_URL") from None  # fmt: skip
    except GeneratorError as error:  # refused, failed, cancelled, or not done within synthetic.adapt.timeout
        raise UserError(f"adapter of {name}: {error}") from None
    if done.adapter is None:
        raise UserError(f"adaptation {job.id} ({name}) ended without an adapter")
    return job.id, done.adapter


def record(adaptation: str, adapter: str, images: int, started: float) -> dict[str, Any]:
    """What metrics.json (and the checkpoint) keeps of a task's adapter."""
    return {"adaptation": adaptation, "adapter": adapter, "images": images, "seconds": time.monotonic() - started}


def adapter_prompts(earlier: Iterable[tuple[Sequence[str], str, str]]) -> dict[str, str]:
    """The prompt of each class of the earlier tasks (names, template, adapter) -> its task's adapter; a prompt two
    tasks share goes to the later task's."""
    return {template.format(name): adapter for names, template, adapter in earlier for name in names}
