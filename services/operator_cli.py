"""The operator's commands of ``gift``: generate images, list, show and cancel jobs, see the workers.

All go through gift_common.client against GIFT_GENERATOR_URL (or ``--url``) with the key in GIFT_API_KEY; an
admin's key with ``--all`` reaches every tenant's jobs. A server that is down, a wrong key or a job that does not
exist is one line (``gift: error: ...``, status 2), never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from gift_common.errors import UserError
from services.arguments import explain, folder, positive

if TYPE_CHECKING:
    from gift_common.client import GeneratorClient
    from gift_common.schemas import JobStatus

CLI_RETRIES = 2  # a person waits for an answer: a server that is down is said within a second or two


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``gift generate``, ``gift jobs list|show|cancel`` and ``gift workers``."""
    server = argparse.ArgumentParser(add_help=False)
    server.add_argument("--url", help="the generator's URL (default: GIFT_GENERATOR_URL); the key: GIFT_API_KEY")

    generate = commands.add_parser("generate", parents=[server], help="images of one prompt, written to a folder")
    generate.add_argument("prompt", help="what to draw, e.g. 'a photo of a cat.'")
    generate.add_argument("-n", "--count", type=positive, default=1, help="images (seeds seed, seed+1, ...)")
    generate.add_argument("--out", type=folder, required=True, help="folder for the PNGs")
    generate.add_argument("--model", help="a model of GET /v1/models (default: the server's)")
    generate.add_argument("--seed", type=int, default=0, help="the first image's seed (default: %(default)s)")
    generate.add_argument("--steps", type=positive, default=25, help="denoising steps")
    generate.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale")
    generate.add_argument(
        "--scheduler",
        choices=("directory", "dpmsolver++"),
        help="the sampler: the one the model's directory names, or DPM-Solver++ (2M), which needs fewer steps "
        "(default: the worker's GIFT_SCHEDULER)",
    )
    generate.add_argument("--size", type=_size, help="WxH, e.g. 512x512 (default: the model's native size)")
    generate.add_argument("--negative-prompt", help="what the images should not show")
    generate.set_defaults(func=_generate)
    explain(
        generate,
        "Ask the generator for N images of one prompt (seeds SEED, SEED+1, ...), show a progress bar and\n"
        "write them into a folder as they come; the job id is printed first.",
        '  gift generate "a photo of a red circle." -n 4 --out images/ --scheduler dpmsolver++ --steps 20',
    )

    jobs = explain(
        commands.add_parser("jobs", help="the generator's jobs"),
        "List, show and cancel the generator's jobs: your own, or with an admin's key (--all) every tenant's.",
        "  gift jobs list --status running\n  gift jobs show JOB_ID\n  gift jobs cancel JOB_ID",
    ).add_subparsers(dest="jobs_command", required=True, metavar="COMMAND")
    listing = jobs.add_parser("list", parents=[server], help="jobs, newest first")
    listing.add_argument(
        "--status", choices=("queued", "running", "succeeded", "failed", "cancelled"), help="only jobs in this state"
    )
    listing.add_argument("--limit", type=positive, default=20, help="jobs per page (at most 200)")
    listing.add_argument("--cursor", help="the page after this one (printed under a full page)")
    listing.add_argument("--all", action="store_true", help="every tenant's jobs (an admin's key)")
    listing.add_argument("--tenant", help="with --all: one tenant's jobs")
    listing.set_defaults(func=_list)
    explain(
        listing,
        "Your jobs, newest first, a page at a time (GET /v1/jobs); with an admin's key and --all,\n"
        "every tenant's, or one tenant's with --tenant.",
        "  gift jobs list --status failed --limit 50",
    )
    for name, verb, about in (
        ("show", _show, "A job's status and its images, one of yours (GET /v1/jobs/ID); --all: any tenant's."),
        ("cancel", _cancel, "Cancel an unfinished job of yours (DELETE /v1/jobs/ID); --all: any tenant's."),
    ):
        one = jobs.add_parser(name, parents=[server], help=about.split(",")[0].lower())
        one.add_argument("job_id", help="the job's id, as gift generate or gift jobs list printed it")
        one.add_argument("--all", action="store_true", help="any tenant's job (an admin's key)")
        one.set_defaults(func=verb)
        explain(one, about, f"  gift jobs {name} JOB_ID")

    workers = commands.add_parser("workers", parents=[server], help="the live workers")
    workers.set_defaults(func=_workers)
    explain(
        workers,
        "The live workers: models, device, batch size, heartbeat age, chunks held, images done (GET /v1/workers).",
        "  gift workers",
    )


def _size(text: str) -> tuple[int, int]:
    if not (match := re.fullmatch(r"(\d+)x(\d+)", text)):
        raise argparse.ArgumentTypeError(f"must be WIDTHxHEIGHT, e.g. 512x512, not {text!r}")
    return int(match.group(1)), int(match.group(2))


@contextlib.contextmanager
def _client(args: argparse.Namespace) -> Iterator[GeneratorClient]:
    """A client whose failures become one line each: down, refused key, unknown job, or the server's own detail."""
    from gift_common.client import GeneratorClient, GeneratorError, GeneratorHTTPError, GeneratorUnavailable
    from gift_common.settings import ClientSettings, load, without_credentials

    url = args.url or load(ClientSettings).generator_url
    try:
        with GeneratorClient(url, retries=CLI_RETRIES, backoff=0.2) as client:
            yield client
    except GeneratorUnavailable as error:
        where = without_credentials(url)  # the error is printed: a URL's user:password stays out of it
        raise UserError(f"the generator at {where} does not answer ({error.cause}); is it running there?") from None
    except GeneratorHTTPError as error:
        raise UserError(_refusal(error, getattr(args, "all", False))) from None
    except GeneratorError as error:
        raise UserError(str(error)) from None


def _refusal(error: object, admin: bool) -> str:
    from gift_common.client import GeneratorHTTPError, format_detail

    assert isinstance(error, GeneratorHTTPError)
    if error.status_code == 401:
        which = "an admin's key (GIFT_ADMIN_KEYS)" if admin else "a tenant's key (GIFT_API_KEYS)"
        return f"the generator refused the key: set GIFT_API_KEY to {which}"
    return f"{error.status_code}: {format_detail(error.detail)}"


def _generate(args: argparse.Namespace) -> None:
    from pydantic import ValidationError

    from gift_common.client import format_detail
    from gift_common.files import atomic_write
    from gift_common.schemas import JobRequest

    width, height = args.size or (None, None)
    try:
        request = JobRequest(
            prompts=[args.prompt] * args.count,
            model=args.model,
            seed=args.seed,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            scheduler=args.scheduler,
            height=height,
            width=width,
            negative_prompt=args.negative_prompt,
        )
    except ValidationError as error:
        raise UserError(format_detail(error.errors(include_url=False))) from None
    with _client(args) as client:
        job = client.submit(request)
        print(f"job {job.id}", flush=True)
        job = client.wait(job.id, progress=True)
        paths = []
        for image in job.images:
            path = args.out / f"{image.index:03d}-seed{image.seed}.png"
            atomic_write(path, client.image(image.sha256))
            paths.append(path)
    print(f"job {job.id} succeeded: {len(paths)} images ({job.cached} cached) in {args.out}")


def _list(args: argparse.Namespace) -> None:
    from gift_common.client import JobQuery
    from gift_common.schemas import JobState

    if args.tenant and not args.all:
        raise UserError("--tenant needs --all (an admin's key lists other tenants' jobs)")
    status = JobState(args.status) if args.status else None
    query = JobQuery(status, args.limit, args.cursor, args.all, args.tenant)
    with _client(args) as client:
        page = client.jobs(query)
    rows = [
        [job.id, job.status.value, f"{job.done}/{job.total}", _when(job.created_at), job.model]
        + ([job.tenant] if args.all else [])
        for job in page.jobs
    ]
    header = ["job", "status", "done", "created", "model"] + (["tenant"] if args.all else [])
    print(_table(header, rows) if rows else "no jobs")
    if page.next_cursor:
        print(f"more: gift jobs list --cursor {page.next_cursor}" + (" --all" if args.all else ""))


def _show(args: argparse.Namespace) -> None:
    with _client(args) as client:
        job = client.admin_status(args.job_id) if args.all else client.status(args.job_id)
    _print_job(job)
    for image in job.images:
        print(f"  {image.index:>4}  seed {image.seed:<6} {image.url}  {image.prompt}")


def _cancel(args: argparse.Namespace) -> None:
    with _client(args) as client:
        job = client.admin_cancel(args.job_id) if args.all else client.cancel(args.job_id)
    _print_job(job)


def _workers(args: argparse.Namespace) -> None:
    with _client(args) as client:
        workers = client.workers()
    rows = [
        [w.id, ",".join(w.models), w.device, str(w.batch_size), f"{w.heartbeat_age_seconds:.1f} s", str(w.chunks_held),
         str(w.images_done), ",".join(w.jobs) or "-"]
        for w in workers
    ]  # fmt: skip
    header = ["worker", "models", "device", "batch", "heartbeat", "chunks", "images", "jobs"]
    print(_table(header, rows) if rows else "no live worker")


def _print_job(job: JobStatus) -> None:
    ended = f", ended {_when(job.finished_at)}" if job.finished_at else ""
    print(f"job {job.id}: {job.status.value}, {job.done}/{job.total} images ({job.cached} cached), "
          f"created {_when(job.created_at)}{ended}" + (f"; error: {job.error}" if job.error else ""))  # fmt: skip


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )
