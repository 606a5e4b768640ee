"""Real parts: a private redis-server on a free port, the API under uvicorn, worker processes, the tiny pipeline."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from gift_common.client import GeneratorClient
from services.stack import LocalStack
from services.testing.generator import FAST_ENV, register_idle_model

pytestmark = pytest.mark.integration


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


def _own(line: str) -> bool:
    """A line of the service's own loggers, in the text or the JSON format (GIFT_LOG_FORMAT)."""
    return " gift." in line or '"logger": "gift.' in line


def print_logs_if_failed(request: pytest.FixtureRequest, stack: LocalStack) -> None:
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        for log in sorted(stack.run_dir.glob("*.log")):
            lines = [line for line in log.read_text(errors="replace").splitlines() if _own(line)]
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


@pytest.fixture(scope="module")
def tenants_api(tmp_path_factory: pytest.TempPathFactory, model_home: Path) -> Iterator[str]:
    """The URL of a stack with one worker, two tenants (keys alice-key, bob-key), an admin (admin-key) and the idle
    model, whose jobs stay queued."""
    keys = {"GIFT_API_KEYS": "alice:alice-key,bob:bob-key", "GIFT_ADMIN_KEYS": "ops:admin-key"}
    with LocalStack(
        tmp_path_factory.mktemp("tenants"), env={"GIFT_HOME": str(model_home), **FAST_ENV, **keys}
    ) as stack:
        stack.start(workers=1)
        register_idle_model(stack.redis_url)
        yield stack.api_url
