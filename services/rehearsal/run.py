"""``gift rehearsal run``: an MTIL order's config end to end on a CPU, on stand-ins and tiny copies of the datasets.

It takes the shipped configs mtil_order1 and mtil_order2 as they are, points them at the tiny MTIL copies
(services/testing/mtil_fixtures.py) and at the stand-ins with random weights (services/testing/standins.py:
ViT-B-16-quickgelu at 224 px, Stable Diffusion v1.5's architecture), and changes only sizes (iterations, pairs per
task, sampler steps, image size, batch sizes), with gradient checkpointing on to fit 24 GiB. The generator stack
runs as a deployment runs it (redis-server, the API, a worker serving the stand-in as `sd15`); the trainer is a
`gift train` process, killed with SIGKILL half-way through the sequence and started again with --resume. Every
stage is timed, and written into DIR:

    rehearsal.json / rehearsal.md   the figures: seconds per stage, peak RSS of the trainer and the worker, the size
                                    of one 512x512 PNG and its cost in Redis; the first line says they are stand-ins
    run/                            the run's own outputs (metrics.json, results.md, plots, checkpoints, log)
    data/mtil, models/, synthetic/, logs/   the fixtures, the stand-ins (kept for a rerun), the cache, stack logs

No figure of it is a result: the weights are random. It shows that the path works and what it costs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis
import torch
from tqdm import tqdm

from gift_common import redis_keys
from gift_common.client import GeneratorClient
from gift_common.errors import UserError
from gift_common.files import atomic_write
from gift_common.schemas import JobRequest
from services.devices import describe
from services.runs import Run, start_run, stop_all
from services.stack import ONE_THREAD, LocalStack, Process, threads
from services.testing.mtil_fixtures import write_fixtures
from services.trainer import configs as shipped_configs
from services.trainer.compose import compose

SD15_DIR = "stable-diffusion-v1-5"  # where `gift rehearsal standins` writes them
VIT_FILE = "ViT-B-16-quickgelu/open_clip_pytorch_model.bin"
REPORT_EVERY = 30.0  # seconds between rewrites of the report while the trainer runs
MODEL_NAME = "sd15"  # the name the MTIL configs ask the generator for
FIRST_LINE = "STAND-INS (random weights, tiny drawn datasets): no figure below is a result, only a cost."
OUTPUTS = ("metrics.json", "results.md", "accuracy_matrix.png", "losses.png", "losses.jsonl", "config.json")


@dataclass(frozen=True)
class Sizes:
    """What the rehearsal shrinks; everything else is the config's own."""

    iterations: int = 2  # per task
    batch_size: int = 2  # real images per step (and as many synthetic)
    pairs: int = 4  # synthetic pairs per task
    steps: int = 2  # sampler steps
    image_size: int = 64  # of the synthetic images; CLIP still sees 224 px
    per_class: int = 1  # fixture images per class and split
    eval_batch_size: int = 16
    eval_templates: str = "first"  # all of MTIL's: 8,648 prompts a matrix row, not 1,201; ~25 min more on a CPU
    png_size: int = 512  # of the one image whose PNG and Redis cost are measured


def rehearsal_config(order: int, out: Path, vit: Path, api_url: str, sizes: Sizes) -> dict[str, Any]:
    """The shipped config mtil_order{order} pointed at the fixtures, the stand-in and this generator; only sizes
    changed, and gradient checkpointing on."""
    config, _ = compose(shipped_configs.path(f"mtil_order{order}"))  # its base merged in, as `gift train` reads it
    config["output_dir"] = str(out / "run")
    config["model"] = {**config["model"], "pretrained": str(vit)}
    # Gradient checkpointing: SUN397's 397 class prompts through the text tower with gradients took the trainer past
    # 18 GiB, beyond this 24 GiB machine beside the worker; it changes memory and time, not the gradients.
    config["training"] = {**config["training"], "iterations": sizes.iterations, "warmup": 1,
                          "batch_size": sizes.batch_size, "num_workers": 0, "grad_checkpointing": True}  # fmt: skip
    config["synthetic"] = {**config["synthetic"], "size": sizes.pairs, "steps": sizes.steps,
                           "height": sizes.image_size, "width": sizes.image_size,
                           "generator_url": api_url, "cache_dir": str(out / "synthetic")}  # fmt: skip
    config["evaluation"] = {**config["evaluation"], "batch_size": sizes.eval_batch_size, "num_workers": 0,
                            "templates": sizes.eval_templates}  # fmt: skip
    for task in config["tasks"]:
        task["dataset"]["root"] = str(out / "data" / "mtil")
        task.pop("iterations", None)
    config["progress"] = False
    return config


def run_rehearsal(out: Path, order: int = 1, sizes: Sizes = Sizes(), trainer_threads: int = 1) -> dict[str, Any]:
    """Everything the module docstring says; returns rehearsal.json's content, which is rewritten after every stage
    (with "complete": false until the end), so that a rehearsal stopped early still leaves its figures.

    The worker and the stand-in writer keep one thread; the trainer, the long pole once the synthetic sets are made,
    may have more (`gift rehearsal run` gives it every core)."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    report = Report(out, {"note": FIRST_LINE, "complete": False, "order": order, "sizes": asdict(sizes),
                          "trainer_threads": trainer_threads, "machine": describe(torch.device("cpu")),
                          "seconds": {}})  # fmt: skip
    with report.stage("fixtures"):
        write_fixtures(out / "data" / "mtil", sizes.per_class)
    with report.stage("standins"):  # a process of its own: the writer's memory is not the rehearsal's
        args = [sys.executable, "-m", "services.cli", "rehearsal", "standins", "--out", str(out / "models")]
        subprocess.run(args, check=True, env={**os.environ, **ONE_THREAD}, stdout=subprocess.DEVNULL)
    with LocalStack(out / "logs", env=ONE_THREAD) as stack:
        with report.stage("generator_start"):
            worker = _start_stack(stack, out / "models" / SD15_DIR)
        with report.stage("png_512"):
            report.update(png=_png_cost(stack, sizes.png_size))
        config = rehearsal_config(order, out, out / "models" / VIT_FILE, stack.api_url, sizes)
        runs: list[Run] = []
        trainer_env = threads(trainer_threads)
        try:
            with report.stage("train_until_kill"):
                runs.append(start_run(f"mtil_order{order}", config, out, env=trainer_env))
                report.update(total_steps=runs[0].total_steps, killed_after_steps=runs[0].total_steps // 2)
                _watch(runs[0], report, "trainer_before_kill", until_steps=runs[0].total_steps // 2)
                runs[0].process.kill()
            with report.stage("train_after_resume"):
                runs.append(start_run(f"mtil_order{order}", config, out, env=trainer_env, resume=True))
                _watch(runs[1], report, "trainer_after_resume")
        finally:
            stop_all(runs)  # also on Ctrl-C or a failure: no trainer outlives the rehearsal
        report.update(peak_rss_gib={**report.data.get("peak_rss_gib", {}), "worker": _peak_rss(worker)})
    report.update(outputs=_outputs(runs[1]), complete=True)
    return report.data


class Report:
    """rehearsal.json and rehearsal.md, rewritten whenever a figure comes in."""

    def __init__(self, out: Path, data: dict[str, Any]) -> None:
        self.out, self.data = out, data

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        yield
        self.data["seconds"][name] = round(time.monotonic() - start, 1)
        print(f"rehearsal: {name} took {self.data['seconds'][name]:.0f} s", flush=True)
        self.write()

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        self.write()

    def write(self) -> None:
        atomic_write(self.out / "rehearsal.json", (json.dumps(self.data, indent=1) + "\n").encode())
        atomic_write(self.out / "rehearsal.md", _markdown(self.data).encode())


def _start_stack(stack: LocalStack, sd15: Path) -> Process:
    """Redis, the API and one worker serving the stand-in under the configs' model name; the worker's first load of
    an SD-1.5-sized pipeline on a CPU takes minutes."""
    assert stack.redis is not None
    stack.redis.start()
    stack.start_api()
    worker = stack.start_worker(["--model", f"{MODEL_NAME}={sd15}", "--batch-size", "1"])
    stack.wait_ready(timeout=3600)
    return worker


def _png_cost(stack: LocalStack, size: int) -> dict[str, int]:
    """One image at `size` px through the service: its PNG's bytes and what its key costs in Redis."""
    request = JobRequest(prompts=["a photo of a lighthouse."], model=MODEL_NAME, num_inference_steps=1,
                         height=size, width=size)  # fmt: skip
    with GeneratorClient(stack.api_url) as client:
        job, images = client.generate(request, progress=False)
    sha = job.images[0].sha256
    usage = redis.Redis.from_url(stack.redis_url).memory_usage(redis_keys.png(sha))
    return {"size_px": size, "png_bytes": len(images[0]), "redis_memory_usage_bytes": int(usage or 0)}


def _watch(run: Run, report: Report, name: str, until_steps: int | None = None) -> None:
    """Wait for the run to end (or to have taken `until_steps` steps), recording its steps and peak RSS as it goes;
    a bar shows the steps (minutes each on a CPU: a step, and after a task's last one, its row of the matrix)."""
    peak, last_write = 0.0, 0.0
    with tqdm(total=until_steps or run.total_steps, initial=run.steps_done(), desc=name, unit="step") as bar:
        while run.process.alive() and (until_steps is None or run.steps_done() < until_steps):
            peak = max(peak, _peak_rss(run.process))
            bar.update(run.steps_done() - bar.n)
            bar.set_postfix_str(f"trainer peak {peak:.2f} GiB", refresh=False)
            if time.monotonic() - last_write > REPORT_EVERY:
                report.update(**{name: {"steps_done": run.steps_done(), "peak_rss_gib": peak}})
                last_write = time.monotonic()
            time.sleep(1.0)
        bar.update(run.steps_done() - bar.n)
    if not run.process.alive() and run.process.popen.returncode != 0:
        raise UserError(f"the trainer failed; end of {run.process.log}:\n{run.process.log.read_text()[-3000:]}")
    peaks = report.data.get("peak_rss_gib", {})
    report.update(**{name: {"steps_done": run.steps_done(), "peak_rss_gib": peak}},
                  peak_rss_gib={**peaks, "trainer": max(peak, peaks.get("trainer", 0.0))})  # fmt: skip


def _peak_rss(process: Process) -> float:
    """The process's peak resident memory (VmHWM) in GiB; 0 once it has ended."""
    try:
        status = Path(f"/proc/{process.pid}/status").read_text()
    except OSError:
        return 0.0
    kib = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
    return round(kib / 2**20, 2)


def _outputs(run: Run) -> dict[str, int]:
    """The run's outputs with their sizes; a missing one fails the rehearsal."""
    missing = [name for name in OUTPUTS if not (run.out / name).is_file()]
    if missing:
        raise UserError(f"the run left no {', '.join(missing)} in {run.out}")
    return {name: (run.out / name).stat().st_size for name in OUTPUTS}


def _markdown(data: dict[str, Any]) -> str:
    run = f"MTIL order {data['order']}, sizes {data['sizes']}, trainer threads {data['trainer_threads']}."
    lines = [FIRST_LINE, "", run, f"Machine: {data['machine']}."]
    if not data["complete"]:
        lines.append("**Not complete**: the figures so far.")
    if "total_steps" in data:
        lines.append(f"The trainer is killed (SIGKILL) after {data['killed_after_steps']} of {data['total_steps']} "
                     "steps and resumed.")  # fmt: skip
    lines += ["", "| stage | seconds |", "|---|---|", *(f"| {k} | {v:.0f} |" for k, v in data["seconds"].items()), ""]
    for name in ("trainer_before_kill", "trainer_after_resume"):
        if name in data:
            lines.append(f"{name}: {data[name]['steps_done']} steps, peak RSS {data[name]['peak_rss_gib']} GiB.")
    if "peak_rss_gib" in data:
        lines.append(f"Peak RSS (GiB): {data['peak_rss_gib']}.")
    if "png" in data:
        png = data["png"]
        lines.append(f"One {png['size_px']}x{png['size_px']} PNG: {png['png_bytes']} bytes; in Redis (MEMORY USAGE of "
                     f"its key) {png['redis_memory_usage_bytes']} bytes.")  # fmt: skip
    return "\n".join(lines) + "\n"
