"""The engine: GIFT's two-pass gradient, the teacher cache, frozen logit_scale, every method through one step."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gift_common.schedules import warmup_cosine
from services.testing.trainer import CLASSES, REPLAY_PROMPTS, write_tiny_arch
from services.trainer.context import CachedTeacher, ReplayBatch, ReplaySet, Task
from services.trainer.engine import Engine
from services.trainer.methods import build_terms
from services.trainer.models import create_model, create_tokenizer
from services.trainer.presets import GIFT, PRESETS, preset


@pytest.fixture(scope="module", autouse=True)
def one_thread_float64():
    """One thread (tiny matrices run faster on one than on two contended ones) and float64: the tests compare two
    computations of the same quantity, and float32 rounding of sums taken in another order, amplified by Adam's
    normalisation on near-zero gradients, exceeded any fixed tolerance on some CPUs. Restored for other modules."""
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)


@pytest.fixture(scope="module")
def arch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_arch(tmp_path_factory.mktemp("arch"))


@pytest.fixture(scope="module")
def base_model(arch: Path) -> nn.Module:
    torch.manual_seed(0)
    return create_model(arch)


@pytest.fixture(scope="module")
def tokenizer(arch: Path):
    return create_tokenizer(arch)


def make_task(tokenizer, *, train_batches: int = 2, replay_batches: int = 2, iterations: int = 3) -> Task:
    """Random images, 3 classes, 8 replay pairs with repeated prompts; the ordered pass batches differently."""
    g = torch.Generator().manual_seed(1)
    train = [(torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 3, (4,), generator=g)) for _ in range(2)]
    images, tokens, index = torch.randn(8, 3, 32, 32, generator=g), tokenizer(REPLAY_PROMPTS), torch.arange(8)
    order = torch.randperm(8, generator=g).split(4)
    batches = [(images[i], tokens[i], index[i]) for i in order]
    ordered = [(images[:5], tokens[:5], index[:5]), (images[5:], tokens[5:], index[5:])]
    return Task(
        name="toy",
        class_tokens=tokenizer([f"a photo of a {c}." for c in CLASSES]),
        train=train[:train_batches],
        replay=ReplaySet(batches[:replay_batches], ordered),
        lr=1e-3,
        iterations=iterations,
        warmup=1,
    )


def make_engine(base_model: nn.Module, settings=GIFT, **kwargs) -> Engine:
    return Engine(copy.deepcopy(base_model), build_terms(settings), progress=False, **kwargs)


def explicit_gift_gradient(
    model: nn.Module, previous: nn.Module, task: Task, images: Tensor, labels: Tensor, replay: ReplayBatch
) -> dict[str, Tensor]:
    """∇(distill + ITA) + ∇(task + Σ F⊙(θ−θ_{t−1})²), F = (∇(distill + ITA))² / mean, written out with autograd."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    anchor = dict(previous.named_parameters())
    s, tau, eps = model.logit_scale.exp().detach(), 2.0, 0.2

    def logits(m: nn.Module, images: Tensor, tokens: Tensor) -> Tensor:
        return s * F.normalize(m.encode_image(images)) @ F.normalize(m.encode_text(tokens)).T

    student = logits(model, replay.images, replay.tokens)
    with torch.no_grad():
        teacher = logits(previous, replay.images, replay.tokens)

    def kd(a: Tensor, b: Tensor) -> Tensor:
        return tau**2 * F.cross_entropy(a / tau, F.softmax(b / tau, dim=1))

    prompts = [REPLAY_PROMPTS[i] for i in replay.index]
    same = torch.tensor([[float(p == q) for q in prompts] for p in prompts])
    y = same / same.sum(dim=1, keepdim=True)
    distill = kd(student, teacher) + kd(student.T, teacher.T)
    ita = 0.25 * (F.cross_entropy(student, y, label_smoothing=eps) + F.cross_entropy(student.T, y, label_smoothing=eps))
    first = torch.autograd.grad(distill + ita, list(params.values()))
    fisher = {n: (g**2 / (g**2).mean()).detach() for n, g in zip(params, first, strict=True)}

    task_logits = logits(model, images, task.class_tokens)
    awc = sum((fisher[n] * (p - anchor[n].detach()) ** 2).sum() for n, p in params.items())
    second = torch.autograd.grad(F.cross_entropy(task_logits, labels, label_smoothing=eps) + awc, list(params.values()))
    return {n: a + b for n, a, b in zip(params, first, second, strict=True)}


def test_gift_step_gradient_is_the_sum_of_both_passes(base_model: nn.Module, tokenizer) -> None:
    task = make_task(tokenizer)
    engine = make_engine(base_model)
    engine.begin_task(task)
    engine.step()
    engine.step()  # θ has moved away from θ_{t−1}, so AWC contributes
    images, labels = task.train[0]
    replay = ReplayBatch(*task.replay.batches[1])
    log = engine.compute_gradients(images, labels, replay)
    assert log["awc"] > 0
    expected = explicit_gift_gradient(engine.model, engine.state.previous, task, images, labels, replay)
    for name, param in engine.state.params.items():
        assert torch.allclose(param.grad, expected[name], rtol=1e-4, atol=1e-7), name


def test_gradient_checkpointing_gives_the_same_gift_gradient(base_model: nn.Module, tokenizer) -> None:
    """training.grad_checkpointing recomputes activations in the backward pass: memory, not the result."""
    task = make_task(tokenizer)
    engines = [make_engine(base_model), make_engine(base_model)]
    engines[1].model.set_grad_checkpointing()
    images, labels = task.train[0]
    gradients = []
    for engine in engines:
        engine.begin_task(task)
        engine.step()  # AWC contributes once θ has moved
        engine.compute_gradients(images, labels, ReplayBatch(*task.replay.batches[1]))
        gradients.append({name: param.grad.clone() for name, param in engine.state.params.items()})
    assert engines[1].model.transformer.grad_checkpointing and not engines[0].model.transformer.grad_checkpointing
    for name, grad in gradients[0].items():
        assert torch.allclose(gradients[1][name], grad, rtol=1e-6, atol=1e-10), name


def test_cached_teacher_trains_like_a_teacher_forward_every_step(base_model: nn.Module, tokenizer) -> None:
    task = make_task(tokenizer, iterations=4)
    runs = {mode: make_engine(base_model, teacher_mode=mode) for mode in ("cached", "per_step")}
    histories = {mode: engine.train_task(task) for mode, engine in runs.items()}
    for a, b in zip(histories["cached"], histories["per_step"], strict=True):
        assert a == pytest.approx(b, rel=1e-5)
    cached, per_step = (dict(engine.model.named_parameters()) for engine in runs.values())
    for name, param in cached.items():
        assert torch.allclose(param, per_step[name], rtol=1e-5, atol=1e-6), name


def test_cached_teacher_encodes_each_replay_image_once_per_task(base_model: nn.Module, tokenizer) -> None:
    engine = make_engine(base_model)
    engine.begin_task(make_task(tokenizer))
    previous, encoded = engine.state.previous, []
    encode = previous.encode_image
    previous.encode_image = lambda images, **kw: encoded.append(len(images)) or encode(images, **kw)
    for _ in range(3):
        engine.step()  # 12 replay images go through the student, 8 distinct ones through the teacher
    assert encoded == [5, 3]


def test_a_replay_set_that_brings_the_teachers_cache_is_not_encoded_again(base_model: nn.Module, tokenizer) -> None:
    """synthetic.filter's pass computed the teacher's embeddings already: the engine uses them, to the same losses."""
    task = make_task(tokenizer)
    assert task.replay is not None
    given = CachedTeacher.compute(copy.deepcopy(base_model).eval(), task.replay.ordered, "cpu")
    brought = make_task(tokenizer)
    brought.replay = ReplaySet(brought.replay.batches, ordered=[], teacher=given)  # type: ignore[union-attr]
    engine, encoded = make_engine(base_model), []
    engine.begin_task(brought)
    encode = engine.state.previous.encode_image
    engine.state.previous.encode_image = lambda images, **kw: encoded.append(len(images)) or encode(images, **kw)
    logs = [engine.step() for _ in range(3)]
    assert encoded == []
    for log, reference in zip(logs, make_engine(base_model).train_task(task), strict=True):
        assert log == pytest.approx(reference, rel=1e-12)  # another copy of the weights: the last bit may differ


def test_cache_needs_every_index_once(base_model: nn.Module, tokenizer) -> None:
    tokens = tokenizer(REPLAY_PROMPTS[:2])
    with pytest.raises(ValueError, match="exactly once"):
        CachedTeacher.compute(base_model, [(torch.zeros(2, 3, 32, 32), tokens, torch.tensor([0, 2]))], "cpu")


def test_logit_scale_stays_frozen(base_model: nn.Module, tokenizer) -> None:
    engine = make_engine(base_model)
    before = engine.model.logit_scale.detach().clone()
    engine.train_task(make_task(tokenizer))
    assert torch.equal(engine.model.logit_scale, before)
    assert not engine.model.logit_scale.requires_grad


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_method_runs_through_the_same_step(base_model: nn.Module, tokenizer, name: str) -> None:
    history = make_engine(base_model, preset(name)).train_task(make_task(tokenizer, iterations=1))
    expected = {term.name for term in build_terms(PRESETS[name])} | {"loss", "lr"}
    assert set(history[0]) == expected
    assert history[0]["loss"] == pytest.approx(sum(v for k, v in history[0].items() if k not in ("loss", "lr")))


def test_switched_off_parts_leave_no_term(base_model: nn.Module, tokenizer) -> None:
    task = make_task(tokenizer, iterations=1)
    assert {"task", "distill", "ita", "awc"} <= set(make_engine(base_model).train_task(task)[0])
    assert "ita" not in make_engine(base_model, preset("gift", ita=0.0)).train_task(task)[0]
    l2_log = make_engine(base_model, preset("gift_l2")).train_task(task)[0]
    assert "l2" in l2_log and "awc" not in l2_log


def test_methods_without_replay_need_no_replay_set(base_model: nn.Module, tokenizer) -> None:
    task = make_task(tokenizer, iterations=1)
    task.replay = None
    make_engine(base_model, preset("lwf")).train_task(task)
    with pytest.raises(ValueError, match="no replay set"):
        make_engine(base_model).train_task(task)


def test_ewc_penalises_only_after_its_first_task(base_model: nn.Module, tokenizer) -> None:
    engine = make_engine(base_model, preset("ewc", ewc_batches=1))
    first = engine.train_task(make_task(tokenizer, iterations=2))
    assert all(log["ewc"] == 0 for log in first)
    second = engine.train_task(make_task(tokenizer, iterations=2))
    assert second[1]["ewc"] > 0
    assert engine.tasks_done == 2


def test_warmup_then_cosine_schedule(base_model: nn.Module, tokenizer) -> None:
    factor = warmup_cosine(warmup=2, total=6)
    half_cos = 0.5 * (1 + math.cos(math.pi / 4))
    assert [factor(s) for s in range(7)] == pytest.approx([0.5, 1.0, 1.0, half_cos, 0.5, 1 - half_cos, 0.0])
    history = make_engine(base_model, preset("ft")).train_task(make_task(tokenizer, iterations=3))
    assert [log["lr"] for log in history] == pytest.approx([1e-3, 1e-3, 0.5e-3])


def test_resuming_mid_task_matches_an_uninterrupted_run(base_model: nn.Module, tokenizer) -> None:
    task = make_task(tokenizer, train_batches=1, replay_batches=1, iterations=4)
    whole = make_engine(base_model)
    whole.train_task(task)

    first = make_engine(base_model)
    first.begin_task(task)
    first.step()
    first.step()
    checkpoint = copy.deepcopy(first.state_dict())
    resumed = make_engine(base_model)
    resumed.load_state_dict(checkpoint)
    assert len(resumed.train_task(task)) == 2
    for (name, a), b in zip(whole.model.named_parameters(), resumed.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name
