"""A stack whose workers are one `visionq worker` for every queue, as on a single host.

`running_stack` (tests/support/stack.py) runs a worker per queue; the tests here are about the
all-queues command itself (its supervisor, its children), so they need it to be the only
worker. Each such stack has a Redis of its own, which a test may stop or fill.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support import SIM_KEY, Process, Stack, stack_env, start_api, wait_for_http
from visionq.dev.ports import free_port
from visionq.dev.redisserver import RedisServer


@contextmanager
def one_worker_stack(
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    worker_args: tuple[str, ...] = ("--concurrency", "2"),
    **extra_env: str,
) -> Iterator[Stack]:
    """The simulator, one all-queues worker (named "worker") started with `worker_args`,
    the sweeper and the API."""
    logs = tmp_path_factory.mktemp("logs")
    storage = tmp_path_factory.mktemp("storage")
    sim_port = free_port()
    simulator_url = f"http://127.0.0.1:{sim_port}"
    env = stack_env(redis_server.url, storage, simulator_url, **extra_env)
    sim_cmd = ["simulator", "--port", str(sim_port), "--api-key", SIM_KEY, "--rpm", "0"]
    processes = [Process("simulator", sim_cmd, env, logs)]
    try:
        wait_for_http(f"{simulator_url}/", processes[0])
        processes.append(Process("worker", ["worker", *worker_args], env, logs))
        processes.append(Process("sweeper", ["sweeper"], env, logs))
        api, base_url = start_api(env, logs)
        processes.append(api)
        yield Stack(base_url, redis_server.url, simulator_url, env, storage, processes)
    finally:
        for process in reversed(processes):
            process.stop()


def process(stack: Stack, name: str) -> Process:
    return next(p for p in stack.processes if p.name == name)


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def queue_child(parent: int, queue: str) -> int | None:
    """The pid of the parent's child that runs `queue` (`visionq worker --queues queue`)."""
    for pid in children(parent):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:  # it ended since we listed it
            continue
        if b"--queues" in argv and argv[argv.index(b"--queues") + 1] == queue.encode():
            return pid
    return None


def zombies(parent: int) -> list[int]:
    """The parent's children that ended and were not reaped."""
    found = []
    for pid in children(parent):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            found.append(pid)
    return found


def log_lines(process: Process) -> list[dict[str, Any]]:
    """The JSON lines of its log (Celery's own plain-text lines left out)."""
    lines = []
    for line in process.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return lines
