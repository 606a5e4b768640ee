"""A job names its scheduler, and a model with a safety checker reports the images it drew again, through a real
Redis, the API and a worker process serving the checked stand-in."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from gift_common.client import GeneratorClient
from gift_common.schemas import JobRequest, JobState
from services.generator.worker.synthesis import generate, load_model
from services.stack import LocalStack
from services.testing.fixtures import SAFETY_PROMPTS
from services.testing.generator import pixels


def test_a_checked_models_job_reports_its_redrawn_images_and_its_cache_hits_none(
    make_stack: Callable[..., LocalStack], checked_sd_dir: Path
) -> None:
    stack = make_stack(GIFT_MODELS=f"checked={checked_sd_dir}")  # the worker's own scheduler stays dpmsolver++
    request = JobRequest(prompts=SAFETY_PROMPTS, model="checked", num_inference_steps=2, guidance_scale=5.0,
                         scheduler="directory")  # fmt: skip
    model = load_model("checked", checked_sd_dir, torch.device("cpu"))
    n = len(SAFETY_PROMPTS)
    expected = generate(model, prompts=SAFETY_PROMPTS, negative_prompts=[None] * n, seeds=list(range(n)),
                        num_inference_steps=2, guidance_scale=5.0, height=model.height, width=model.width,
                        scheduler="directory")  # fmt: skip
    assert expected.replaced  # the checker flagged some first draws (test_safety_redraw checks which)
    with GeneratorClient(stack.api_url) as client:
        job = client.wait(client.submit(request).id, timeout=120, progress=False)
        assert (job.status, job.replaced, job.cached) == (JobState.succeeded, len(expected.replaced), 0)
        for image, png in zip(job.images, expected.pngs, strict=True):
            assert np.abs(pixels(client.image(image.sha256)) - pixels(png)).max() <= 2
        # the API keys the named scheduler's images as the worker does: all found at submission, none redrawn
        again = client.submit(request)
        assert (again.status, again.cached, again.replaced) == (JobState.succeeded, n, 0)
