"""The GPU check's smoke mode: the whole script on a CPU with tiny sizes, so a GPU's minutes go to measuring."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_smoke_run_writes_one_json_line_marked_as_stand_in(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GIFT_TORCH_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--smoke", "--device", "cpu", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert json.loads(run.stdout.splitlines()[-1]) == result
    assert next(iter(result)) == "stand_in" and result["stand_in"].startswith("STAND-IN")
    generator = result["generator"]
    assert generator["c_service_registered_stand_in"] is True  # the worker registered the model as a stand-in
    assert set(generator["b_raw_images_per_s"]) == {"1", "2", "4"} and generator["unet_gflop_per_image_step"] > 0
    for name in ("service_over_raw", "best_batch_over_one_prompt", "unet_over_peak"):
        assert result["ratios"][name] > 0
    trainer = result["trainer"]
    if "pending" not in trainer:  # measured once bench/trainer_step.py offers measure_steps
        assert set(trainer) == {"ft_fp32", "gift_fp32", "ft_bf16", "gift_bf16"}
        assert all("s_per_it" in run or "error" in run for run in trainer.values())
        assert result["projection"]["mtil_order1_training_h"] > 0
