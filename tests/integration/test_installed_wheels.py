"""The package as users install it: wheels of the project and of the tiny world, built here and installed (not
editable) into a fresh virtual environment from the lock's trainer and worker roles, run the demo from an unrelated
folder and find the shipped configs by name."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from services.testing.installs import DEMO_TEST_SIZE, build_wheels, check_demo_outputs, fresh_environment, run_checked

pytestmark = pytest.mark.integration

# Run in the installed environment from an empty folder: where the code and the shipped configs come from, and that
# checking an MTIL config loads no torch (gift rehearsal run reads mtil_order{1,2} through the same lookup; the tiny
# world's config names the plugin's datasets, whose options come with their implementation).
CONFIGS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import services
    from services.trainer.config import load_config

    mtil = load_config("mtil_order2")
    torch = "torch" in sys.modules
    tinyworld = load_config("tinyworld")
    import tinyworld as plugin
    print(json.dumps({"services": services.__file__, "tinyworld": plugin.__file__, "prefix": sys.prefix,
                      "output_dir": str(tinyworld.output_dir), "pretrained": str(tinyworld.model.pretrained),
                      "mtil_tasks": [task.label for task in mtil.tasks], "torch": torch}))
    """
)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trainer and worker roles of the lock and the two wheels, nothing else: the environment's bin folder."""
    directory = tmp_path_factory.mktemp("installed")
    return fresh_environment(directory, ["trainer", "worker"], build_wheels(directory))


def user_env(tmp_path: Path) -> dict[str, str]:
    """The test's environment less what points at this checkout or its Redis."""
    env = {key: value for key, value in os.environ.items() if key not in ("GIFT_REDIS_URL", "VIRTUAL_ENV")}
    return {**env, "PYTHONPATH": "", "GIFT_HOME": str(tmp_path / "home")}


def test_installed_code_finds_its_shipped_configs_from_any_folder(installed: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = run_checked([installed / "python", "-c", CONFIGS_SCRIPT], cwd=elsewhere, env=user_env(tmp_path))
    found = json.loads(done.stdout)
    for package in ("services", "tinyworld"):
        assert Path(found[package]).is_relative_to(found["prefix"]), f"{package} came from {found[package]}"
    assert Path(found["pretrained"]).is_file() and Path(found["pretrained"]).is_relative_to(found["prefix"])
    assert found["output_dir"] == str(elsewhere / "runs" / "tinyworld_gift")
    assert found["mtil_tasks"][:3] == ["StanfordCars", "Food", "MNIST"]  # Order II, as shipped
    assert not found["torch"]


def test_the_installed_demo_runs_from_an_unrelated_folder(installed: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    demo = [installed / "gift", "demo", "--out", "demo-out", *DEMO_TEST_SIZE]
    done = subprocess.run(demo, cwd=elsewhere, env=user_env(tmp_path), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    check_demo_outputs(elsewhere / "demo-out", done.stdout)
