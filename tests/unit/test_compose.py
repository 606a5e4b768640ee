"""docker-compose.yml and the Dockerfiles must agree with the code: the suite runs without a Docker engine, so they
are checked by parsing (bench/image_sizes.py builds and runs the images)."""

import re
import shlex
from pathlib import Path

import pytest
import yaml

from gift_common.settings import Settings
from services.cli import build_parser
from services.generator.api.main import create_app
from services.trainer import configs as shipped_configs
from services.trainer.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def _resolve(value: str) -> str:
    """Substitute ${VAR:-default} by its default, as compose does with VAR unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def _command(service: str) -> list[str]:
    command = SERVICES[service]["command"]
    return [_resolve(part) for part in (command if isinstance(command, list) else shlex.split(command))]


def test_expected_services_exist():
    assert {"redis", "generator-api", "generator-worker", "trainer"} <= set(SERVICES)


@pytest.mark.parametrize("service", ["generator-api", "generator-worker", "trainer"])
def test_commands_are_gift_commands_the_cli_accepts(service):
    command = _command(service)
    assert command[0] == "gift"
    build_parser().parse_args(command[1:])  # exits (fails the test) on an unknown command or option


@pytest.mark.parametrize("service", ["generator-api", "generator-worker", "trainer"])
def test_every_variable_is_a_setting_the_code_reads(service):
    fields = {f"GIFT_{name.upper()}" for name in Settings.model_fields}
    variables = set(SERVICES[service]["environment"])
    assert variables <= fields, variables - fields


@pytest.mark.parametrize("service", ["generator-api", "generator-worker", "trainer"])
def test_images_are_built_from_dockerfiles_that_exist(service):
    build = SERVICES[service]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).is_file()


def test_api_port_and_healthcheck_match_the_server():
    command = _command("generator-api")
    port = command[command.index("--port") + 1]
    assert SERVICES["generator-api"]["ports"] == [f"{port}:{port}"]
    paths = create_app().openapi()["paths"]
    health = " ".join(SERVICES["generator-api"]["healthcheck"]["test"])
    assert f"127.0.0.1:{port}/healthz" in health and "/healthz" in paths


def test_everyone_finds_redis_and_the_api_where_they_run():
    for service in ("generator-api", "generator-worker", "trainer"):
        url = _resolve(SERVICES[service]["environment"]["GIFT_REDIS_URL"])
        assert url.startswith("redis://redis:6379"), service
    api_port = _command("generator-api")[_command("generator-api").index("--port") + 1]
    assert SERVICES["trainer"]["environment"]["GIFT_GENERATOR_URL"] == f"http://generator-api:{api_port}"


def test_redis_persists_and_evicts_nothing():
    """Queued work and unread results are never evicted: the service's own TTLs bound memory (docs/API.md)."""
    command = _resolve(SERVICES["redis"]["command"])
    assert "--appendonly yes" in command and "--appendfsync always" in command, "a 202 survives a crash"
    assert "--maxmemory-policy noeviction" in command
    major = int(SERVICES["redis"]["image"].split(":")[1].split(".")[0])
    assert major >= 7, "the service's scripts declare flags (allow-oom, no-writes), which Redis 7 reads"
    assert any(volume.endswith(":/data") for volume in SERVICES["redis"]["volumes"])


def test_workers_reserve_one_gpu_each_and_scale_by_replicas():
    deploy = SERVICES["generator-worker"]["deploy"]
    device = deploy["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["count"] == 1 and "gpu" in device["capabilities"]
    assert int(_resolve(str(deploy["replicas"]))) >= 1


def _stage(service: str) -> str:
    """The Dockerfile stage a service is built from: from its `FROM ... AS target` to the next FROM."""
    build = SERVICES[service]["build"]
    dockerfile = (ROOT / build["context"] / build["dockerfile"]).read_text()
    stages = re.split(r"^FROM ", dockerfile, flags=re.MULTILINE)
    return next(stage for stage in stages if stage.split("\n", 1)[0].endswith(f" AS {build['target']}"))


@pytest.mark.parametrize(("service", "role"), [("generator-api", "api"), ("generator-worker", "worker")])
def test_generator_images_install_their_role_from_the_lock(service, role):
    assert f"--require-hashes --no-deps -r requirements/{role}.txt" in _stage(service)


def test_the_trainer_image_holds_what_gift_demo_starts():
    """The demo runs a redis-server, the generator's API and worker and two trainers in one container: the trainer
    image installs the worker's file of the lock beside its own, and Debian's redis-server."""
    build = SERVICES["trainer"]["build"]
    dockerfile = (ROOT / build["context"] / build["dockerfile"]).read_text()
    assert "--require-hashes --no-deps -r requirements/trainer.txt -r requirements/worker.txt" in dockerfile
    assert re.search(r"^RUN apt-get update && apt-get install .*\bredis-server\b", dockerfile, flags=re.MULTILINE)


def test_api_image_leaves_out_the_tiny_world():
    assert "plugins" not in _stage("generator-api")


@pytest.mark.parametrize("dockerfile", ["services/generator/Dockerfile", "services/trainer/Dockerfile"])
def test_images_start_from_the_official_python_base_unless_told(dockerfile):
    """BASE_IMAGE serves machines that cannot pull it (docs/images.md); by default every stage is python:3.11-slim."""
    text = (ROOT / dockerfile).read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, flags=re.MULTILINE)
    stages: list[str] = []
    for source, *alias in (line.split()[1:] for line in text.splitlines() if line.startswith("FROM ")):
        assert source == "${BASE_IMAGE}" or source in stages, f"{dockerfile}: FROM {source}"
        stages += alias[-1:]


def test_a_shipped_config_by_name_reads_its_paths_from_the_trainers_mounts():
    """`GIFT_TRAIN_CONFIG=mtil_order1`: the config's relative paths start at the working directory, the mounts'."""
    trainer = SERVICES["trainer"]
    mounts = {Path(_resolve(volume).split(":")[1]) for volume in trainer["volumes"]}
    config = parse_config(yaml.safe_load(shipped_configs.path("mtil_order1").read_text()), Path(trainer["working_dir"]))
    paths = [config.output_dir, config.model.pretrained, *(task.dataset.root for task in config.tasks)]
    assert all(Path(*path.parts[:2]) in mounts for path in paths), paths
