"""Zero-shot top-1 accuracy (the MTIL protocol): classes become text embeddings, an image goes to the nearest one."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import open_clip
import torch
from torch import Tensor, nn

from services.trainer import distributed


def zero_shot_classifier(
    model: nn.Module,
    tokenizer: Callable[..., Tensor],
    classnames: Sequence[str],
    templates: Sequence[str | Callable[[str], str]],
    device: torch.device | str = "cpu",
) -> Tensor:
    """D×C class embeddings: per class, the mean over templates of normalised text embeddings, renormalised.

    Templates are format strings ("a photo of a {}.") or callables of the class name.
    """
    return open_clip.build_zero_shot_classifier(model, tokenizer, classnames, templates, device=device)


@torch.no_grad()
def zero_shot_accuracy(
    model: nn.Module,
    tokenizer: Callable[..., Tensor],
    batches: Iterable[Sequence[Tensor]],
    classnames: Sequence[str],
    templates: Sequence[str | Callable[[str], str]],
    device: torch.device | str = "cpu",
) -> float:
    """Top-1 accuracy in [0, 1] over (images, labels) batches, the model in eval mode (its mode is restored).

    Under DDP each process passes its shard of the test set; the counts are summed over processes.
    """
    was_training = model.training
    model.eval()
    try:
        classifier = zero_shot_classifier(model, tokenizer, classnames, templates, device)
        correct = total = 0
        for images, labels in batches:
            image_emb = model.encode_image(images.to(device), normalize=True)
            predictions = (image_emb @ classifier).argmax(dim=1)
            correct += int((predictions == labels.to(device)).sum())
            total += len(labels)
    finally:
        model.train(was_training)
    correct, total = distributed.total((correct, total), device)
    if total == 0:
        raise ValueError("no evaluation images")
    return correct / total
