"""The rehearsal end to end: an MTIL order on the full-size stand-ins, a kill -9 and a --resume (an hour or more on
a CPU: slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.rehearsal.run import FIRST_LINE, OUTPUTS, Sizes, run_rehearsal

pytestmark = pytest.mark.slow


@pytest.mark.timeout(3 * 3600)  # 45 min to 2 h an order on an idle 2-core machine, by its CPU; 300 s would stop it
@pytest.mark.parametrize("order", [1, 2])
def test_an_mtil_order_runs_to_the_end_through_a_kill_and_a_resume(tmp_path: Path, order: int) -> None:
    report = run_rehearsal(tmp_path, order=order, sizes=Sizes(iterations=1, pairs=1, steps=1, png_size=64))
    assert (tmp_path / "rehearsal.md").read_text().splitlines()[0] == FIRST_LINE
    assert json.loads((tmp_path / "rehearsal.json").read_text()) == report
    assert 0 < report["killed_after_steps"] < report["total_steps"] == 11
    assert set(report["outputs"]) == set(OUTPUTS) and all(size > 0 for size in report["outputs"].values())
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(metrics["accuracy"]) == 11 and all(len(row) == 11 for row in metrics["accuracy"])
    assert report["png"]["png_bytes"] > 0 and report["png"]["redis_memory_usage_bytes"] >= report["png"]["png_bytes"]
