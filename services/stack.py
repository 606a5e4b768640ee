"""Start the generator stack as separate local processes: a redis-server, the API, workers.

Used by ``gift demo`` and the integration tests, so that both run the same real parts a deployment runs
(processes talking over real ports), and stop everything they started, also on Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import redis

from gift_common.errors import UserError


def threads(count: int) -> dict[str, str]:
    """The environment that caps a process's torch (and its BLAS) at `count` CPU threads: processes sharing a
    small machine each take one, or they oversubscribe its cores."""
    return {"OMP_NUM_THREADS": str(count), "MKL_NUM_THREADS": str(count), "GIFT_TORCH_THREADS": str(count)}


ONE_THREAD = threads(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]  # (host, port) for AF_INET; typeshed says Any
        return port


def wait_until(
    check: Callable[[], object],
    timeout: float,
    what: str,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with code {process.returncode} before it was ready:\n{tail}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} was not ready after {timeout:.0f} s")


class Process:
    """A child process with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, args: list[str], log: Path, env: dict[str, str] | None = None):
        self.name, self.args, self.log = name, args, log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = log.open("ab")
        self.popen = subprocess.Popen(
            args, stdout=self._log_file, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
            start_new_session=True,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as when a machine dies."""
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait()
        self._log_file.close()

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        self.popen.wait()
        self._log_file.close()


class RedisServer:
    """A private redis-server with append-only persistence, which can be stopped and started again.

    ``appendfsync``: ``always`` (the default here) or ``everysec`` (as docker-compose.yml runs it); memory is
    unbounded and, when a trial bounds it, never evicted (``noeviction``, as docker-compose.yml).
    """

    def __init__(self, directory: Path, port: int | None = None, appendfsync: str = "always"):
        if shutil.which("redis-server") is None:
            raise UserError("redis-server is not installed: install it (Debian: apt-get install redis-server)")
        self.directory, self.port, self.appendfsync = directory, port or free_port(), appendfsync
        self.process: Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
                "--appendonly", "yes", "--appendfsync", self.appendfsync, "--maxmemory-policy", "noeviction",
                "--save", "", "--daemonize", "no"]  # fmt: skip
        self.process = Process("redis", args, self.directory / "redis.log")
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        wait_until(client.ping, 20, "redis-server", self.process.popen, self.process.log)
        return self

    def stop(self) -> None:
        if self.process:
            self.process.stop()


class LocalStack:
    """Redis (unless a URL is given), the API and workers, each its own process, on free local ports."""

    def __init__(
        self,
        run_dir: Path,
        redis_url: str | None = None,
        env: dict[str, str] | None = None,
        appendfsync: str = "always",
    ):
        self.run_dir = run_dir
        self.redis = None if redis_url else RedisServer(run_dir / "redis", appendfsync=appendfsync)
        self._redis_url = redis_url
        self.env = dict(env or {})
        self.api: Process | None = None
        self.api_port = free_port()
        self.workers: list[Process] = []

    @property
    def redis_url(self) -> str:
        return self._redis_url or self.redis.url  # type: ignore[union-attr]

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def _env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**self.env, "GIFT_REDIS_URL": self.redis_url, **(extra or {})}

    def start(self, workers: int = 1) -> LocalStack:
        if self.redis:
            self.redis.start()
        self.start_api()
        for _ in range(workers):
            self.start_worker()
        self.wait_ready()
        return self

    def start_api(self) -> Process:
        args = [sys.executable, "-m", "services.cli", "generator", "serve", "--port", str(self.api_port)]
        self.api = Process("api", args, self.run_dir / "api.log", self._env())
        wait_until(lambda: httpx.get(f"{self.api_url}/healthz").status_code == 200, 60, "generator API",
                    self.api.popen, self.api.log)  # fmt: skip
        return self.api

    def start_another_api(self, name: str, env: dict[str, str] | None = None) -> tuple[Process, str]:
        """One more API process against the same Redis, on a free port, with ``env`` over the stack's; and its URL,
        once it answers. The caller stops it."""
        port = free_port()
        args = [sys.executable, "-m", "services.cli", "generator", "serve", "--port", str(port)]
        api, url = Process(name, args, self.run_dir / f"{name}.log", self._env(env)), f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(f"{url}/healthz").status_code == 200, 60, name, api.popen, api.log)
        return api, url

    def start_worker(self, extra_args: list[str] | None = None, env: dict[str, str] | None = None) -> Process:
        index = len(self.workers)
        args = [sys.executable, "-m", "services.cli", "generator", "worker", *(extra_args or [])]
        worker = Process(f"worker{index}", args, self.run_dir / f"worker{index}.log", self._env(env))
        self.workers.append(worker)
        return worker

    def wait_ready(self, timeout: float = 180) -> None:
        """Until /readyz says a worker is alive (the first start may build the default model)."""
        alive = [w for w in self.workers if w.alive()]
        watched = alive[-1] if alive else None
        wait_until(lambda: httpx.get(f"{self.api_url}/readyz").status_code == 200, timeout, "a generator worker",
                    watched.popen if watched else None, watched.log if watched else None)  # fmt: skip

    def stop(self) -> None:
        for process in [*self.workers, self.api]:
            if process is not None:
                process.stop()
        if self.redis:
            self.redis.stop()

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
