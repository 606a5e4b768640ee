"""`services/testing/trainer.py: measure_steps`, which the GPU check imports: one method in one precision, measured."""

from __future__ import annotations

import pytest

from gift_common.errors import UserError
from services.testing.trainer import measure_steps


def test_measure_steps_reports_time_and_memory_of_one_configuration() -> None:
    result = measure_steps(batch=4, replay_batch=4, method="gift", precision="bf16", iterations=2, warmup=1, classes=3)
    assert result["method"] == "gift" and result["precision"] == "bf16" and result["teacher"] == "cached"
    assert result["s_per_it"] > 0 and result["teacher_cache_build_s"] > 0
    assert result["peak_memory_bytes"] > 2**20


def test_measure_steps_refuses_a_precision_the_device_cannot_do() -> None:
    with pytest.raises(UserError, match=r"training\.precision: fp16"):
        measure_steps(batch=4, replay_batch=4, method="ft", precision="fp16", iterations=1, warmup=0, classes=3)
