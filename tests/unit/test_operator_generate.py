"""`gift generate` turns a person's options into one job request (the integration tests run it against a real
stack; here the request itself is checked, option by option)."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gift_common.schemas import ImageInfo, JobRequest, JobStatus
from services import cli, operator_cli

PNG = b"\x89PNG stand-in bytes"


class Recorder:
    """The client calls `gift generate` makes, answered at once; keeps the requests submitted."""

    def __init__(self) -> None:
        self.requests: list[JobRequest] = []

    def submit(self, request: JobRequest) -> JobStatus:
        self.requests.append(request)
        return self._status("queued", [])

    def wait(self, job_id: str, progress: bool) -> JobStatus:
        request, sha = self.requests[-1], hashlib.sha256(PNG).hexdigest()
        images = [ImageInfo(index=i, prompt=p, seed=request.seed_of(i), sha256=sha, url=f"/v1/images/{sha}")
                  for i, p in enumerate(request.prompts)]  # fmt: skip
        return self._status("succeeded", images)

    def image(self, sha256: str) -> bytes:
        return PNG

    def _status(self, state: str, images: list[ImageInfo]) -> JobStatus:
        total = len(self.requests[-1].prompts)
        return JobStatus(id="job-1", status=state, total=total, done=len(images), cached=0,
                         created_at=datetime.now(UTC), images=images)  # fmt: skip


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()

    @contextlib.contextmanager
    def client(args: object) -> Iterator[Recorder]:
        yield recorder

    monkeypatch.setattr(operator_cli, "_client", client)
    return recorder


@pytest.mark.parametrize("scheduler", ["directory", "dpmsolver++"])
def test_scheduler_names_the_jobs_sampler(scheduler: str, recorder: Recorder, tmp_path: Path) -> None:
    cli.main(["generate", "a red circle.", "-n", "2", "--out", str(tmp_path), "--scheduler", scheduler])
    (request,) = recorder.requests
    assert request.scheduler == scheduler and request.prompts == ["a red circle."] * 2
    assert sorted(path.name for path in tmp_path.iterdir()) == ["000-seed0.png", "001-seed1.png"]


def test_without_scheduler_the_worker_chooses(recorder: Recorder, tmp_path: Path) -> None:
    cli.main(["generate", "a red circle.", "--out", str(tmp_path)])
    assert recorder.requests[0].scheduler is None
    assert "scheduler" not in recorder.requests[0].model_dump(exclude_none=True)  # the content key stays the same


def test_an_unknown_scheduler_is_one_line(recorder: Recorder, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["generate", "a red circle.", "--out", str(tmp_path), "--scheduler", "euler"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 2 and "--scheduler" in error and "'directory', 'dpmsolver++'" in error
    assert recorder.requests == []
