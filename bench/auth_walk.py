"""Auth on every /v1 route of the served OpenAPI, as figures (docs/operations.md): 401s and cross-tenant 404s.

Real processes: a private redis-server, the API with two tenants' keys and the cache per tenant, one worker on
the tiny pipeline. The last line printed is one JSON object; "holes" lists every unexpected answer (must be []).
Run: .venv/bin/python bench/auth_walk.py
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from tinyworld.pipeline import default_model_dir

from services.stack import LocalStack
from services.testing.auth_walk import BAD_CREDENTIALS, as_json, walk


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="gift-auth-walk-"))
    default_model_dir(home)
    env = {"GIFT_HOME": str(home), "GIFT_TORCH_THREADS": "1", "GIFT_API_KEYS": "alice:alice-key,bob:bob-key",
           "GIFT_CACHE_SCOPE": "tenant"}  # fmt: skip
    with LocalStack(home / "stack", env=env) as stack:
        stack.start(workers=1)
        figures = walk(stack.api_url, ("alice", "alice-key"), "bob-key", images_per_tenant=True)
    print(json.dumps({"credential_kinds": len(BAD_CREDENTIALS) + 1, **as_json(figures)}))


if __name__ == "__main__":
    main()
