"""The trainer's numeric precision (`training.precision`): autocast for the models' forward passes, fp32 elsewhere.

Weights, optimiser state and gradients stay in fp32 (master weights); only the models' forward passes run under
autocast, in bf16 or fp16. What leaves a model (its embeddings) is cast to fp32 before anything else is computed
from it: logits, softmax, KL, log-softmax and AWC's squared gradients are fp32 (METHOD.md, "Numeric precision").
fp16's narrow exponent range needs a gradient scaler; bf16 has fp32's range and needs none. On CUDA, fp32 matmuls
and convolutions use TF32 tensor cores.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from gift_common.errors import UserError
from services.trainer.fields import PrecisionName

LOW_PRECISION = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """A precision on a device type; build it with `precision_for`, which checks that the hardware can do it."""

    name: PrecisionName = "fp32"
    device_type: str = "cpu"

    def autocast(self) -> AbstractContextManager:
        """Where the models' forward passes run; fp32 enters nothing, so its results are those of plain PyTorch."""
        if self.name == "fp32":
            return nullcontext()
        return torch.autocast(self.device_type, dtype=LOW_PRECISION[self.name])

    def grad_scaler(self) -> torch.amp.GradScaler:
        """fp16's loss scaler (small gradients would flush to zero in fp16); disabled, an identity, otherwise."""
        return torch.amp.GradScaler(self.device_type, enabled=self.name == "fp16")


FP32 = Precision()


def precision_for(name: PrecisionName, device: torch.device | str) -> Precision:
    """The precision on this device, or a UserError naming the setting when the hardware cannot do it.

    fp16 needs a CUDA GPU (its scaler and fast kernels are CUDA's). bf16 needs a CUDA GPU with native bf16
    (compute capability 8.0, Ampere, or later; older GPUs only emulate it, slower than fp32) or a CPU, where it
    runs, slowly on CPUs without bf16 instructions. On CUDA, fp32 matmuls are allowed to use TF32.
    """
    device = torch.device(device)
    if name == "fp16" and device.type != "cuda":
        raise UserError(f"training.precision: fp16 needs a CUDA GPU, and this run's device is {device}; "
                        "use bf16 or fp32")  # fmt: skip
    if name == "bf16" and device.type not in ("cpu", "cuda"):
        raise UserError(f"training.precision: bf16 runs on a CPU or a CUDA GPU, not on {device}; use fp32")
    if name == "bf16" and device.type == "cuda" and not native_bf16(device):
        raise UserError(f"training.precision: bf16 is not native on {device} (it needs a GPU of compute "
                        "capability 8.0 or later); use fp16 or fp32")  # fmt: skip
    if device.type == "cuda":
        enable_tf32()
    return Precision(name, device.type)


def native_bf16(device: torch.device) -> bool:
    """Whether the GPU computes in bf16 itself, not by emulation."""
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def enable_tf32() -> None:
    """TF32 tensor cores for fp32 matmuls and convolutions: many times the fp32 rate, inputs rounded to 10 bits of
    mantissa, sums kept in fp32. Of what the losses compute, only the logits' matmul (s·f_I·f_Tᵀ) is a matmul: its
    error stays near 1e-5 of a unit cosine, while bf16 logits would be rounded to steps of 1/8 at s·cos ≈ 20.
    """
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
