"""A whole stack for one benchmark: its own redis-server, the simulator, workers, sweeper
and API as child processes of this one, each with its log in a temporary folder, all
stopped by PID when the block ends (nothing is left running, nothing shared)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

from visionq.dev.ports import free_port, wait_for_http
from visionq.dev.redisserver import RedisServer

SIM_KEY = "bench-simulator-key"


@dataclass
class BenchStack:
    api_url: str
    simulator_url: str
    redis_url: str
    logs: Path
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)
    spawn: Callable[..., subprocess.Popen[bytes]] | None = None

    def simulator_stats(self) -> dict:
        return requests.get(f"{self.simulator_url}/_sim/stats", timeout=10).json()

    def restart(self, child: subprocess.Popen[bytes], name: str) -> subprocess.Popen[bytes]:
        """Replace the worker `child` as a rolling update with a surge does: start its
        replacement (logging to `name`.log), and once that is ready SIGTERM `child` (its
        running tasks finish first) and wait for it. Stopping first would leave the queue
        without a consumer for the whole soft-shutdown timeout."""
        assert self.spawn is not None
        replacement = self.spawn(name, *[str(a) for a in child.args][3:])
        log = self.logs / f"{name}.log"
        deadline = time.monotonic() + 60
        while b" ready." not in log.read_bytes():
            if replacement.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start; see {log}")
            time.sleep(0.2)
        child.terminate()
        child.wait(60)
        self.children.remove(child)
        return replacement


def stop_children(children: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each, the last started first; SIGKILL any still running after 30 s."""
    for child in reversed(children):
        child.terminate()
    for child in children:
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()


def _wait_for(url: str, child: subprocess.Popen[bytes], log: Path) -> None:
    try:
        wait_for_http(url, child, timeout=60)
    except RuntimeError as exc:
        raise RuntimeError(f"{child.args}: {exc}; see {log}") from None


@contextmanager
def running(
    *,
    workers: dict[str, int],
    simulator_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    api_keys: str = "big:key-big,small:key-small",
    concurrency: dict[str, int] | None = None,
    api_args: tuple[str, ...] = (),
    accounts: tuple[tuple[str, str], ...] = (),
) -> Iterator[BenchStack]:
    """`workers` maps a queue to how many worker processes consume it, `concurrency` a
    queue to each process's pool size (default: the worker's own); `api_args` go to
    `visionq api` (e.g. `--workers`, `--threads`). `accounts`: (name, key) of each
    simulator account, instead of the one key (`env` then names them to the service)."""
    root = Path(tempfile.mkdtemp(prefix="visionq-bench-"))
    redis_server = RedisServer(root / "redis").start()
    sim_port, api_port = free_port(), free_port()
    simulator_url = f"http://127.0.0.1:{sim_port}"
    child_env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "VISIONQ_REDIS_URL": redis_server.url,
        "VISIONQ_STORAGE_URL": f"file://{root / 'images'}",
        **({} if accounts else {"MIMO_API_KEY": SIM_KEY}),
        "VISIONQ_UPSTREAM_BASE_URL": f"{simulator_url}/v1",
        "VISIONQ_UPSTREAM_ANTHROPIC_BASE_URL": f"{simulator_url}/anthropic",
        "VISIONQ_API_KEYS": api_keys,
        **(env or {}),
    }
    stack = BenchStack(f"http://127.0.0.1:{api_port}", simulator_url, redis_server.url, root)

    def spawn(name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (root / f"{name}.log").open("wb")
        child = subprocess.Popen(
            [sys.executable, "-m", "visionq", *args],
            env=child_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        stack.children.append(child)
        return child

    stack.spawn = spawn
    try:
        keys = [("--account", f"{n}={k}") for n, k in accounts] or [("--api-key", SIM_KEY)]
        sim_args = ("--port", str(sim_port), *(a for pair in keys for a in pair), *simulator_args)
        sim = spawn("simulator", "simulator", *sim_args)
        _wait_for(f"{simulator_url}/", sim, root / "simulator.log")
        for queue, count in workers.items():
            pool = (
                ("--concurrency", str(concurrency[queue])) if queue in (concurrency or {}) else ()
            )
            for n in range(count):
                spawn(f"worker-{queue}-{n}", "worker", "--queues", queue, *pool)
        spawn("sweeper", "sweeper")
        api = spawn("api", "api", "--port", str(api_port), *api_args)
        _wait_for(f"{stack.api_url}/healthz", api, root / "api.log")
        yield stack
    finally:
        stop_children(stack.children)
        redis_server.stop()
        shutil.rmtree(root, ignore_errors=True)
