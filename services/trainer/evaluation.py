"""Zero-shot top-1 accuracy (the MTIL protocol): classes become text embeddings, an image goes to the nearest one.

Also the pre-training probes (`registries.PROBES`, from plugins), analogues of MTIL's ImageNet accuracy: zero-shot
accuracy on held-out pre-training images within each of several heads (say, concept families), i.e. how much of
what pre-training taught a model still knows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import open_clip
import torch
from torch import Tensor, nn

from services.trainer import distributed
from services.trainer.plugins import Probe


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


@torch.no_grad()
def probe_accuracies(
    model: nn.Module,
    tokenizer: Callable[..., Tensor],
    batches: Iterable[Sequence[Tensor]],
    probe: Probe,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Per head, top-1 accuracy in [0, 1] among that head's classes on the images that show one of them.

    `batches` are (images, image indices), under DDP this process's shard; counts are summed over processes.
    """
    was_training = model.training
    model.eval()
    try:
        encoded = [(model.encode_image(images.to(device), normalize=True), index) for images, index in batches]
        embeddings = torch.cat([e for e, _ in encoded]) if encoded else torch.empty(0, 1, device=device)
        indices = torch.cat([i for _, i in encoded]).numpy() if encoded else np.zeros(0, np.int64)
        counts = []
        for family, labels in probe.labels.items():
            target = torch.from_numpy(labels[indices]).to(device)
            shown = target >= 0
            classifier = zero_shot_classifier(model, tokenizer, probe.classnames[family], probe.templates, device)
            predictions = (embeddings[shown] @ classifier).argmax(dim=1) if shown.any() else target[shown]
            counts += [int((predictions == target[shown]).sum()), int(shown.sum())]
    finally:
        model.train(was_training)
    summed = distributed.total(counts, device)
    return {family: summed[2 * i] / summed[2 * i + 1] for i, family in enumerate(probe.labels)}
