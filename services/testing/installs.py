"""Fresh virtual environments as users install them: a role's files of the lock (hashed, nothing resolved), then
the project's own distributions, never the editable checkout the tests run from."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]  # the checkout whose lock and sources are installed
# The files the two distributions are built from; built in a copy, so that no build/ folder left in the checkout by
# an earlier build (setuptools does not clear it) slips moved or deleted modules into a wheel.
SOURCES = ("pyproject.toml", "README.md", "gift_common", "services", "plugins/tinyworld")
NOT_SOURCES = shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".*")
# `gift demo` at its test size, as every install is checked (a checkout, the wheels, the trainer image): the whole
# path, generator included, in a minute or two; the figures are noise at this size.
DEMO_TEST_SIZE = ("--tasks", "2", "--iterations", "3", "--synthetic-size", "8", "--synthetic-steps", "2",
                  "--probe-size", "60")  # fmt: skip


def check_demo_outputs(out: Path, stdout: str) -> None:
    """What a `gift demo` of DEMO_TEST_SIZE leaves: its summary (every figure finite), the table and the kept line on
    stdout, its pictures, one synthetic set per task made by the generator, GIFT's metrics on the test splits."""
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"zero-shot", "ft", "gift"}
    for entry in summary.values():
        assert {"transfer", "avg", "last", "forget", "pretraining"} <= set(entry)
        assert all(math.isfinite(entry[key]) for key in ("avg", "last", "forget", "pretraining"))
    assert "| gift |" in stdout and "| ft |" in stdout and "| zero-shot |" in stdout
    assert "of the Transfer that FT lost" in stdout or "FT lost no Transfer" in stdout
    for picture in ("accuracy_matrices.png", "synthetic_samples.png"):
        with Image.open(out / picture) as image:
            assert image.width > 200
    assert len(list((out / "synthetic" / "sets").glob("*.json"))) == 2  # one per task, made over HTTP
    assert "succeeded: 8 images" in (out / "logs" / "worker0.log").read_text()
    gift = json.loads((out / "runs" / "gift" / "metrics.json").read_text())
    assert gift["split"] == "test" and len(gift["accuracy"]) == 2


def run_checked(args: Sequence[str | Path], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command; fail with its output when it fails."""
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}"
    return result


def fresh_environment(directory: Path, roles: Sequence[str], packages: Sequence[Path]) -> Path:
    """A virtual environment in ``directory`` with the lock's files of ``roles`` and ``packages`` (wheels or source
    folders) installed without resolving anything; returns its bin folder.

    Installed with uv (the lock's own tool, in the dev role): the same hashed files as pip takes, in seconds."""
    uv = Path(sys.executable).with_name("uv")
    venv = directory / "venv"
    run_checked([uv, "venv", "--quiet", "--python", sys.executable, venv])
    install = [uv, "pip", "install", "--quiet", "--python", venv / "bin" / "python", "--no-deps"]
    locked = [arg for role in roles for arg in ("-r", ROOT / "requirements" / f"{role}.txt")]
    run_checked([*install, "--require-hashes", *locked])
    run_checked([*install, "--no-build-isolation", *packages])
    return venv / "bin"


def build_wheels(directory: Path) -> list[Path]:
    """Wheels of the project and of the tiny world, built from a copy of their sources as `pip wheel` builds them."""
    source, wheels = directory / "source", directory / "wheels"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=NOT_SOURCES)
        else:
            shutil.copy2(ROOT / name, source / name)
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir"]
    run_checked([*build, wheels, source, source / "plugins" / "tinyworld"])
    return sorted(wheels.glob("*.whl"))
