"""The ``gift`` console script: one entry point, each command imported only when it runs.

The API never imports torch, so each command's heavy imports stay inside its own function.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from gift_common.errors import UserError
from services import operator_cli
from services.arguments import Help, explain, folder, positive
from services.trainer import configs as shipped_configs


def _serve(args: argparse.Namespace) -> None:
    from services.generator.api.main import serve

    serve(host=args.host, port=args.port)


def _worker(args: argparse.Namespace) -> None:
    from services.generator.worker.main import parse_model_spec, run_worker

    run_worker(models=[parse_model_spec(spec) for spec in args.model], batch_size=args.batch_size)


def _train(args: argparse.Namespace) -> None:
    from services.trainer.main import run_training

    run_training(config_path=args.config, resume=args.resume, overrides=args.set)


def _eval(args: argparse.Namespace) -> None:
    from services.trainer.measure import run_evaluation

    run_evaluation(args.config, args.checkpoint, args.tasks, args.out, args.set)


def _sweep(args: argparse.Namespace) -> None:
    from services.experiments.config_sweep import run_config_sweep
    from services.trainer.config import load_config

    methods = args.methods or [load_config(args.config, args.set).method.preset]
    print(run_config_sweep(args.config, args.set, methods, args.seeds, args.out, args.page, args.parallel,
                           args.local_generator, args.page_only), end="")  # fmt: skip


def _config_show(args: argparse.Namespace) -> None:
    from services.trainer.config import load_config, resolved_yaml

    print(resolved_yaml(load_config(args.config, args.set)), end="")


def _demo(args: argparse.Namespace) -> None:
    from services.demo import DemoSettings, run_demo

    sizes = ("iterations", "synthetic_size", "synthetic_steps", "probe_size", "tasks")
    settings = DemoSettings(**{key: getattr(args, key) for key in sizes if getattr(args, key) is not None})
    run_demo(out_dir=args.out, settings=settings)


def _standins(args: argparse.Namespace) -> None:
    from services.testing.standins import write_standins

    for name, path in write_standins(args.out).items():
        print(f"{name}: {path} (stand-in: random weights)")


def _fixtures(args: argparse.Namespace) -> None:
    from services.testing.mtil_fixtures import write_fixtures

    print(f"MTIL datasets (tiny copies, drawn pixels): root {write_fixtures(args.out, args.per_class)}")


def _rehearse(args: argparse.Namespace) -> None:
    from services.rehearsal.run import Sizes, run_rehearsal

    sizes = {key: getattr(args, key) for key in ("iterations", "pairs", "steps", "image_size") if getattr(args, key)}
    run_rehearsal(args.out, args.order, Sizes(**sizes), trainer_threads=args.trainer_threads)
    print((args.out / "rehearsal.md").read_text())


class _TrainHelp(Help):
    """Fills in `{presets}` when help is asked for, not when the command line is parsed: the methods come from the
    registry, which parsing `gift generator serve` must not load."""

    def add_text(self, text: str | None) -> None:
        if text and "{presets}" in text:
            from services.trainer.presets import PRESETS

            text = text.replace("{presets}", ", ".join(PRESETS))
        super().add_text(text)


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", required=True, metavar="FILE|NAME",
        help=f"a YAML run config, or a shipped one by name ({', '.join(shipped_configs.names())}), e.g. tinyworld",
    )  # fmt: skip


def _add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY.PATH=VALUE",
        help="change one key of the config, VALUE read as YAML, e.g. training.lr=1e-5 or tasks.0.dataset.root=data "
        "(repeatable; checked as the file is)",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = explain(
        argparse.ArgumentParser(prog="gift"),
        "GIFT: continual fine-tuning of CLIP with synthetic images from a diffusion generator service.\n"
        "Each command's --help says what it does, with an example. Documentation: README.md and docs/.",
        "  gift demo                  # FT against GIFT on the tiny world, generator included, on a CPU\n"
        "  gift generator serve       # the generator's HTTP API; then, one per GPU: gift generator worker\n"
        "  gift train --config FILE   # one continual fine-tuning run, as a YAML run config says",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    generator_parser = commands.add_parser("generator", help="the image generator service: its API and workers")
    generator = explain(
        generator_parser,
        "The text-to-image generator: an HTTP API (docs/API.md) and workers that share one Redis\n"
        "(GIFT_REDIS_URL). Every setting is a GIFT_* environment variable (docs/API.md, Environment).",
        "  gift generator serve --host 0.0.0.0 --port 8000 &\n  gift generator worker",
    ).add_subparsers(dest="generator_command", required=True, metavar="COMMAND")
    serve = generator.add_parser("serve", help="the HTTP API (FastAPI under uvicorn)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    serve.set_defaults(func=_serve)
    explain(
        serve,
        "Serve the generator's HTTP API (docs/API.md): it validates and queues jobs in Redis\n"
        "(GIFT_REDIS_URL), reports them and serves their images; workers make the images.",
        "  GIFT_REDIS_URL=redis://localhost:6379/0 gift generator serve --host 0.0.0.0 --port 8000",
    )

    worker = generator.add_parser("worker", help="one synthesis worker")
    worker.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a diffusers pipeline directory to serve under NAME (repeatable; none: GIFT_MODELS, else every "
        "installed plugin's model, e.g. tinyworld). A job that names no model gets the API's GIFT_DEFAULT_MODEL: "
        "serve that name too, or have clients name a model",
    )
    worker.add_argument(
        "--batch-size", type=int, default=None, help="images per pipeline call, at least 1 (overrides GIFT_BATCH_SIZE)"
    )
    worker.set_defaults(func=_worker)
    explain(
        worker,
        "Run one synthesis worker: it takes images from the queue in Redis (GIFT_REDIS_URL), batches\n"
        "them across jobs into diffusers pipeline calls and stores the PNGs. Run one per GPU\n"
        "(GIFT_DEVICE=cuda:N). Without --model or GIFT_MODELS it serves the embedded default model.",
        "  gift generator worker --model sd15=/models/stable-diffusion-v1-5",
    )

    train = commands.add_parser("train", help="one continual fine-tuning run")
    _add_config(train)
    train.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    _add_set(train)
    train.set_defaults(func=_train)
    explain(
        train,
        "Fine-tune a CLIP model on a sequence of tasks with GIFT or a baseline, as a YAML run config\n"
        "says (every key: docs/configuration.md). It writes metrics.json (Transfer, Avg, Last, Forget),\n"
        "results.md, figures and checkpoint.pt into the config's output_dir. GIFT's synthetic pairs come\n"
        "from the generator at GIFT_GENERATOR_URL (gift generator serve, and a worker).\n\n"
        "method presets (a config's method.preset; docs/configuration.md says what each sets):\n  {presets}",
        "  gift train --config run.yaml                # run.yaml: a config of your own, or a shipped one\n"
        "  gift train --config run.yaml --resume       # go on from the run's last checkpoint\n"
        "  gift train --config mtil_order1 --set training.lr=2e-5 --set output_dir=runs/lr2e-5\n"
        "  torchrun --nproc_per_node 4 -m services.cli train --config run.yaml   # data parallel on 4 GPUs",
        _TrainHelp,
    )

    operator_cli.add_commands(commands)

    evaluate = commands.add_parser("eval", help="measure any weights on a config's tasks")
    _add_config(evaluate)
    evaluate.add_argument(
        "--checkpoint", type=Path, required=True, metavar="PATH",
        help="weights to measure: a run's weights/NN_TASK.safetensors, or a state dict of the config's architecture",
    )  # fmt: skip
    evaluate.add_argument("--tasks", nargs="+", default=[], metavar="NAME", help="only these tasks (default: all)")
    evaluate.add_argument("--out", type=folder, help="folder for the reports (default: OUTPUT_DIR/eval/WEIGHTS)")
    _add_set(evaluate)
    evaluate.set_defaults(func=_eval)
    explain(
        evaluate,
        "Measure one model's zero-shot accuracy on a run config's tasks (its split, templates and\n"
        "pre-training probe) and write metrics.json and results.md as gift train does, with one row.",
        "  gift eval --config mtil_order1 --checkpoint runs/mtil_order1_gift/weights/03_CIFAR100.safetensors\n"
        "  gift eval --config run.yaml --checkpoint other.safetensors --tasks DTD MNIST --out eval-out",
    )

    sweep = commands.add_parser("sweep", help="a config's methods over seeds, into one results page")
    _add_config(sweep)
    sweep.add_argument("--methods", nargs="+", default=[], metavar="METHOD",
                       help="method presets or plugins' methods (default: the config's own)")  # fmt: skip
    sweep.add_argument("--seeds", nargs="+", type=int, default=[0], metavar="SEED", help="(default: 0)")
    _add_set(sweep)
    sweep.add_argument("--out", type=folder, help="runs and page (default: runs/sweeps/CONFIG)")
    sweep.add_argument("--page", type=folder, help="where results.md, runs.json and charts go (default: OUT)")
    sweep.add_argument("--parallel", type=positive, default=1, help="runs at a time (default: %(default)s)")
    sweep.add_argument("--local-generator", action="store_true",
                       help="start a generator stack here for the runs (the embedded default model), else the "
                       "config's generator (GIFT_GENERATOR_URL) serves them")  # fmt: skip
    sweep.add_argument("--page-only", action="store_true", help="write the page from the runs finished so far")
    sweep.set_defaults(func=_sweep)
    explain(
        sweep,
        "Run a config once per method and seed (gift train processes, each its own output folder) and\n"
        "write one results page: mean and deviation over seeds of Transfer, Avg, Last and Forget. The\n"
        "page keeps its finished runs (runs.json): run again, it runs only what it lacks, and a stopped\n"
        "run goes on from its checkpoint. Other --set values belong in another --out.",
        "  gift sweep --config mtil_order1 --methods gift ft --seeds 0 1 2 --set training.lr=2e-5 \\\n"
        "      --out runs/sweeps/order1-lr2e-5\n"
        "  gift sweep --config tinyworld --methods gift ft l2 --seeds 0 1 --local-generator",
    )

    config_parser = commands.add_parser("config", help="run configs: the resolved config, every default included")
    config_commands = explain(
        config_parser,
        "Run configs (docs/configuration.md): a YAML file, or a shipped one by name, that may extend\n"
        "another (base: FILE|NAME) and take --set overrides.",
        "  gift config show --config mtil_order2 --set training.lr=2e-5",
    ).add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    show = config_commands.add_parser("show", help="print the resolved config with every default, as YAML")
    _add_config(show)
    _add_set(show)
    show.set_defaults(func=_config_show)
    explain(
        show,
        "Print the config a run would use: its bases merged in, the --set overrides applied, every\n"
        "default filled in and relative paths resolved; it is checked as gift train checks it.",
        "  gift config show --config mtil_order1 > my_run.yaml",
    )

    demo = commands.add_parser("demo", help="the embedded default end to end")
    demo.add_argument(
        "--out", type=folder, default=Path("demo-out"), help="folder for the reports (default: %(default)s)"
    )
    # Smaller values give a quicker, noisier look; unset ones keep the demo's defaults (services/demo.py).
    demo.add_argument("--iterations", type=positive, help="training steps per task")
    demo.add_argument("--synthetic-size", type=positive, help="GIFT's synthetic pairs per task")
    demo.add_argument("--synthetic-steps", type=positive, help="the generator's sampler steps")
    demo.add_argument("--probe-size", type=positive, help="held-out world images of the pre-training probe")
    demo.add_argument("--tasks", type=positive, help="only the first N tasks of the sequence")
    demo.set_defaults(func=_demo)
    explain(
        demo,
        "The embedded default end to end on this machine, no GPU or download needed: a private Redis,\n"
        "the generator's API and a worker, and two gift train runs over the tiny world's six tasks, FT\n"
        "and GIFT. Prints Transfer, Avg, Last, Forget and the pre-training each run kept; writes reports,\n"
        "heat-maps and samples into --out (about 2 minutes on a 2-core machine).",
        "  gift demo --out demo-out\n  gift demo --iterations 20 --tasks 3    # a quicker, noisier look",
    )

    rehearsal_parser = commands.add_parser("rehearsal", help="real-scale code paths on stand-ins")
    rehearsal = explain(
        rehearsal_parser,
        "Run the real-scale code paths (MTIL's datasets, ViT-B/16, Stable Diffusion v1.5) on stand-ins:\n"
        "random weights and tiny copies of the datasets, made here; nothing is downloaded.",
        "  gift rehearsal run --out rehearsal-out --order 1",
    ).add_subparsers(dest="rehearsal_command", required=True, metavar="COMMAND")
    standins = rehearsal.add_parser(
        "standins", help="write SD v1.5 and ViT-B-16-quickgelu with random weights (nothing downloaded)"
    )
    standins.add_argument(
        "--out", type=folder, required=True, help="folder for stable-diffusion-v1-5/ and ViT-B-16-quickgelu/"
    )
    standins.set_defaults(func=_standins)
    explain(
        standins,
        "Write Stable Diffusion v1.5 (a diffusers directory) and open_clip ViT-B-16-quickgelu (a\n"
        "checkpoint) with random weights and a STAND_IN.json marker, in the layouts real weights have.",
        "  gift rehearsal standins --out models/\n  gift generator worker --model sd15=models/stable-diffusion-v1-5",
    )

    fixtures = rehearsal.add_parser("fixtures", help="tiny copies of the eleven MTIL datasets in torchvision's layouts")
    fixtures.add_argument("--out", type=folder, required=True, help="the root of every MTIL task")
    fixtures.add_argument("--per-class", type=positive, default=2, help="images per class and split")
    fixtures.set_defaults(func=_fixtures)
    explain(
        fixtures,
        "Write tiny copies of the eleven MTIL datasets, on disk as torchvision's classes read them, so\n"
        "an MTIL config runs on them (tasks[].dataset.root).",
        "  gift rehearsal fixtures --out data/mtil --per-class 2",
    )

    run = rehearsal.add_parser("run", help="an MTIL order end to end on stand-ins, a kill -9 and --resume included")
    run.add_argument("--out", type=folder, required=True, help="fixtures, stand-ins, the run and rehearsal.md")
    run.add_argument("--order", type=int, choices=(1, 2), default=1, help="the shipped config mtil_order{1,2}")
    # Unset sizes keep the rehearsal's defaults (services/rehearsal/run.py: Sizes).
    run.add_argument("--iterations", type=positive, help="training steps per task")
    run.add_argument("--pairs", type=positive, help="synthetic pairs per task")
    run.add_argument("--steps", type=positive, help="the generator's sampler steps")
    run.add_argument("--image-size", type=positive, help="synthetic images' side in pixels (a multiple of 8)")
    run.add_argument("--trainer-threads", type=positive, default=os.cpu_count() or 1,
                     help="the trainer's torch threads (the worker keeps one); default: every core")  # fmt: skip
    run.set_defaults(func=_rehearse)
    explain(
        run,
        "Run a shipped MTIL config as it is, on stand-ins and tiny datasets, through a real generator\n"
        "stack: kill the trainer with SIGKILL half-way, resume it, and write OUT/rehearsal.md (seconds\n"
        "per stage, peak memory, one 512x512 PNG's Redis cost). 47 minutes to 2 hours on a 2-core CPU.",
        "  gift rehearsal run --out rehearsal-out --order 1",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UserError as error:
        print(f"gift: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
