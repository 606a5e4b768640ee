"""What an uploaded LoRA file must be before any worker loads it: safetensors (never a pickle), PEFT/diffusers keys
that name layers of its base model, shapes that fit those layers, a rank within the server's limit.

The file is read with the ``safetensors`` library (its header checked against its bytes); no tensor is built and
nothing is unpickled. The base
model's layers come from its workers' registration (``synthesis.adaptable_layers``), so the API checks an adapter
without loading the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from safetensors import SafetensorError, deserialize

# The two halves of a LoRA layer under the names diffusers loads: PEFT's (lora_A, lora_B) and diffusers' own older
# ones (lora.down, lora.up); ``.alpha`` is a scalar some writers add beside them.
DOWN = (".lora_A.weight", ".lora.down.weight")
UP = (".lora_B.weight", ".lora.up.weight")
ALPHA = ".alpha"
FLOATS = {"F16", "BF16", "F32", "F64"}
PICKLE_STARTS = (b"\x80", b"PK\x03\x04")  # a pickle's protocol byte; torch.save's zip archive
KOHYA_STARTS = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")
SHOWN = 3  # names quoted in an error at most


class AdapterRejected(ValueError):
    """An uploaded file this service will not keep; the message says what is wrong, for the uploader."""


@dataclass(frozen=True)
class Checked:
    rank: int  # the largest rank among the adapted layers
    layers: int  # how many layers it adapts


def check(data: bytes, layers: Mapping[str, Sequence[int]], model: str, max_rank: int) -> Checked:
    """``data`` checked against ``layers`` (a layer's name -> its weight's shape) of ``model``."""
    header = read_header(data)
    if not header:
        raise AdapterRejected("the safetensors file holds no tensors")
    halves = _halves(header, layers, model)
    rank = max(_rank(layer, parts, layers[layer]) for layer, parts in halves.items())
    if rank > max_rank:
        raise AdapterRejected(f"rank {rank} is over this server's limit of {max_rank} (GIFT_MAX_ADAPTER_RANK)")
    return Checked(rank=rank, layers=len(halves))


def read_header(data: bytes) -> dict[str, tuple[str, list[int]]]:
    """Each tensor's dtype and shape. The library checks the header against the bytes (offsets within the file, no
    overlaps) and builds no tensor, so this needs neither numpy nor torch."""
    try:
        tensors = deserialize(data)  # type: ignore[no-untyped-call]  # the library's binding is untyped
    except SafetensorError as error:
        if data.startswith(PICKLE_STARTS):  # checked after: a safetensors header's length may start so too
            raise AdapterRejected(
                "the file is a pickle or a torch.save archive; only safetensors files are accepted (nothing "
                "uploaded is ever unpickled): save the adapter with safetensors, e.g. pipeline.save_lora_weights"
            ) from None
        raise AdapterRejected(f"not a safetensors file: {error}") from None
    return {key: (str(spec["dtype"]), list(spec["shape"])) for key, spec in tensors}


def _halves(
    header: Mapping[str, tuple[str, list[int]]], layers: Mapping[str, Sequence[int]], model: str
) -> dict[str, dict[str, list[int]]]:
    """Each adapted layer's two halves' shapes ("down", "up"), every key accounted for."""
    halves: dict[str, dict[str, list[int]]] = {}
    unknown: dict[str, None] = {}  # in order, each layer once
    for key, (dtype, shape) in sorted(header.items()):
        if key.startswith(KOHYA_STARTS):
            raise AdapterRejected(
                f"key {key!r}: kohya-style names are not accepted; convert the file to diffusers' names "
                "(load it with pipeline.load_lora_weights, save it with pipeline.save_lora_weights)"
            )
        layer, part = _layer_of(key)
        if part is None:
            raise AdapterRejected(
                f"key {key!r} is not a LoRA weight: expected names ending in {', '.join(DOWN + UP + (ALPHA,))}"
            )
        if dtype not in FLOATS:
            raise AdapterRejected(f"key {key!r}: dtype {dtype}; LoRA weights are floating point ({', '.join(FLOATS)})")
        if layer not in layers:
            unknown[layer] = None
        elif part != "alpha":
            halves.setdefault(layer, {})[part] = shape
    if unknown:
        raise AdapterRejected(
            f"{len(unknown)} layer(s) are not layers of model {model!r}: {shown(list(unknown))}; "
            "the adapter was made for another base model"
        )
    if not halves:
        raise AdapterRejected("the file holds no LoRA layer (a lora_A and lora_B weight of one layer)")
    return halves


def _layer_of(key: str) -> tuple[str, str | None]:
    """The layer a key belongs to and which part of it the key is ("down", "up", "alpha"); part None: neither."""
    for suffixes, part in ((DOWN, "down"), (UP, "up"), ((ALPHA,), "alpha")):
        for suffix in suffixes:
            if key.endswith(suffix):
                return key.removesuffix(suffix), part
    return key, None


def _rank(layer: str, parts: Mapping[str, list[int]], weight: Sequence[int]) -> int:
    """The rank of one layer's LoRA, after checking that down (rank x in [x kernel]) and up (out x rank [x 1 x 1])
    fit the layer's weight (out x in [x kernel])."""
    if set(parts) != {"down", "up"}:
        (has,) = parts
        raise AdapterRejected(f"layer {layer!r} has only its {has} weight (lora_A and lora_B go together)")
    down, up = parts["down"], parts["up"]
    out, inner, *kernel = weight
    rank = down[0] if down else 0
    expected_down = [rank, inner, *kernel]
    expected_up = [out, rank, *([1] * len(kernel))]
    if rank < 1 or down != expected_down or up != expected_up:
        raise AdapterRejected(
            f"layer {layer!r}: LoRA shapes {down} (down) and {up} (up) do not fit its weight {list(weight)}: "
            f"expected {expected_down} and {expected_up} for rank {rank}"
        )
    return rank


def shown(names: Sequence[str]) -> str:
    """A few names of a long list, for a message."""
    return ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")
