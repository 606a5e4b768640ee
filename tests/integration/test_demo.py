"""`gift demo` as a user runs it: its own Redis, API, worker and two trainers, outputs written, nothing left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from services.testing.installs import DEMO_TEST_SIZE, check_demo_outputs

pytestmark = pytest.mark.integration


def demo_command(out: Path) -> list[str]:
    return [sys.executable, "-m", "services.cli", "demo", "--out", str(out), *DEMO_TEST_SIZE]


def demo_env(tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "GIFT_REDIS_URL"}
    return {**env, "GIFT_HOME": str(tmp_path / "home")}


@pytest.mark.slow  # CI runs the same demo, installed from wheels (test_installed_wheels.py), with the same checks
def test_the_demo_trains_ft_and_gift_through_the_generator_and_writes_its_outputs(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = subprocess.run(demo_command(out), env=demo_env(tmp_path), capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    check_demo_outputs(out, done.stdout)
    again = subprocess.run(demo_command(out), env=demo_env(tmp_path), capture_output=True, text=True, timeout=280)
    assert again.returncode == 0, again.stderr[-3000:]  # a rerun into the same folder trains afresh


def test_ctrl_c_stops_every_process_the_demo_started(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    demo = subprocess.Popen(demo_command(out), env=demo_env(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (out / "runs" / "gift.log").exists():
            assert time.monotonic() < deadline and demo.poll() is None, "the demo never started its trainers"
            time.sleep(0.2)
        children = psutil.Process(demo.pid).children(recursive=True)
        names = " ".join(" ".join(child.cmdline()) for child in children)
        assert "redis-server" in names and "serve" in names and "worker" in names and "train" in names
        demo.send_signal(signal.SIGINT)
        assert demo.wait(60) == 130
        _, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, [" ".join(p.cmdline()) for p in alive]
    finally:
        if demo.poll() is None:
            demo.kill()
