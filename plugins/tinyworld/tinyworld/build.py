"""Rebuild every weight file the embedded default ships, from seeds, with one command.

    python -m tinyworld.build [--out tinyworld/weights]

Four stages, each its own process with a fixed number of torch threads (float sums, hence weights, depend on how
work is split), so that the same command gives the same files; the first two share the machine's two cores:

    clip    (1 thread)   pre-train the tiny CLIP on the world                      -> tiny-clip.pt
    vae     (1 thread)   render the world set, fit the VAE, cache its latents      -> scratch
    unet    (2 threads)  the UNet and the text encoder (from the CLIP's text tower) -> sd/
    report  (2 threads)  the tiny CLIP's verdict on generated images, sample grids -> report/

and last MANIFEST.json, the SHA-256 of every shipped file, which every loader of these weights checks.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import torch

from gift_common.manifest import write_manifest
from tinyworld.clip import PretrainConfig, pretrain
from tinyworld.sd_training import TrainConfig, train_autoencoder, train_denoiser

WEIGHTS_DIR = Path(__file__).parent / "weights"
CLIP_FILE, SD_DIR, REPORT_DIR = "tiny-clip.pt", "sd", "report"
CONFIG_FILE = "build-config.json"
REPORT = {"per_concept": 5, "steps": 25}
# Sized for about 65 minutes on two cores (stage costs measured in NOTES.md): the CLIP (about 0.42 s a step) and the
# VAE side by side, then the UNet at about 0.17 s per step of 32 latents.
CLIP = PretrainConfig()
SD = TrainConfig(
    images=60_000, batch=32, vae_batch=16, vae_steps=2000, vae_lr=2e-3, unet_steps=12000, unet_lr=1e-3, threads=2
)
# A glibc allocator that keeps freed memory instead of handing it back page by page (measured in NOTES.md).
ALLOCATOR = {
    "MALLOC_MMAP_THRESHOLD_": "33554432",
    "MALLOC_TOP_PAD_": "268435456",
    "MALLOC_TRIM_THRESHOLD_": "1073741824",
}


def log(line: str) -> None:
    print(line, flush=True)


def read_configs(scratch: Path) -> tuple[PretrainConfig, TrainConfig]:
    """The configs `build` wrote for its stages."""
    saved = json.loads((scratch / CONFIG_FILE).read_text())
    return PretrainConfig(**saved["clip"]), TrainConfig(**saved["sd"])


def stage_clip(scratch: Path) -> None:
    torch.set_num_threads(1)
    model = pretrain(read_configs(scratch)[0], log=lambda line: log(f"[clip] {line}"))
    state = {key: value.half() if value.is_floating_point() else value for key, value in model.state_dict().items()}
    torch.save(state, scratch / CLIP_FILE)  # moved into place by `build` once every stage succeeded


def stage_vae(scratch: Path) -> None:
    sd = replace(read_configs(scratch)[1], threads=1)
    train_autoencoder(sd, scratch, log=lambda line: log(f"[vae] {line}"))


def stage_unet(scratch: Path) -> None:
    sd = read_configs(scratch)[1]
    train_denoiser(sd, scratch, scratch / SD_DIR, scratch / CLIP_FILE, log=lambda line: log(f"[unet] {line}"))


def stage_report(scratch: Path) -> None:
    from tinyworld.sd_quality import write_report

    torch.set_num_threads(2)
    settings = json.loads((scratch / CONFIG_FILE).read_text())["report"]
    report = write_report(scratch / SD_DIR, scratch / CLIP_FILE, scratch / REPORT_DIR, **settings)
    concepts = {source: report[source]["mean"] for source in ("generated", "real")}
    log(f"[report] single concepts: {json.dumps(concepts)}")
    log(f"[report] whole scenes: {json.dumps(report['scenes'])}")


STAGES = {"clip": stage_clip, "vae": stage_vae, "unet": stage_unet, "report": stage_report}


def run_stages(names: Sequence[str], scratch: Path) -> None:
    """Run stages as concurrent subprocesses; any failure stops the others and the build."""
    env = {**os.environ, **ALLOCATOR, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "tinyworld.build", "--scratch", str(scratch), "--stage"]
    processes = {name: subprocess.Popen([*command, name], env=env) for name in names}
    try:
        for name, process in processes.items():
            if process.wait() != 0:
                raise SystemExit(f"tinyworld.build: stage {name} failed (exit {process.returncode})")
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
                process.wait()


def build(out: Path, clip: PretrainConfig = CLIP, sd: TrainConfig = SD, report: dict | None = REPORT) -> None:
    """All stages in a scratch folder beside ``out``, then the files moved into ``out`` with their manifest.

    ``report`` holds write_report's settings (images per concept, sampler steps); None skips the report."""
    start = time.monotonic()
    scratch = out.parent / f".{out.name}.build"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    configs = {"clip": asdict(clip), "sd": asdict(sd), "report": report}
    (scratch / CONFIG_FILE).write_text(json.dumps(configs, indent=1))
    # float kernels differ between CPU generations, and so do the weights they train: the log says which ran
    machine = f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}"
    log(f"building into {out} ({machine}): {json.dumps(configs)}")
    groups = [("clip", "vae"), ("unet",)] + ([("report",)] if report else [])
    for group in groups:
        run_stages(group, scratch)
        log(f"stages {', '.join(group)} done at {time.monotonic() - start:.0f}s")
    out.mkdir(parents=True, exist_ok=True)
    for name in (CLIP_FILE, SD_DIR, REPORT_DIR, CONFIG_FILE):
        target = out / name
        if not (scratch / name).exists():
            continue
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(scratch / name, target)
    shutil.rmtree(scratch)
    manifest = write_manifest(out, [out / CLIP_FILE, out / SD_DIR, out / CONFIG_FILE])
    log(f"wrote {manifest}; build took {time.monotonic() - start:.0f}s")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tinyworld.build", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="where the weights go (default: %(default)s)")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # one stage, in a process `build` starts
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)  # where `build` keeps the stages' files
    args = parser.parse_args(argv)
    if args.stage:
        STAGES[args.stage](args.scratch)
    else:
        build(args.out)


if __name__ == "__main__":
    main()
