"""training.precision: bf16 on a CPU trains and stays near fp32, the precision-safe parts are fp32, fp16's scaler
covers both backward passes and is checkpointed, and a precision the hardware cannot do is a clear error."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gift_common.errors import UserError
from services.testing.trainer import make_task
from services.trainer import engine as engine_module
from services.trainer import precision as precision_module
from services.trainer.config import parse_config
from services.trainer.context import ReplayBatch, StepContext, Task
from services.trainer.engine import Engine
from services.trainer.methods import build_terms
from services.trainer.models import TINY_TEST_ARCHITECTURE, create_model, create_tokenizer
from services.trainer.precision import Precision, precision_for
from services.trainer.presets import GIFT, MethodSettings

EVERY_TERM = MethodSettings(distill=1.0, ita=0.25, awc=1.0, l2=1.0, ewc=1.0, lwf=1.0)
# bf16 keeps 8 significant bits: one rounding moves a value by up to 2^-9 ≈ 2e-3 of itself. A term computed in fp32
# from embeddings a bf16 forward pass made must stay within one such rounding of its fp32 value: the rounding errors
# of the embeddings average out over the batch's rows. Computing the logits in bf16 breaks this (the task loss moves
# by 4e-3). Measured on this tiny model: at most 1.1e-4.
FORWARD_TOLERANCE = 2**-9
# AWC's Fisher squares the replay gradient, which comes out of a bf16 backward pass: about 7% off in norm here, and
# the squares amplify it; the weighted sum over every parameter brings it back to about 1.2%, measured. 5% bounds it.
AWC_TOLERANCE = 0.05

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def base_model() -> nn.Module:
    torch.manual_seed(0)
    return create_model(TINY_TEST_ARCHITECTURE)


@pytest.fixture(scope="module")
def task() -> Task:
    task = make_task(create_tokenizer(TINY_TEST_ARCHITECTURE), 32, batch=8, replay_batch=8, classes=5,
                     replay_size=16, iterations=3)  # fmt: skip
    task.lr = 1e-3  # θ moves away from θ_{t−1} in a few steps, so that AWC, L2 and EWC are not zero
    return task


def engine(base_model: nn.Module, settings: MethodSettings, precision: str = "fp32") -> Engine:
    return Engine(copy.deepcopy(base_model), build_terms(settings), precision=precision, progress=False)


def a_batch(task: Task) -> tuple[Tensor, Tensor, ReplayBatch]:
    images, labels = task.train[0]
    return images, labels, ReplayBatch(*task.replay.batches[0])


def flat_gradient(model: nn.Module) -> Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.fixture(scope="module")
def trained(base_model: nn.Module, task: Task) -> dict:
    """Every term's engine after one fp32 task (EWC has a Fisher) and a few steps into the next."""
    fp32 = engine(base_model, EVERY_TERM)
    fp32.train_task(task)
    fp32.begin_task(task)
    for _ in range(2):
        fp32.step()
    return fp32.state_dict()


def test_bf16_loss_terms_stay_within_a_bf16_rounding_of_fp32(base_model: nn.Module, task: Task, trained: dict) -> None:
    logs, gradients = {}, {}
    for precision in ("fp32", "bf16"):
        resumed = engine(base_model, EVERY_TERM, precision)
        resumed.load_state_dict(trained)
        resumed.begin_task(task)
        logs[precision] = resumed.compute_gradients(*a_batch(task))
        gradients[precision] = flat_gradient(resumed.model)
    fp32, bf16 = logs["fp32"], logs["bf16"]
    assert set(fp32) == {"task", "distill", "ita", "awc", "l2", "ewc", "lwf", "loss"}
    assert all(fp32[name] > 0 for name in fp32)
    for name in ("task", "distill", "ita", "lwf"):
        assert bf16[name] == pytest.approx(fp32[name], rel=FORWARD_TOLERANCE), name
    assert bf16["awc"] == pytest.approx(fp32["awc"], rel=AWC_TOLERANCE)
    assert bf16["l2"] == fp32["l2"] and bf16["ewc"] == fp32["ewc"]  # fp32 parameters only: no forward pass
    assert F.cosine_similarity(gradients["bf16"], gradients["fp32"], dim=0) > 0.99  # the same step direction


def test_under_bf16_logits_teacher_cache_gradients_and_weights_are_fp32(base_model: nn.Module, task: Task) -> None:
    bf16 = engine(base_model, EVERY_TERM, "bf16")
    bf16.begin_task(task)
    ctx = StepContext(bf16.model, bf16.state, *a_batch(task))
    for logits in (ctx.task_logits, ctx.teacher_task_logits, ctx.replay_logits, ctx.teacher_replay_logits):
        assert logits.dtype == torch.float32
    assert bf16.state.teacher_replay.images.dtype == bf16.state.teacher_replay.texts.dtype == torch.float32
    bf16.step()
    for param in bf16.model.parameters():
        assert param.dtype == torch.float32
        assert param.grad is None or param.grad.dtype == torch.float32


def test_a_bf16_run_on_a_cpu_trains(base_model: nn.Module, task: Task) -> None:
    bf16 = engine(base_model, GIFT, "bf16")
    before = copy.deepcopy(bf16.model.state_dict())
    history = bf16.train_task(task)
    assert len(history) == task.iterations
    assert all(torch.isfinite(torch.tensor(list(log.values()))).all() for log in history)
    assert any(not torch.equal(before[name], value) for name, value in bf16.model.state_dict().items())


@pytest.fixture
def fp16_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """fp16 with its gradient scaler on this CPU (PyTorch runs both there): the mechanics, not the speed."""
    monkeypatch.setattr(engine_module, "precision_for", lambda name, device: Precision(name, "cpu"))


def resumed_gradients(base_model: nn.Module, task: Task, trained: dict, settings: MethodSettings, precision: str):
    """The log and `.grad` of one compute_gradients from the trained state, and the loss scale (1 without one)."""
    resumed = engine(base_model, settings, precision)
    terms = trained["terms"] if settings == EVERY_TERM else [term.state_dict() for term in resumed.terms]
    resumed.load_state_dict({**trained, "terms": terms, "scaler": resumed.scaler.state_dict()})
    resumed.begin_task(task)
    log = resumed.compute_gradients(*a_batch(task))
    scale = resumed.scaler.get_scale() if resumed.scaler.is_enabled() else 1.0
    return log, flat_gradient(resumed.model), scale


def test_fp16_scales_both_backward_passes_and_awc_reads_the_true_gradient(
    base_model: nn.Module, task: Task, trained: dict, fp16_on_cpu: None
) -> None:
    replay_and_task = MethodSettings(distill=1.0, ita=0.25)  # without AWC, whose gradient would dwarf the others
    _, fp32, _ = resumed_gradients(base_model, task, trained, replay_and_task, "fp32")
    _, fp16, scale = resumed_gradients(base_model, task, trained, replay_and_task, "fp16")
    assert scale == 2.0**16
    unscaled = fp16 / scale  # right only if both passes' gradients carry the same scale
    assert unscaled.norm().item() == pytest.approx(fp32.norm().item(), rel=0.05)
    assert F.cosine_similarity(unscaled, fp32, dim=0) > 0.99
    fp32_log = resumed_gradients(base_model, task, trained, EVERY_TERM, "fp32")[0]
    fp16_log = resumed_gradients(base_model, task, trained, EVERY_TERM, "fp16")[0]
    assert fp16_log["awc"] == pytest.approx(fp32_log["awc"], rel=AWC_TOLERANCE)


def test_fp16_loss_scale_is_checkpointed(base_model: nn.Module, task: Task, fp16_on_cpu: None) -> None:
    fp16 = engine(base_model, GIFT, "fp16")
    fp16.begin_task(task)
    fp16.step()
    fp16.scaler.update(new_scale=1024.0)  # as after overflows: the scale a resumed run must continue with
    resumed = engine(base_model, GIFT, "fp16")
    resumed.load_state_dict(fp16.state_dict())
    assert resumed.scaler.get_scale() == 1024.0


def test_fp16_on_a_cpu_is_a_user_error_naming_the_setting(base_model: nn.Module) -> None:
    with pytest.raises(UserError, match=r"^training\.precision: fp16 needs a CUDA GPU, and this run's device is cpu"):
        engine(base_model, GIFT, "fp16")


def test_bf16_on_a_gpu_without_native_bf16_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision_module, "native_bf16", lambda device: False)
    with pytest.raises(UserError, match=r"^training\.precision: bf16 is not native on cuda:0"):
        precision_for("bf16", "cuda:0")


def test_bf16_on_a_cpu_is_allowed() -> None:
    assert precision_for("bf16", "cpu") == Precision("bf16", "cpu")


def test_config_reads_the_precision_and_names_a_wrong_one(tmp_path) -> None:
    data = {"output_dir": "out", "model": {"architecture": "ViT-B-16-quickgelu"},
            "tasks": [{"dataset": {"type": "imagefolder", "root": "data"}}]}  # fmt: skip
    assert parse_config(data, tmp_path).training.precision == "fp32"
    assert parse_config({**data, "training": {"precision": "bf16"}}, tmp_path).training.precision == "bf16"
    with pytest.raises(UserError, match=r"training\.precision: input should be 'fp32', 'bf16' or 'fp16'"):
        parse_config({**data, "training": {"precision": "fp8"}}, tmp_path)
