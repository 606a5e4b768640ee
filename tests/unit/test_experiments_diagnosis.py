"""The diagnosis's instrumented AWC computes the trainer's AWC, and the scale model's axes are read correctly."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from services.experiments.diagnosis import TOKEN_TABLE, ObservedAWC, class_word_ids, table
from services.experiments.scale_model import bare, sum_lr
from services.trainer.methods import AWC
from services.trainer.models import create_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _context() -> SimpleNamespace:
    """Parameters with a replay gradient in `.grad` (as between the engine's two passes) and an anchor."""
    torch.manual_seed(0)
    params = {TOKEN_TABLE: torch.randn(10, 4, requires_grad=True), "proj": torch.randn(4, 3, requires_grad=True)}
    params[TOKEN_TABLE].grad = torch.zeros(10, 4).index_fill_(0, torch.tensor([2, 5]), 1.0) * torch.randn(10, 4)
    params["proj"].grad = torch.randn(4, 3)
    anchor = {n: p.detach() + 0.1 * torch.randn_like(p) for n, p in params.items()}
    return SimpleNamespace(params=params, anchor=anchor, grad_scale=None)


def test_observed_awc_is_the_trainers_awc_and_records_the_class_rows() -> None:
    ctx = _context()
    observed = ObservedAWC(1.0, "step", lambda: torch.tensor([2]))
    assert torch.allclose(observed(ctx), AWC(1.0)(ctx))
    record = observed.records[0]
    rows = ctx.params[TOKEN_TABLE].grad.square().sum(dim=1)
    assert record["class_rows_share"] == pytest.approx((rows[2] / rows.sum()).item())
    assert record["rows_with_importance"] == 2
    assert record["penalty"] == pytest.approx(AWC(1.0)(ctx).item())


def test_zero_token_table_importance_leaves_only_the_other_tensors_pull() -> None:
    ctx = _context()
    without = ObservedAWC(1.0, "no_token_table", lambda: torch.tensor([2]))
    proj_only = AWC(1.0)(SimpleNamespace(**{**vars(ctx), "params": {"proj": ctx.params["proj"]}}))
    assert torch.allclose(without(ctx), proj_only)


def test_moving_average_importance_remembers_earlier_steps() -> None:
    ctx = _context()
    ema = ObservedAWC(1.0, "ema", lambda: torch.tensor([2]))
    ema(ctx)
    ctx.params[TOKEN_TABLE].grad = torch.zeros(10, 4)  # a step whose replay batch touches no token row
    ema(ctx)
    assert ema.records[0]["rows_with_importance"] == 2
    assert torch.count_nonzero(ema.ema[TOKEN_TABLE].sum(dim=1)) == 2  # the rows of the first step are kept


def test_class_word_ids_are_the_class_words_not_the_template() -> None:
    tokenizer = create_tokenizer("ViT-B-16")
    ids = class_word_ids(tokenizer, ["a photo of a cat.", "a photo of a dog."], "a photo of a {}.")
    words = set(tokenizer(["cat dog"])[0].tolist()) - set(tokenizer([""])[0].tolist())
    assert set(ids.tolist()) == words


def test_sum_lr_follows_the_warmup_cosine_schedule() -> None:
    assert sum_lr(1e-5, 100, 1000) == pytest.approx(1e-5 * (50.5 + 450), rel=1e-3)  # MTIL's: 5.0e-3
    assert bare("a cat") == bare("Cat") == "cat"
    assert bare("a") == "a"


def test_table_lists_each_trained_task(tmp_path) -> None:
    task = {
        "name": "objects",
        "row": [60.0, 40.0, 30.0],
        "probe": 80.0,
        "class_rows_adam_v": 0.03,
        "displacement": {"model": 0.04, "token_table": 0.005, "class_rows": 0.05},
        "last_losses": {"task": 1.5},
    }
    result = {"zero_shot": [40.0, 42.0, 32.0], "probe_zero_shot": 84.0, "tasks": [task],
              "config": {"method": {"overrides": {"awc": 0.0}}}}  # fmt: skip
    (tmp_path / "ft-1task.json").write_text(json.dumps(result))
    awc = {**task, "last_losses": {"task": 1.9, "awc": 0.4}}  # an AWC run whose records predate the penalty
    gift = {**result, "tasks": [awc], "config": {"method": {"overrides": {"awc": 2.0}}}}
    (tmp_path / "gift-1task.json").write_text(json.dumps(gift))
    lines = table([tmp_path / "ft-1task.json", tmp_path / "gift-1task.json"]).splitlines()
    assert lines[2] == "| zero-shot | | 40.0 | | 37.0 | 84.0 |" + " |" * 7
    assert lines[3] == "| ft-1task | objects | 60.0 |  | 35.0 | 80.0 | 4.00% | 0.50% | 5.0% | 0.030 |  |  |  |"
    assert lines[4].endswith("| 0.2 |")  # the logged term over its weight


def test_overlap_is_one_where_the_importance_is_flat_and_follows_it_otherwise() -> None:
    ctx = _context()
    features = torch.randn(8, 4)
    ctx.task_logits = features @ ctx.params["proj"] + ctx.params[TOKEN_TABLE][:3].sum(dim=1)
    ctx.labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    observed = ObservedAWC(1.0, "step", lambda: torch.tensor([2]), measure_overlap=True)
    flat = {n: torch.ones_like(p) for n, p in ctx.params.items()}
    assert observed.overlap(ctx, flat) == pytest.approx({"task_overlap": 1.0, "task_overlap_towers": 1.0})
    doubled = {**flat, "proj": 2 * flat["proj"]}
    assert observed.overlap(ctx, doubled)["task_overlap_towers"] == pytest.approx(2.0)
