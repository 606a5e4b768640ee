"""A job names its scheduler, and a model with a safety checker reports the images it drew again, through a real
Redis, the API and a worker process serving the checked stand-in."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gift_common.client import GeneratorClient
from gift_common.schemas import JobRequest, JobState
from services.stack import LocalStack
from services.testing.fixtures import SAFETY_PROMPTS
from services.testing.generator import pixels


def test_a_checked_models_job_reports_its_redrawn_images_and_its_cache_hits_none(
    make_stack: Callable[..., LocalStack], checked_sd_dir: Path
) -> None:
    stack = make_stack(GIFT_MODELS=f"checked={checked_sd_dir}")  # the worker's own scheduler stays dpmsolver++
    request = JobRequest(prompts=SAFETY_PROMPTS, model="checked", num_inference_steps=2, guidance_scale=5.0,
                         scheduler="directory")  # fmt: skip
    n = len(SAFETY_PROMPTS)
    with GeneratorClient(stack.api_url) as client:
        job = client.wait(client.submit(request).id, timeout=120, progress=False)
        # the checker flags some first draws under the named scheduler (test_safety_redraw says which), not all
        assert job.status == JobState.succeeded and 0 < job.replaced < n and job.cached == 0
        assert all(pixels(client.image(image.sha256)).max() > 0 for image in job.images)  # none left black
        # the API keys the named scheduler's images as the worker does: all found at submission, none redrawn
        again = client.submit(request)
        assert (again.status, again.cached, again.replaced) == (JobState.succeeded, n, 0)
