"""Real parts: a private redis-server on a free port, the API under uvicorn, worker processes, the tiny pipeline."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from PIL import Image

from gift_common import redis_keys
from gift_common.client import GeneratorClient
from services.stack import LocalStack

pytestmark = pytest.mark.integration

# Short timeouts so that takeover and readiness happen within a test's patience; one torch thread per worker, as
# the API, Redis, the test and sometimes two workers share the machine's cores (torch's spinning threads slow
# to a crawl when they outnumber the free cores).
FAST_ENV = {
    "GIFT_CLAIM_TIMEOUT_SECONDS": "3",
    "GIFT_HEARTBEAT_SECONDS": "0.5",
    "GIFT_BATCH_SIZE": "8",
    "GIFT_TORCH_THREADS": "1",
}


@pytest.fixture(scope="session")
def model_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """GIFT_HOME with the default model built once for the whole session."""
    from tinyworld.pipeline import default_model_dir

    home = tmp_path_factory.mktemp("gift-home")
    default_model_dir(home)
    return home


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[pytest.TestReport]:
    """Keep each phase's report on the test item, so fixtures can tell whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def print_logs_if_failed(request: pytest.FixtureRequest, stack: LocalStack) -> None:
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        for log in sorted(stack.run_dir.glob("*.log")):
            lines = [line for line in log.read_text(errors="replace").splitlines() if " gift." in line]
            print(f"--- {log.name} (last 30 lines of the service's own log) ---", *lines[-30:], sep="\n")


@pytest.fixture
def make_stack(request: pytest.FixtureRequest, tmp_path: Path, model_home: Path) -> Iterator[Callable[..., LocalStack]]:
    """Start stacks that the test may break (kill, stop Redis); all are stopped at the end."""
    stacks: list[LocalStack] = []

    def make(workers: int = 1, **env: str) -> LocalStack:
        stack = LocalStack(tmp_path / f"stack{len(stacks)}", env={"GIFT_HOME": str(model_home), **FAST_ENV, **env})
        stacks.append(stack)
        return stack.start(workers=workers)

    yield make
    for stack in stacks:
        stack.stop()
        print_logs_if_failed(request, stack)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, model_home: Path) -> Iterator[LocalStack]:
    """One healthy stack shared by the tests of a module that do not break it."""
    with LocalStack(tmp_path_factory.mktemp("stack"), env={"GIFT_HOME": str(model_home), **FAST_ENV}) as shared:
        yield shared.start(workers=1)


@pytest.fixture
def client(stack: LocalStack) -> Iterator[GeneratorClient]:
    with GeneratorClient(stack.api_url, retries=2, backoff=0.1) as generator:
        yield generator


@pytest.fixture
def redis_client(stack: LocalStack) -> redis.Redis:
    return redis.Redis.from_url(stack.redis_url, decode_responses=True)


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def drop_cache(redis_url: str) -> None:
    """Forget which images exist, so that the next job really runs the pipeline."""
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(redis_keys.cache("*")):
        client.delete(key)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
