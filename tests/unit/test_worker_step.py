"""A batch that fails never leaves the worker holding chunks nobody works on (Redis stubbed: the failures are
made to order here; tests/integration/test_generator_redis_faults.py meets them with real processes)."""

import pytest
from redis import exceptions as redis_errors

from gift_common.settings import Settings
from services.generator.worker.main import Worker
from services.testing.generator import tasks


class FailingQueue:
    """Answers as if Redis failed with ``error`` right after the batch was taken from the backlog."""

    def __init__(self, error: Exception):
        self.error, self.released = error, []

    def live(self, job_ids: set[str]) -> set[str]:
        raise self.error

    def release(self, held: dict[str, list[str]]) -> None:
        self.released.append(held)


def _worker(error: Exception) -> Worker:
    worker = Worker({}, Settings(redis_url="redis://127.0.0.1:9/0", batch_size=2))
    worker.queue = FailingQueue(error)  # type: ignore[assignment]
    worker.backlog.add_chunk(tasks("a", 4, entry="1-0"))
    return worker


@pytest.mark.parametrize(
    "error", [redis_errors.ConnectionError("down"), redis_errors.OutOfMemoryError("OOM command not allowed")]
)
def test_a_batch_met_by_an_outage_or_a_full_redis_goes_back_to_the_backlog(error):
    worker = _worker(error)
    with pytest.raises(type(error)):
        worker.step()
    assert worker.backlog.next_batch(4) == tasks("a", 4, entry="1-0"), "made again, first"
    assert worker.backlog.held() == {"a": ["1-0"]} and worker.queue.released == []


def test_a_batch_met_by_a_bug_is_released_to_be_taken_over():
    worker = _worker(RuntimeError("a bug"))
    with pytest.raises(RuntimeError):
        worker.step()
    assert worker.queue.released == [{"a": ["1-0"]}]
    assert worker.backlog.held() == {} and worker._held == {}, "no longer kept fresh by the heartbeat"


class Recording:
    """Stands in for the image step and the adaptations: notes each call and answers whether there was work."""

    def __init__(self, images: bool, adaptation: bool):
        self.images, self.adaptation, self.calls = images, adaptation, []

    def image_step(self) -> bool:
        self.calls.append("images")
        return self.images

    def run_one(self, models: object) -> bool:
        self.calls.append("adaptation")
        return self.adaptation


@pytest.mark.parametrize(
    ("mode", "images", "calls"),
    [
        ("idle", True, ["images"]),  # an image batch was made: no adaptation this step
        ("idle", False, ["images", "adaptation"]),  # nothing to draw: an adaptation job, if one waits
        ("never", False, ["images"]),
        ("only", True, ["adaptation"]),  # image work is never read
    ],
)
def test_gift_adaptations_says_when_a_worker_takes_an_adaptation_job(monkeypatch, mode, images, calls):
    worker = Worker({}, Settings(redis_url="redis://127.0.0.1:9/0", adaptations=mode))
    recording = Recording(images, adaptation=True)
    monkeypatch.setattr(worker, "_image_step", recording.image_step)
    worker.adapting = recording  # type: ignore[assignment]
    assert worker.step() == (images or "adaptation" in calls)
    assert recording.calls == calls
