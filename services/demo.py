"""``gift demo``: the embedded default end to end, every part a separate process, all stopped at the end.

For now it shows the generator: it starts a private Redis (unless GIFT_REDIS_URL is set), the API and a worker,
asks for a few prompts over HTTP and writes a contact sheet. The continual-learning run joins it later.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from gift_common.client import GeneratorClient
from gift_common.contact_sheet import contact_sheet
from gift_common.schemas import JobRequest
from services.stack import LocalStack

DEMO_PROMPTS = [
    f"a photo of a {colour} {shape}."
    for colour in ("red", "green", "blue", "yellow")
    for shape in ("circle", "square", "triangle", "star")
]


def run_demo(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(f"gift demo: starting the generator stack (logs in {out_dir / 'logs'})", flush=True)
    with LocalStack(out_dir / "logs", redis_url=os.environ.get("GIFT_REDIS_URL")) as stack:
        stack.start(workers=1)
        print(f"gift demo: generator API at {stack.api_url}; generating {len(DEMO_PROMPTS)} images", flush=True)
        with GeneratorClient(stack.api_url) as client:
            job, pngs = client.generate(JobRequest(prompts=DEMO_PROMPTS, seed=0))
    sheet = out_dir / "contact_sheet.png"
    contact_sheet(pngs, DEMO_PROMPTS, columns=4).save(sheet)
    print(
        f"gift demo: {job.total} images ({job.cached} from the cache) in {time.perf_counter() - started:.0f} s; "
        f"contact sheet: {sheet}"
    )
