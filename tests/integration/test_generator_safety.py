"""A job names its scheduler, and a model with a safety checker reports the images it drew again, through a real
Redis, the API and a worker process serving the checked stand-in."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gift_common.client import GeneratorClient, JobQuery
from gift_common.schemas import JobRequest, JobState
from services.stack import LocalStack
from services.testing.fixtures import SAFETY_PROMPTS
from services.testing.generator import pixels
from services.trainer.synthetic import SetCache, SyntheticSets


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


def test_the_trainer_keeps_a_sets_redrawn_count_with_the_set(
    make_stack: Callable[..., LocalStack], checked_sd_dir: Path, tmp_path: Path
) -> None:
    """What the trainer's metrics.json reports per task: the count of the job that made the set, read again from
    the trainer's cache when the generator is gone."""
    stack = make_stack(GIFT_MODELS=f"checked={checked_sd_dir}")
    request = JobRequest(prompts=SAFETY_PROMPTS, model="checked", num_inference_steps=2, guidance_scale=5.0,
                         scheduler="directory")  # fmt: skip
    sets = SyntheticSets({"t": request}, SetCache(tmp_path), lambda: GeneratorClient(stack.api_url), timeout=120)
    replaced = sets.replaced("t")
    sets.close()
    with GeneratorClient(stack.api_url) as client:
        (job,) = client.jobs(JobQuery(limit=1)).jobs
    assert job.replaced == replaced and 0 < replaced < len(SAFETY_PROMPTS)
    stack.stop()
    cached = SyntheticSets({"t": request}, SetCache(tmp_path), lambda: GeneratorClient(stack.api_url), timeout=5)
    assert cached.replaced("t") == replaced
    cached.close()
