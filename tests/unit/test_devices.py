"""One reading of a device setting for the worker and the trainer, and one description of it for reports."""

from __future__ import annotations

import os

import pytest
import torch

from gift_common.errors import UserError
from services import devices
from services.devices import describe, resolve_device


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


def test_a_cpu_is_described_by_its_model_and_vector_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """Figures made on two CPUs differ by their vector units as much as by their cores: the report names both."""
    fields = {"model name": "Example CPU 9000", "flags": "fpu sse avx avx2 fma avx512f"}
    monkeypatch.setattr(devices, "_cpuinfo", lambda: fields)
    expected = f"Example CPU 9000, {os.cpu_count()} cores, AVX-512, torch {torch.__version__}"
    assert describe(torch.device("cpu")) == expected
    fields["flags"] = "fpu sse avx avx2 fma"
    assert ", AVX2, " in describe(torch.device("cpu"))
    monkeypatch.setattr(devices, "_cpuinfo", lambda: {})  # no /proc/cpuinfo: the platform's own words
    assert ", no AVX2, " in describe(torch.device("cpu"))
