"""Walk every /v1 route of the served OpenAPI with each kind of credential: the figures of docs/operations.md.

Without a key or with any wrong one every route must answer 401; with another tenant's key, every route that
names a job (and, when the cache is per tenant, an image) must answer 404, as for a job that does not exist.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field

import httpx

from gift_common.client import GeneratorClient
from gift_common.schemas import JobRequest

# Credentials that must all be refused, given the owner's key ``{key}`` and tenant ``{tenant}``.
BAD_CREDENTIALS: dict[str, dict[str, str]] = {
    "none": {},
    "wrong key": {"Authorization": "Bearer wrong-key"},
    "null key": {"Authorization": "Bearer null"},
    "scheme only": {"Authorization": "Bearer"},
    "key without scheme": {"Authorization": "{key}"},
    "basic scheme": {"Authorization": "Basic {key}"},
    "token scheme": {"Authorization": "Token {key}"},
    "key with a suffix": {"Authorization": "Bearer {key}x"},
    "truncated key": {"Authorization": "Bearer {short}"},
    "upper-cased key": {"Authorization": "Bearer {upper}"},
    "tenant name as key": {"Authorization": "Bearer {tenant}"},
    "tenant:key pair": {"Authorization": "Bearer {tenant}:{key}"},
    "two keys": {"Authorization": "Bearer {key},{key}"},
    "key in X-API-Key": {"X-API-Key": "{key}"},
    "key in a cookie": {"Cookie": "api_key={key}"},
    "key in the query": {},  # sent as ?api_key=
}


@dataclass
class AuthWalk:
    """Per credential kind, how many route calls got the expected answer and which did not."""

    routes: list[str] = field(default_factory=list)
    calls: int = 0
    holes: list[str] = field(default_factory=list)  # "METHOD path with <kind>: <status>"
    statuses: dict[str, int] = field(default_factory=dict)


def walk(api: str, owner: tuple[str, str], other_key: str, *, images_per_tenant: bool) -> AuthWalk:
    """``owner`` (tenant, key) submits a one-image job and waits for it; then every /v1 operation of
    /openapi.json is called with each bad credential (401 expected) and with ``other_key`` (404 expected on
    routes naming the owner's job, or its image when ``images_per_tenant``; 401 on the admin's routes)."""
    tenant, key = owner
    with GeneratorClient(api, key) as client:
        job = client.wait(client.submit(JobRequest(prompts=["auth walk"], num_inference_steps=2)).id, progress=False)
    values = {
        "job_id": job.id,
        "sha256": job.images[0].sha256,
        "adapter_id": "0" * 64,
        "adaptation_id": "ad-" + "0" * 32,
    }
    figures, seen = AuthWalk(), Counter()
    spec = httpx.get(f"{api}/openapi.json").json()
    for path, operations in spec["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method in operations:
            url = api + re.sub(r"{(\w+)}", lambda m: values[m.group(1)], path)
            figures.routes.append(f"{method.upper()} {path}")
            body = {"prompts": ["auth walk"]} if method == "post" else None
            fill = {"key": key, "tenant": tenant, "short": key[:-1], "upper": key.upper()}
            for kind, headers in BAD_CREDENTIALS.items():
                sent = {name: value.format(**fill) for name, value in headers.items()}
                params = {"api_key": key} if kind == "key in the query" else None
                _expect(figures, seen, method, url, path, kind, 401, sent, params, body)
            names_owned = "{job_id}" in path or ("{sha256}" in path and images_per_tenant)
            if names_owned:
                refused = 401 if path.startswith("/v1/admin/") else 404  # a tenant's key is no admin's
                _expect(figures, seen, method, url, path, "another tenant's key", refused,
                        {"Authorization": f"Bearer {other_key}"}, None, body)  # fmt: skip
    figures.statuses = {str(status): n for status, n in sorted(seen.items())}
    return figures


def _expect(figures: AuthWalk, seen: Counter, method: str, url: str, path: str, kind: str, expected: int,
            headers: dict[str, str], params: dict[str, str] | None, body: dict | None) -> None:  # fmt: skip
    response = httpx.request(method, url, headers=headers, params=params, json=body)
    figures.calls += 1
    seen[response.status_code] += 1
    if response.status_code != expected:
        figures.holes.append(f"{method.upper()} {path} with {kind}: {response.status_code}")


def as_json(figures: AuthWalk) -> dict:
    return asdict(figures)
