"""Adapters without processes: what an upload must be (a real LoRA of the tiny UNet and its spoiled copies), the
worker's adapter cache (a recording pipeline), and the content key with and without an adapter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save

from gift_common.content_key import image_key
from gift_common.schemas import JobRequest
from services.generator.adapter_files import AdapterRejected, check
from services.generator.worker.adapters import AdapterCache, AdapterGone, adapter_name
from services.generator.worker.synthesis import LoadedModel, adaptable_layers
from services.testing.adapters import lora_file, pickled, renamed, reshaped

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, list[int]], bytes]:
    """The tiny world's pipeline's adaptable layers, and a rank-4 LoRA of its UNet's attention layers."""
    from diffusers import DiffusionPipeline
    from tinyworld.pipeline import default_model_dir

    pipeline = DiffusionPipeline.from_pretrained(default_model_dir(tmp_path_factory.mktemp("home")))
    return adaptable_layers(pipeline), lora_file(pipeline.unet, rank=4)


def test_a_lora_of_the_model_passes_with_its_rank_and_layers(tiny):
    layers, data = tiny
    checked = check(data, layers, "tinyworld", max_rank=4)
    assert checked.rank == 4
    assert checked.layers == 32  # to_q, to_k, to_v, to_out.0 of 8 attention blocks


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (pickled, "the file is a pickle or a torch.save archive; only safetensors files are accepted"),
        (lambda data: b"not a file at all" * 4, "not a safetensors file: "),
        (lambda data: data[: len(data) // 2], "not a safetensors file: "),
        (lambda data: renamed(data, "unet.", "unet.elsewhere."), "layer(s) are not layers of model 'tinyworld'"),
        (lambda data: reshaped(data, transpose=True), "do not fit its weight"),
        (lambda data: reshaped(data, grow_rank=2), "rank 6 is over this server's limit of 4"),
        (lambda data: renamed(data, "unet.", "lora_unet_"), "kohya-style names are not accepted"),
        (lambda data: renamed(data, ".lora.up.weight", ".something"), "is not a LoRA weight"),
    ],
)
def test_a_spoiled_file_is_refused_naming_what_is_wrong(tiny, spoil, message):
    layers, data = tiny
    with pytest.raises(AdapterRejected, match=message.replace("(", r"\(").replace(")", r"\)")):
        check(spoil(data), layers, "tinyworld", max_rank=4)


def test_half_a_layer_or_integer_weights_are_refused():
    layers = {"unet.a": [6, 5]}
    down, up = np.zeros((2, 5), np.float32), np.zeros((6, 2), np.float32)
    with pytest.raises(AdapterRejected, match="has only its down weight"):
        check(save({"unet.a.lora_A.weight": down}), layers, "m", 8)
    with pytest.raises(AdapterRejected, match="dtype I32"):
        check(save({"unet.a.lora_A.weight": down.astype(np.int32), "unet.a.lora_B.weight": up}), layers, "m", 8)
    assert check(save({"unet.a.lora_A.weight": down, "unet.a.lora_B.weight": up}), layers, "m", 8).rank == 2


def test_a_convolution_takes_its_kernel_in_the_down_weight():
    layers = {"unet.conv": [8, 4, 3, 3]}
    down, up = np.zeros((2, 4, 3, 3), np.float32), np.zeros((8, 2, 1, 1), np.float32)
    assert check(save({"unet.conv.lora_A.weight": down, "unet.conv.lora_B.weight": up}), layers, "m", 8).rank == 2
    flat = save({"unet.conv.lora_A.weight": down[:, :, :1, :1], "unet.conv.lora_B.weight": up})
    with pytest.raises(AdapterRejected, match=r"expected \[2, 4, 3, 3\] and \[8, 2, 1, 1\] for rank 2"):
        check(flat, layers, "m", 8)


def test_the_key_without_an_adapter_is_the_key_before_adapters():
    before = "fcd8e4099d28a144468839cb7439c65e731d8f6c7d1a583ba1a088f39aedea6c"  # image_key as of e853180
    base = dict(model_fingerprint="f", prompt="a red circle", negative_prompt=None, seed=1, num_inference_steps=25,
                guidance_scale=7.5, height=32, width=32)  # fmt: skip
    assert image_key(**base) == before
    with_adapter = image_key(**base, adapter="a" * 64)
    assert len({before, with_adapter, image_key(**base, adapter="b" * 64)}) == 3
    assert image_key(**base, adapter="a" * 64, adapter_scale=0.5) != with_adapter


def test_a_scale_needs_an_adapter():
    with pytest.raises(ValueError, match="adapter_scale: a scale needs an adapter"):
        JobRequest(prompts=["x"], adapter_scale=0.5)
    assert JobRequest(prompts=["x"], adapter="a" * 64).scale == 1.0


class RecordingPipeline:
    """What the cache asks of a diffusers pipeline, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.held: list[str] = []

    def load_lora_weights(self, path: str, adapter_name: str) -> None:
        assert Path(path).read_bytes().startswith(b"file")
        self.calls.append(("load", adapter_name))
        self.held.append(adapter_name)

    def delete_adapters(self, names: list[str]) -> None:
        self.calls.append(("delete", *names))
        self.held = [name for name in self.held if name not in names]

    def get_list_adapters(self) -> dict[str, list[str]]:
        return {"unet": list(self.held)}

    def set_adapters(self, names: list[str], adapter_weights: list[float]) -> None:
        self.calls.append(("set", *names, *adapter_weights))

    def enable_lora(self) -> None:
        self.calls.append(("enable",))

    def disable_lora(self) -> None:
        self.calls.append(("disable",))


def _model(name: str = "m") -> LoadedModel:
    return LoadedModel(name, Path("."), RecordingPipeline(), "f", 32, 32)


def _cache(tmp_path: Path, count: int = 2, size: int = 10**6, files: dict[str, bytes] | None = None) -> AdapterCache:
    files = files if files is not None else {a: b"file" + b"." * 96 for a in "abcd"}
    return AdapterCache(files.get, tmp_path, max_count=count, max_bytes=size)


def test_the_cache_loads_once_switches_between_calls_and_goes_back_to_the_base(tmp_path):
    cache, model = _cache(tmp_path), _model()
    assert cache.activate(model, None, 1.0).seconds is None, "a pipeline that never had an adapter is left alone"
    first = cache.activate(model, "a", 1.0)
    assert first.loaded and not first.hit and first.seconds is not None
    assert cache.activate(model, "a", 1.0) == cache.activate(model, "a", 1.0)
    assert cache.activate(model, "a", 1.0).seconds is None and cache.activate(model, "a", 1.0).hit
    again = cache.activate(model, "a", 0.5)
    assert again.hit and not again.loaded
    cache.activate(model, None, 1.0)
    cache.activate(model, "a", 0.5)
    a = adapter_name("a")
    assert model.pipeline.calls == [
        ("load", a), ("enable",), ("set", a, 1.0), ("set", a, 0.5), ("disable",), ("enable",), ("set", a, 0.5),
    ]  # fmt: skip
    assert not list(tmp_path.iterdir()), "a staged file is removed once loaded"


def test_the_least_recently_used_adapter_goes_past_the_count_or_the_bytes(tmp_path):
    cache, model = _cache(tmp_path, count=2), _model()
    for adapter in "aba":
        cache.activate(model, adapter, 1.0)
    cache.activate(model, "c", 1.0)
    assert cache.loaded("m") == ["a", "c"], "b was the least recently used"
    assert ("delete", adapter_name("b")) in model.pipeline.calls
    by_bytes, other = _cache(tmp_path, count=8, size=250), _model("other")
    for adapter in "abc":
        by_bytes.activate(model if adapter != "b" else other, adapter, 1.0)
    assert by_bytes.loaded_bytes <= 250 and by_bytes.loaded("m") == ["c"] and by_bytes.loaded("other") == ["b"]


def test_evicting_the_active_adapter_of_a_model_returns_it_to_the_base(tmp_path):
    cache, model, other = _cache(tmp_path, count=8, size=250), _model(), _model("other")
    cache.activate(model, "a", 1.0)
    cache.activate(model, "b", 1.0)
    cache.activate(other, "c", 1.0)  # a's bytes go: b stays, so the pipeline must not fall back to b by itself
    assert cache.loaded("m") == ["b"] and model.pipeline.calls[-1] == ("delete", adapter_name("a"))
    cache.activate(other, "d", 1.0)  # b's bytes go; b was m's active adapter and m holds none now
    assert cache.activate(model, None, 1.0).seconds is None, "m is back on its base weights already"


def test_a_deleted_adapter_is_gone_and_a_failed_load_leaves_nothing(tmp_path):
    cache, model = _cache(tmp_path, files={}), _model()
    with pytest.raises(AdapterGone, match="was deleted while the job was queued"):
        cache.activate(model, "a", 1.0)

    def broken(path: str, adapter_name: str) -> None:
        model.pipeline.held.append(adapter_name)
        raise ValueError("half loaded")

    model.pipeline.load_lora_weights = broken
    cache = _cache(tmp_path)
    with pytest.raises(ValueError, match="half loaded"):
        cache.activate(model, "a", 1.0)
    assert model.pipeline.held == [] and cache.loaded("m") == []
