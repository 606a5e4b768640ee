"""One reading of a device setting for the worker and the trainer."""

from __future__ import annotations

import pytest
import torch

from gift_common.errors import UserError
from services.devices import resolve_device


def test_auto_is_cuda_where_there_is_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto", index=1) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto", index=1) == torch.device("cuda:1")


def test_a_bare_cuda_is_the_process_gpu_and_an_explicit_one_is_kept() -> None:
    assert resolve_device("cuda") == torch.device("cuda:0")
    assert resolve_device("cuda", index=3) == torch.device("cuda:3")
    assert resolve_device("cuda:2", index=3) == torch.device("cuda:2")
    assert resolve_device("cpu", index=3) == torch.device("cpu")


def test_a_device_torch_does_not_know_is_a_clear_error() -> None:
    with pytest.raises(UserError, match="device 'gpu': expected auto, cpu, cuda"):
        resolve_device("gpu")
