"""schemathesis over the served OpenAPI, with auth on, as figures (docs/operations.md): requests sent, 5xx.

Real processes: a private redis-server, the API with two tenants' keys and one worker on the tiny pipeline, on a
free loopback port. schemathesis (the dev extra) generates requests from /openapi.json with --max-examples per
operation, sends them with one tenant's key and checks every answer against the spec, then does the same for the
admin's routes (/v1/admin) with an admin's key; its HAR reports are read back to count the requests and their
statuses. The last line printed is one JSON object.
Run: .venv/bin/python bench/schema_fuzz.py --max-examples 150
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from tinyworld.pipeline import default_model_dir

from services.stack import LocalStack

KEYS = "alice:alice-key,bob:bob-key"
PASSES = {  # the key each pass sends, and which operations it covers
    "tenant": ("alice-key", ["--exclude-path-regex", "^/v1/admin/"]),
    "admin": ("admin-key", ["--include-path-regex", "^/v1/admin/"]),
}
# Small limits so that generated jobs stay cheap on a CPU; each is a stated server limit answered with a 422. The
# image cost admits a job of default parameters on the tiny model (32 x 32 pixels, 25 steps): a lower one refused
# most generated jobs, so few were made and the stateful phase found few jobs to read, cancel and archive.
LIMITS = {"GIFT_MAX_PROMPTS_PER_JOB": "4", "GIFT_MAX_IMAGE_COST": str(32 * 32 * 25)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=150, help="generated cases per operation and phase")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="gift-schema-fuzz-"))
    default_model_dir(home)
    env = {"GIFT_HOME": str(home), "GIFT_TORCH_THREADS": str(args.torch_threads), "GIFT_API_KEYS": KEYS,
           "GIFT_ADMIN_KEYS": "ops:admin-key", **LIMITS}  # fmt: skip
    statuses: Counter[str] = Counter()
    exits = {}
    with LocalStack(home / "stack", env=env) as stack:
        stack.start(workers=1)
        found = shutil.which("schemathesis") or Path(sys.executable).with_name("schemathesis")
        for name, (key, operations) in PASSES.items():
            har = home / f"{name}.har"
            command = [str(Path(found).absolute()), "run",  # absolute: it runs in another folder
                       f"{stack.api_url}/openapi.json", "--header", f"Authorization: Bearer {key}", *operations,
                       "--max-examples", str(args.max_examples), "--seed", str(args.seed), "--checks", "all",
                       "--continue-on-failure", "--request-timeout", "60", "--report", "har",
                       "--report-har-path", str(har)]  # fmt: skip
            run = subprocess.run(command, capture_output=True, text=True, cwd=home)
            print(run.stdout, file=sys.stderr)  # whole: a tail cut off the details of earlier findings
            entries = json.loads(har.read_text())["log"]["entries"]
            statuses.update(str(entry["response"]["status"]) for entry in entries)
            exits[name] = run.returncode
    server_errors = sum(n for status, n in statuses.items() if status.startswith("5"))
    print(json.dumps({"requests": sum(statuses.values()), "statuses": dict(sorted(statuses.items())),
                      "5xx": server_errors, "schemathesis_exit": exits}))  # fmt: skip


if __name__ == "__main__":
    main()
