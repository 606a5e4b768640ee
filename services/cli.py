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


def _serve(args: argparse.Namespace) -> None:
    from services.generator.api.main import serve

    serve(host=args.host, port=args.port)


def _worker(args: argparse.Namespace) -> None:
    from services.generator.worker.main import parse_model_spec, run_worker

    run_worker(models=[parse_model_spec(spec) for spec in args.model], batch_size=args.batch_size)


def _train(args: argparse.Namespace) -> None:
    from services.trainer.main import run_training

    run_training(config_path=args.config, resume=args.resume)


def _demo(args: argparse.Namespace) -> None:
    from services.demo import DemoSettings, run_demo

    sizes = ("iterations", "synthetic_size", "synthetic_steps", "probe_size", "tasks")
    settings = DemoSettings(**{key: getattr(args, key) for key in sizes if getattr(args, key) is not None})
    run_demo(out_dir=args.out, settings=settings)


def _standins(args: argparse.Namespace) -> None:
    from services.rehearsal.standins import write_standins

    for name, path in write_standins(args.out).items():
        print(f"{name}: {path} (stand-in: random weights)")


def _fixtures(args: argparse.Namespace) -> None:
    from services.rehearsal.fixtures import write_fixtures

    print(f"MTIL datasets (tiny copies, drawn pixels): root {write_fixtures(args.out, args.per_class)}")


def _rehearse(args: argparse.Namespace) -> None:
    from services.rehearsal.run import Sizes, run_rehearsal

    sizes = {key: getattr(args, key) for key in ("iterations", "pairs", "steps", "image_size") if getattr(args, key)}
    run_rehearsal(args.out, args.order, Sizes(**sizes), trainer_threads=args.trainer_threads)
    print((args.out / "rehearsal.md").read_text())


def _positive(text: str) -> int:
    value = int(text) if text.strip().isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gift", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    generator = commands.add_parser("generator", help="the image generator service").add_subparsers(
        dest="generator_command", required=True
    )
    serve = generator.add_parser("serve", help="the HTTP API (FastAPI under uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(func=_serve)

    worker = generator.add_parser("worker", help="one synthesis worker")
    worker.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a diffusers pipeline directory to serve under NAME (repeatable); the first is the default",
    )
    worker.add_argument("--batch-size", type=int, default=None, help="images per pipeline call")
    worker.set_defaults(func=_worker)

    train = commands.add_parser("train", help="one continual fine-tuning run")
    train.add_argument("--config", type=Path, required=True)
    train.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    train.set_defaults(func=_train)

    operator_cli.add_commands(commands)

    demo = commands.add_parser("demo", help="the embedded default end to end")
    demo.add_argument("--out", type=Path, default=Path("demo-out"))
    # Smaller values give a quicker, noisier look; unset ones keep the demo's defaults (services/demo.py).
    demo.add_argument("--iterations", type=_positive, help="training steps per task")
    demo.add_argument("--synthetic-size", type=_positive, help="GIFT's synthetic pairs per task")
    demo.add_argument("--synthetic-steps", type=_positive, help="the generator's sampler steps")
    demo.add_argument("--probe-size", type=_positive, help="held-out world images of the pre-training probe")
    demo.add_argument("--tasks", type=_positive, help="only the first N tasks of the sequence")
    demo.set_defaults(func=_demo)

    rehearsal = commands.add_parser("rehearsal", help="real-scale code paths on stand-ins").add_subparsers(
        dest="rehearsal_command", required=True
    )
    standins = rehearsal.add_parser(
        "standins", help="write SD v1.5 and ViT-B-16-quickgelu with random weights (nothing downloaded)"
    )
    standins.add_argument(
        "--out", type=Path, required=True, help="folder for stable-diffusion-v1-5/ and ViT-B-16-quickgelu/"
    )
    standins.set_defaults(func=_standins)

    fixtures = rehearsal.add_parser("fixtures", help="tiny copies of the eleven MTIL datasets in torchvision's layouts")
    fixtures.add_argument("--out", type=Path, required=True, help="the root of every MTIL task")
    fixtures.add_argument("--per-class", type=_positive, default=2, help="images per class and split")
    fixtures.set_defaults(func=_fixtures)

    run = rehearsal.add_parser("run", help="an MTIL order end to end on stand-ins, a kill -9 and --resume included")
    run.add_argument("--out", type=Path, required=True, help="fixtures, stand-ins, the run and rehearsal.md")
    run.add_argument("--order", type=int, choices=(1, 2), default=1, help="configs/mtil_order{1,2}.yaml")
    # Unset sizes keep the rehearsal's defaults (services/rehearsal/run.py: Sizes).
    run.add_argument("--iterations", type=_positive, help="training steps per task")
    run.add_argument("--pairs", type=_positive, help="synthetic pairs per task")
    run.add_argument("--steps", type=_positive, help="the generator's sampler steps")
    run.add_argument("--image-size", type=_positive, help="synthetic images' side in pixels (a multiple of 8)")
    run.add_argument("--trainer-threads", type=_positive, default=os.cpu_count() or 1,
                     help="the trainer's torch threads (the worker keeps one); default: every core")  # fmt: skip
    run.set_defaults(func=_rehearse)
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
