"""The size of each docker image (issue 16): the api, worker and trainer targets built from the project's
Dockerfiles, split into the base image and the project's layers, with a smoke run of the api and worker images and
`gift demo` in the trainer image.

For each image: its size as the engine reports it (`docker image inspect`, the size `docker image ls` shows),
the base's share, the layer that installs the role's file of the lock and the one that installs the project
(`docker history`), and the installed packages inside it (`du -sb` of the directory the project went into).
The smoke: a redis-server on this host, the api and worker images as containers against it; GET /healthz,
GET /readyz once the worker's heartbeat arrives, one job of two images with the embedded default model, each
image downloaded and checked; the api image must not import torch. The demo: `gift demo` in the trainer image with
no network but the container's loopback (its own redis-server, API, worker and two trainers), at its test size or
with its defaults (--demo default), timed from `docker run` to exit. The last line printed is one JSON object.

Needs a Docker engine; pip in the build reaches the package index through the host's network (`--network=host`).
Where Docker Hub is out of reach, make a base first (bench/debian_base.sh) and pass it with --base.
Run: python bench/image_sizes.py [--base IMAGE] [--no-build] [--demo {test,default}] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from gift_common.client import GeneratorClient
from gift_common.schemas import JobRequest
from services.stack import ONE_THREAD, RedisServer, free_port, wait_until
from services.testing.installs import DEMO_TEST_SIZE

# image name: (Dockerfile, target); the trainer's Dockerfile has one stage
TARGETS = {
    "api": ("services/generator/Dockerfile", "api"),
    "worker": ("services/generator/Dockerfile", "worker"),
    "trainer": ("services/trainer/Dockerfile", None),
}
ROOT = Path(__file__).resolve().parent.parent
DEMO_SIZES: dict[str, Sequence[str]] = {"test": DEMO_TEST_SIZE, "default": ()}
MB = 1e6


def docker(*args: str) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"docker {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return result.stdout


def build(name: str, base: str, tag: str, log: Path) -> float:
    """Seconds to build one target without the engine's cache, downloads from the index included."""
    dockerfile, target = TARGETS[name]
    args = ["docker", "build", "--no-cache", "--network=host", "--build-arg", f"BASE_IMAGE={base}",
            "-f", dockerfile, "-t", tag, *(["--target", target] if target else []), "."]  # fmt: skip
    start = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.run(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT).returncode
    if code:
        raise RuntimeError(f"building {name} failed ({code}); its log is {log}")
    return time.perf_counter() - start


def image_bytes(tag: str) -> int:
    return int(docker("image", "inspect", "--format", "{{.Size}}", tag))


def layer_bytes(tag: str, marker: str) -> int:
    """The size of the one layer whose command contains ``marker`` (`docker history`, in bytes)."""
    rows = docker("history", "--no-trunc", "--human=false", "--format", "{{.Size}}\t{{.CreatedBy}}", tag)
    sizes = [int(size) for size, command in (row.split("\t", 1) for row in rows.splitlines()) if marker in command]
    if len(sizes) != 1:
        raise RuntimeError(f"{tag}: {len(sizes)} layers run {marker!r}, expected one")
    return sizes[0]


def packages_bytes(tag: str) -> int:
    """`du -sb` of the directory pip installed the project into, inside the image (`-P`: not the copy in /app)."""
    where = "import gift_common, os; print(os.path.dirname(os.path.dirname(gift_common.__file__)))"
    directory = docker("run", "--rm", tag, "python", "-P", "-c", where).strip()
    return int(docker("run", "--rm", tag, "du", "-sb", directory).split()[0])


def measure(tag: str, base: str) -> dict[str, float]:
    total, base_size = image_bytes(tag), image_bytes(base)
    return {
        "image_mb": round(total / MB, 1),
        "project_layers_mb": round((total - base_size) / MB, 1),
        "lock_layer_mb": round(layer_bytes(tag, "--require-hashes") / MB, 1),
        "project_layer_mb": round(layer_bytes(tag, "--no-build-isolation") / MB, 1),
        "packages_mb": round(packages_bytes(tag) / MB, 1),
    }


def http_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(response.status)


def container(name: str, tag: str, env: dict[str, str], command: list[str]) -> None:
    """A detached container on the host's network, so that it reaches the host's redis-server."""
    flags = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
    docker("run", "-d", "--network=host", "--name", name, *flags, tag, *command)


def remove(name: str, log: Path) -> None:
    """Keep the container's output beside the build logs, then remove it."""
    logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
    log.write_text(logs.stdout + logs.stderr)
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def smoke(tags: dict[str, str], out: Path) -> dict[str, object]:
    """The api and worker images against a redis-server on this host: health, readiness and one job."""
    names = {kind: f"gift-smoke-{kind}-{free_port()}" for kind in ("api", "worker")}
    redis = RedisServer(out / "redis").start()
    port = free_port()
    env = {"GIFT_REDIS_URL": redis.url, **ONE_THREAD}
    url = f"http://127.0.0.1:{port}"
    try:
        start = time.perf_counter()
        serve = ["gift", "generator", "serve", "--host", "127.0.0.1", "--port", str(port)]
        container(names["api"], tags["api"], env, serve)
        wait_until(lambda: http_status(f"{url}/healthz") == 200, 60, "the api container")
        healthy_s = time.perf_counter() - start
        start = time.perf_counter()
        container(names["worker"], tags["worker"], env, ["gift", "generator", "worker"])
        wait_until(lambda: http_status(f"{url}/readyz") == 200, 180, "the worker container's heartbeat")
        ready_s = time.perf_counter() - start
        with GeneratorClient(url) as client:
            request = JobRequest(prompts=["a red circle.", "a blue square."], seed=0, num_inference_steps=2)
            job = client.wait(client.submit(request).id, timeout=300, progress=False)
            pngs = [client.image(info.sha256) for info in job.images]  # each one's SHA-256 checked by the client
        return {"healthz_s": round(healthy_s, 1), "readyz_s": round(ready_s, 1), "job_status": job.status,
                "images": len(pngs), "png_bytes": sum(len(png) for png in pngs)}  # fmt: skip
    finally:
        for kind, name in names.items():
            remove(name, out / f"smoke-{kind}.log")
        redis.stop()


def demo(tag: str, size: Sequence[str], out: Path) -> dict[str, object]:
    """`gift demo` in ``tag`` on no network but the container's loopback: its wall time and the table it printed."""
    args = ["docker", "run", "--rm", "--network=none", tag, "gift", "demo", "--out", "/tmp/demo-out", *size]
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    (out / "demo.log").write_text(done.stdout + done.stderr)
    if done.returncode:
        raise RuntimeError(f"gift demo in {tag} failed ({done.returncode}); its output is in {out / 'demo.log'}")
    rows = [line for line in done.stdout.splitlines() if line.startswith(("| ft |", "| gift |"))]
    if len(rows) != 2:
        raise RuntimeError(f"gift demo in {tag} printed {len(rows)} of its table's two rows; see {out / 'demo.log'}")
    return {"args": " ".join(size), "wall_s": round(seconds, 1), "table_rows": rows}


def imports(tag: str, modules: str) -> bool:
    """Whether ``import modules`` succeeds in the image; a failure other than a missing module is an error."""
    result = subprocess.run(
        ["docker", "run", "--rm", tag, "python", "-c", f"import {modules}"], capture_output=True, text=True
    )
    if result.returncode and "ModuleNotFoundError" not in result.stderr:
        raise RuntimeError(f"{tag}: import {modules} failed otherwise: {result.stderr.strip()[-2000:]}")
    return result.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="python:3.11-slim", help="the BASE_IMAGE build argument")
    parser.add_argument("--no-build", action="store_true", help="measure the images of an earlier run")
    parser.add_argument("--demo", choices=DEMO_SIZES, default="test", help="the demo's size in the trainer image")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "images", help="build logs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tags = {name: f"gift-{name}:measured" for name in TARGETS}
    to_build = {} if args.no_build else tags
    build_s = {name: round(build(name, args.base, tag, args.out / f"{name}.log")) for name, tag in to_build.items()}
    sizes = {name: measure(tag, args.base) for name, tag in tags.items()}
    result = smoke(tags, args.out)
    result["api_imports_torch"] = imports(tags["api"], "torch")
    result["trainer_imports_open_clip_tinyworld"] = imports(tags["trainer"], "open_clip, tinyworld, services.trainer")
    result["trainer_demo"] = demo(tags["trainer"], DEMO_SIZES[args.demo], args.out)
    print(docker("image", "ls", "--filter", "reference=gift-*:measured"), end="")
    print(docker("image", "ls", args.base), end="")
    for name, figures in sizes.items():
        print(f"{name:8s} " + "  ".join(f"{key} {value:8.1f}" for key, value in figures.items()))
    print(json.dumps({"base": args.base, "base_mb": round(image_bytes(args.base) / MB, 1), "images": sizes,
                      "build_s": build_s, "smoke": result}))  # fmt: skip


if __name__ == "__main__":
    main()
