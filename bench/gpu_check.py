"""The GPU check: generator and trainer speed at real scale, on stand-in weights, as one JSON line.

On the SD v1.5 stand-in at 512x512, 25 DPM-Solver++ steps (the worker's own load path and runtime variant):
(a) one prompt per pipeline call, as the paper's authors generate; (b) the raw pipeline at batch 8/16/32/64;
(c) the service (a private Redis, the API and one worker, via services/stack.py) at the best batch of (b);
(d) the UNet's achieved TFLOP/s at that batch (FLOPs counted once with FlopCounterMode) against this chip's
bf16 matmul peak, measured here. On the open_clip ViT-B-16-quickgelu stand-in at batch 64 + 64: seconds per
iteration and peak GPU memory of FT and GIFT (cached teacher) in fp32 and bf16 (bench/trainer_step.py's
`measure_steps`), and the projected hours of MTIL Order I (11 tasks x 1,000 images; 11 x 1,000 iterations).
Targets are ratios in the JSON (issue 17), never asserted here. Every figure is made on random weights: the JSON's
first key says so.

`--smoke` runs the same code with tiny sizes on a CPU (the tiny world's untrained pipeline, the tiny test CLIP)
in well under a minute; the test suite runs it, so that GPU minutes go to measuring.

Preparation (the GPU machine has no network; about 20 MiB travel with the repository). On a networked x86-64
machine, in the repository root, with CPython 3.12 wheels for what the GPU image lacks (its torch, transformers,
huggingface_hub, safetensors, numpy, pillow, regex, pyyaml, matplotlib, httpx and scikit-learn are used as found):

    mkdir -p .gpu-carry/wheels .gpu-carry/bin .gpu-carry/lib && echo /.gpu-carry/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu-carry/wheels \\
        diffusers open_clip_torch ftfy wcwidth fastapi starlette uvicorn h11 click redis pydantic pydantic-core \\
        pydantic-settings python-dotenv annotated-types typing-inspection anyio sniffio importlib-metadata
    cp "$(command -v redis-server)" .gpu-carry/bin/    # Debian's redis-server 7, and the libraries it links
    cp /lib/x86_64-linux-gnu/{liblzf.so.1,libjemalloc.so.2} .gpu-carry/lib/

On the GPU machine (about 5 minutes; add --compile for a compiled UNet, which costs minutes of warm-up):

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu-carry/wheels/*.whl
    export PYTHONPATH=/tmp/site:$PWD:$PWD/plugins/tinyworld PATH=$PWD/.gpu-carry/bin:$PATH \\
        LD_LIBRARY_PATH=$PWD/.gpu-carry/lib
    python3 bench/gpu_check.py --standins /tmp/standins --out gpu_check.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from generator_throughput import job_requests, pipeline_seconds, prompts, service_seconds
from torch.utils.flop_counter import FlopCounterMode

from gift_common.errors import UserError
from gift_common.stand_in import NOTICE, is_stand_in, write_marker
from services.devices import describe
from services.generator.worker.synthesis import LoadedModel, RuntimeOptions, load_model
from services.stack import LocalStack

MTIL_TASKS, IMAGES_PER_TASK, ITERATIONS_PER_TASK = 11, 1000, 1000


@dataclass(frozen=True)
class Sizes:
    steps: int
    batches: tuple[int, ...]
    one_prompt_images: int
    matmul: int
    unet_iterations: int
    service_jobs: int  # at least this many jobs of 16 prompts for (c), four clients submitting them
    trainer_batch: int
    trainer_iterations: int


FULL = Sizes(steps=25, batches=(8, 16, 32, 64), one_prompt_images=4, matmul=8192, unet_iterations=10,
             service_jobs=4, trainer_batch=64, trainer_iterations=10)  # fmt: skip
SMOKE = Sizes(steps=2, batches=(1, 2, 4), one_prompt_images=2, matmul=256, unet_iterations=2,
              service_jobs=1, trainer_batch=4, trainer_iterations=2)  # fmt: skip


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_tflops(device: torch.device, n: int, repeats: int = 10) -> float:
    """This chip's bf16 matrix-product rate on random data (mean of ``repeats`` products after three warm-ups)."""
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


@torch.inference_mode()
def unet_tflops(model: LoadedModel, batch: int, iterations: int) -> dict[str, float]:
    """The UNet's achieved TFLOP/s on the latents of ``batch`` images (twice as many rows: classifier-free guidance)."""
    unet, pipeline = model.pipeline.unet, model.pipeline
    device, dtype = unet.device, unet.dtype
    side = model.height // pipeline.vae_scale_factor
    latents = torch.randn(2 * batch, unet.config.in_channels, side, side, device=device, dtype=dtype)
    if model.variant.get("channels_last"):
        latents = latents.to(memory_format=torch.channels_last)
    context = torch.randn(2 * batch, 77, unet.config.cross_attention_dim, device=device, dtype=dtype)
    timestep = torch.tensor(500, device=device)
    with FlopCounterMode(display=False) as counter:
        getattr(unet, "_orig_mod", unet)(latents, timestep, encoder_hidden_states=context)
    flops = counter.get_total_flops()
    for _ in range(2):
        unet(latents, timestep, encoder_hidden_states=context)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iterations):
        unet(latents, timestep, encoder_hidden_states=context)
    synchronize(device)
    seconds = (time.perf_counter() - start) / iterations
    return {"unet_gflop_per_image_step": flops / batch / 1e9, "unet_tflops": flops / seconds / 1e12}


def generator_half(model: LoadedModel, directory: Path, sizes: Sizes, device: torch.device, home: Path) -> dict:
    """(a), (b), (c) in images per second, and (d)'s UNet rate."""
    steps = sizes.steps
    pipeline_seconds(model, sizes.batches[0], prompts(sizes.batches[0], "warm-up"), steps)
    one = sizes.one_prompt_images / pipeline_seconds(model, 1, prompts(sizes.one_prompt_images, "a"), steps)
    raw = {}
    for batch in sizes.batches:
        pipeline_seconds(model, batch, prompts(batch, f"warm-up {batch}"), 2)  # allocator and kernels at this size
        raw[batch] = 2 * batch / pipeline_seconds(model, batch, prompts(2 * batch, f"b{batch}"), steps)
    best = max(raw, key=raw.get)
    jobs = job_requests(max(sizes.service_jobs, 3 * best // 16), steps, "c")  # 16 prompts a job
    env = {"GIFT_HOME": str(home), "GIFT_DEFAULT_MODEL": "sd15", "GIFT_DEVICE": str(device),
           "GIFT_TORCH_THREADS": str(torch.get_num_threads()),
           "GIFT_COMPILE_UNET": str(model.variant["compile_unet"])}  # fmt: skip
    with LocalStack(home / "stack", env=env) as stack:
        stack.redis.start()
        stack.start_api()
        stack.start_worker(["--model", f"sd15={directory}@{best}"])
        stack.wait_ready(timeout=600)
        asyncio.run(service_seconds(stack.api_url, job_requests(1, 2, "warm-up")))
        seconds, finished = asyncio.run(service_seconds(stack.api_url, jobs))
        registered = httpx_models(stack.api_url)
    service = sum(job.total for job in finished) / seconds
    return {
        "a_one_prompt_images_per_s": one,
        "b_raw_images_per_s": {str(batch): rate for batch, rate in raw.items()},
        "best_batch": best,
        "c_service_images_per_s": service,
        "c_service_registered_stand_in": registered.get("sd15", {}).get("stand_in"),
        **unet_tflops(model, best, sizes.unet_iterations),
    }


def httpx_models(url: str) -> dict[str, dict]:
    import httpx

    return {m["name"]: m for m in httpx.get(f"{url}/v1/models").json()}


def trainer_half(architecture: str, pretrained: Path | None, sizes: Sizes, device: torch.device) -> dict[str, Any]:
    """FT and GIFT (cached teacher) in fp32 and bf16: seconds per iteration and peak memory, each on its own."""
    from services.testing.trainer import measure_steps

    runs: dict[str, Any] = {}
    for precision in ("fp32", "bf16"):
        for method in ("ft", "gift"):
            try:
                runs[f"{method}_{precision}"] = measure_steps(
                    architecture, pretrained, batch=sizes.trainer_batch, replay_batch=sizes.trainer_batch,
                    method=method, precision=precision, device=str(device), iterations=sizes.trainer_iterations,
                )  # fmt: skip
            except UserError as error:  # a precision this device cannot do: say so, measure the rest
                runs[f"{method}_{precision}"] = {"error": str(error)}
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return runs


def ratios(generator: dict, trainer: dict, peak: float) -> dict[str, float | None]:
    """The issue's targets: service/raw >= 0.95, best/one >= 8, UNet/peak >= 0.4, GIFT/FT <= 2, bf16 >= 1.8."""
    raw_best = generator["b_raw_images_per_s"][str(generator["best_batch"])]

    def s(name: str) -> float | None:
        return trainer.get(name, {}).get("s_per_it")

    def over(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else a / b

    return {
        "service_over_raw": generator["c_service_images_per_s"] / raw_best,
        "best_batch_over_one_prompt": raw_best / generator["a_one_prompt_images_per_s"],
        "unet_over_peak": generator["unet_tflops"] / peak,
        "gift_over_ft_fp32": over(s("gift_fp32"), s("ft_fp32")),
        "gift_over_ft_bf16": over(s("gift_bf16"), s("ft_bf16")),
        "bf16_speedup_ft": over(s("ft_fp32"), s("ft_bf16")),
        "bf16_speedup_gift": over(s("gift_fp32"), s("gift_bf16")),
    }


def projection(generator: dict, trainer: dict) -> dict[str, float | None]:
    """Hours of MTIL Order I on one such machine: the synthetic images, then the GIFT training."""
    gift = [trainer.get(f"gift_{p}", {}).get("s_per_it") for p in ("bf16", "fp32")]
    gift = next((value for value in gift if value), None)
    return {
        "mtil_order1_generation_h": MTIL_TASKS * IMAGES_PER_TASK / generator["c_service_images_per_s"] / 3600,
        "mtil_order1_training_h": None if gift is None else MTIL_TASKS * ITERATIONS_PER_TASK * gift / 3600,
    }


def prepare_models(args: argparse.Namespace, scratch: Path) -> tuple[Path, str, Path | None]:
    """The SD directory, the CLIP architecture and its weights file: full-size stand-ins, or the smoke's tiny ones."""
    if args.smoke:
        from tinyworld.pipeline import build_untrained_pipeline

        from services.trainer.models import TINY_TEST_ARCHITECTURE

        sd = scratch / "tiny-sd"
        build_untrained_pipeline(sd)
        write_marker(sd, "the smoke run's untrained tiny pipeline")
        return sd, str(TINY_TEST_ARCHITECTURE), None
    from services.testing.standins import SD15_NAME, VIT_NAME, write_standins

    paths = write_standins(args.standins)
    return paths[SD15_NAME], VIT_NAME, paths[VIT_NAME]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on a CPU: checks the script, measures nothing")
    parser.add_argument("--standins", type=Path, default=Path("standins"), help="where the stand-ins are (or go)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda:1, ...")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet (the worker's setting)")
    parser.add_argument("--out", type=Path, help="also write the JSON line to this file")
    args = parser.parse_args()
    sizes = SMOKE if args.smoke else FULL
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gift-gpu-check-") as scratch:
        sd, architecture, pretrained = prepare_models(args, Path(scratch))
        stand_in = is_stand_in(sd) or is_stand_in(pretrained)
        model = load_model("sd15", sd, device, RuntimeOptions(compile_unet=args.compile), sizes.batches[0])
        peak = matmul_peak_tflops(device, sizes.matmul)
        generator = generator_half(model, sd, sizes, device, Path(scratch))
        del model
        trainer = trainer_half(architecture, pretrained, sizes, device)
    result = {
        "stand_in": NOTICE if stand_in else None,
        "smoke": args.smoke,
        "machine": describe(device),
        "torch": torch.__version__,
        "ratios": None,
        "bf16_matmul_peak_tflops": peak,
        "steps": sizes.steps,
        "generator": generator,
        "trainer": trainer,
        "projection": projection(generator, trainer),
        "seconds": time.perf_counter() - started,
    }
    result["ratios"] = ratios(generator, trainer, peak)
    line = json.dumps(result, default=str)
    if args.out:
        args.out.write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
