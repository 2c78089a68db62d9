"""B10 head to head: visionq against the peer (bench.peer), in one run, on the same
machine, simulator, gunicorn options and kind of input: a PNG uploaded as multipart with a
prompt, waited for the way each one's user waits (visionq: long-poll; the peer: polling
its result route every 10 ms, its best case).

For 1, 2 and 4 worker processes (visionq: upstream workers of its default 64 threads,
beside one prepare worker; the peer: Celery's default prefork pool of that many
processes), each on a fresh stack:
- jobs/s at 1 s upstream latency (the simulator's `[sim:latency=1]`);
and on the 2-process stacks (Celery's default on 2 cores; `--quick`: the one stack a side),
at zero upstream latency:
- CPU ms per job of the API, the workers and Redis, and Redis commands per job (INFO
  commandstats), each less an idle window of the same length;
- median end-to-end latency of one job at a time;
- peak RSS of the API and workers while ten 40 MB uploads are in flight.
"""

from __future__ import annotations

import base64
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import requests

from bench.e2e import UNLIMITED_BUDGET
from bench.intake import _png as _noise_png
from bench.intake import _tree_rss
from bench.redis_commands import _png as _small_png
from bench.redis_commands import _stats, _tree_cpu
from bench.report import Check
from bench.stack import SIM_KEY, running, stop_children
from visionq.dev.ports import free_port, wait_for_http
from visionq.dev.redisserver import RedisServer

PROCESSES = (1, 2, 4)
BIG_BYTES = 40_000_000
UNLIMITED = {**UNLIMITED_BUDGET, "VISIONQ_UPSTREAM_CONCURRENCY": "256"}
KEY = "key-big"


@dataclass
class _System:
    """One side of the comparison, running: how to submit a job and wait for it, and
    what to measure."""

    name: str
    submit: Callable[[requests.Session, bytes, str], str]
    wait: Callable[[requests.Session, str], bool]
    redis_url: str
    #: role ("api", "workers") -> pids whose trees are measured
    pids: dict[str, list[int]]

    def cpu(self) -> dict[str, float]:
        out = {role: sum(_tree_cpu(pid) for pid in pids) for role, pids in self.pids.items()}
        info = redis.Redis.from_url(self.redis_url).info("cpu")
        out["redis"] = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        return out

    def rss(self) -> int:
        return sum(_tree_rss(pid) for pids in self.pids.values() for pid in pids)

    def run_one(self, http: requests.Session, image: bytes, prompt: str) -> bool:
        return self.wait(http, self.submit(http, image, prompt))


@contextmanager
def _visionq(processes: int) -> Iterator[_System]:
    with running(
        workers={"prepare": 1, "upstream": processes},
        simulator_args=("--rpm", "0"),
        env=UNLIMITED,
    ) as stack:
        api = stack.api_url

        def submit(http: requests.Session, image: bytes, prompt: str) -> str:
            response = http.post(
                f"{api}/v1/jobs",
                files={"image": ("a.png", image, "image/png")},
                data={"prompt": prompt},
                headers={"Authorization": f"Bearer {KEY}"},
                timeout=300,
            )
            response.raise_for_status()
            return str(response.json()["id"])

        def wait(http: requests.Session, job_id: str) -> bool:
            while True:
                job = http.get(
                    f"{api}/v1/jobs/{job_id}",
                    params={"wait": 60},
                    headers={"Authorization": f"Bearer {KEY}"},
                    timeout=90,
                ).json()
                if job["status"] in ("succeeded", "failed", "canceled"):
                    return bool(job["status"] == "succeeded")

        roles: dict[str, list[int]] = {"api": [], "workers": []}
        for child in stack.children:
            role = str(child.args[3])
            if role in ("api", "worker", "sweeper"):
                roles["api" if role == "api" else "workers"].append(child.pid)
        yield _System("visionq", submit, wait, stack.redis_url, roles)


@contextmanager
def _peer(processes: int) -> Iterator[_System]:
    root = Path(tempfile.mkdtemp(prefix="visionq-bench-peer-"))
    server = RedisServer(root / "redis").start()
    sim_port, api_port = free_port(), free_port()
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "PEER_REDIS_URL": server.url,
        "PEER_FOLDER": str(root / "uploads"),
        "PEER_UPSTREAM": f"http://127.0.0.1:{sim_port}/v1",
        "PEER_KEY": SIM_KEY,
    }
    children: list[subprocess.Popen[bytes]] = []

    def spawn(name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (root / f"{name}.log").open("wb")
        child = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        children.append(child)
        return child

    try:
        sim = spawn(
            "simulator",
            *(sys.executable, "-m", "visionq", "simulator", "--port", str(sim_port)),
            *("--api-key", SIM_KEY, "--rpm", "0"),
        )
        wait_for_http(f"http://127.0.0.1:{sim_port}/", sim, timeout=60)
        worker = spawn(
            "worker",
            *(sys.executable, "-m", "bench.peer", "worker", "--concurrency", str(processes)),
        )
        api = spawn("api", sys.executable, "-m", "bench.peer", "api", "--port", str(api_port))
        base = f"http://127.0.0.1:{api_port}"
        wait_for_http(f"{base}/jobs/none", api, timeout=60)
        client = redis.Redis.from_url(server.url)
        deadline = time.monotonic() + 60
        while not client.exists("_kombu.binding.celery"):  # the worker consumes
            assert worker.poll() is None and time.monotonic() < deadline, root / "worker.log"
            time.sleep(0.1)

        def submit(http: requests.Session, image: bytes, prompt: str) -> str:
            response = http.post(
                f"{base}/jobs",
                files={"image": ("a.png", image, "image/png")},
                data={"prompt": prompt},
                timeout=300,
            )
            response.raise_for_status()
            return str(response.json()["id"])

        def wait(http: requests.Session, task_id: str) -> bool:
            while True:
                state = http.get(f"{base}/jobs/{task_id}", timeout=90).json()["status"]
                if state in ("SUCCESS", "FAILURE"):
                    return bool(state == "SUCCESS")
                time.sleep(0.01)

        pids = {"api": [api.pid], "workers": [worker.pid]}
        yield _System("peer", submit, wait, server.url, pids)
    finally:
        stop_children(children)
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _throughput(system: _System, jobs: int, image: bytes) -> float:
    """Jobs per second at 1 s upstream latency, from the first submit to the last answer."""
    started = time.monotonic()
    with ThreadPoolExecutor(64) as pool, requests.Session() as http:
        ok = list(
            pool.map(lambda n: system.run_one(http, image, f"{n} [sim:latency=1]"), range(jobs))
        )
    elapsed = time.monotonic() - started
    assert all(ok), f"{system.name}: {ok.count(False)} of {jobs} jobs failed"
    return jobs / elapsed


def _costs(system: _System, jobs: int, image: bytes) -> dict[str, float]:
    """CPU ms and Redis commands per job at zero latency, less an idle window."""
    client = redis.Redis.from_url(system.redis_url)
    with ThreadPoolExecutor(8) as pool, requests.Session() as http:

        def burst(n: int) -> None:
            assert all(pool.map(lambda i: system.run_one(http, image, f"job {i}"), range(n)))

        burst(20)
        time.sleep(2)
        cpu, commands, started = system.cpu(), _stats(client), time.monotonic()
        burst(jobs)
        time.sleep(1)
        window = time.monotonic() - started
        cpu_busy, commands_busy = system.cpu(), _stats(client)
        time.sleep(window)
        cpu_idle, commands_idle = system.cpu(), _stats(client)
    per_job = {
        f"cpu_ms_{role}": 1000
        * ((cpu_busy[role] - cpu[role]) - (cpu_idle[role] - cpu_busy[role]))
        / jobs
        for role in cpu
    }
    per_job["cpu_ms"] = sum(per_job.values())

    def total(stats: dict[str, int]) -> int:
        return sum(v for k, v in stats.items() if k != "info")

    busy = total(commands_busy) - total(commands)
    idle = total(commands_idle) - total(commands_busy)
    per_job["redis_commands"] = (busy - idle) / jobs
    return per_job


def _latency(system: _System, jobs: int, image: bytes) -> float:
    """Median seconds from submit to the answer in hand, one job at a time."""
    seconds = []
    with requests.Session() as http:
        for n in range(jobs):
            started = time.monotonic()
            assert system.run_one(http, image, f"latency {n}")
            seconds.append(time.monotonic() - started)
    return statistics.median(seconds)


def _peak_rss(system: _System, big: bytes) -> int:
    """Peak RSS of the API and workers while ten 40 MB uploads run their course."""
    peak, stop = system.rss(), threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, system.rss())
            stop.wait(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with ThreadPoolExecutor(10) as pool, requests.Session() as http:
            list(pool.map(lambda n: system.run_one(http, big, f"big {n}"), range(10)))
    finally:
        stop.set()
        sampler.join()
    return peak


def _measure(
    start: Callable[[int], AbstractContextManager[_System]],
    quick: bool,
    small: bytes,
    big: bytes,
) -> dict[str, Any]:
    out: dict[str, Any] = {"jobs_per_s": {}}
    # A quick run (CI's smoke test) measures everything on one stack a side.
    costs_at = 1 if quick else 2
    for processes in PROCESSES[:1] if quick else PROCESSES:
        with start(processes) as system:
            # The peer's pool answers one job a second per process; visionq's many.
            jobs = (
                (8 if quick else 20) * processes
                if system.name == "peer"
                else (60 if quick else 200)
            )
            out["jobs_per_s"][processes] = round(_throughput(system, jobs, small), 2)
            if processes == costs_at:
                out.update(
                    {k: round(v, 3) for k, v in _costs(system, 60 if quick else 300, small).items()}
                )
                out["latency_p50_ms"] = round(
                    1000 * _latency(system, 15 if quick else 50, small), 2
                )
                out["peak_rss_mib"] = round(_peak_rss(system, big) / 2**20, 1)
    return out


def run(quick: bool, out: Path) -> dict[str, Any]:
    small = base64.b64decode(_small_png().partition(",")[2])
    side = int((BIG_BYTES / 3) ** 0.5)
    big = _noise_png(side, side)
    return {
        "cores": len(os.sched_getaffinity(0)),
        "big_upload_bytes": len(big),
        "visionq": _measure(_visionq, quick, small, big),
        "peer": _measure(_peer, quick, small, big),
    }


def checks(r: dict[str, Any]) -> list[Check]:
    ours, peer = r["visionq"], r["peer"]
    out = [
        Check(
            f"B10 jobs/s at 1 s latency, {n} worker process{'es' if n > 1 else ''}",
            ours["jobs_per_s"][n],
            peer["jobs_per_s"][n],
            "the peer",
            ">= 1",
            ours["jobs_per_s"][n] >= peer["jobs_per_s"][n],
        )
        for n in ours["jobs_per_s"]
    ]
    for figure, label in (
        ("cpu_ms", "CPU ms per job, API + workers + Redis"),
        ("redis_commands", "Redis commands per job"),
        ("peak_rss_mib", "peak RSS MiB, ten 40 MB uploads"),
    ):
        out.append(
            Check(
                f"B10 {label}",
                ours[figure],
                peer[figure],
                "the peer",
                "<= 1",
                ours[figure] <= peer[figure],
            )
        )
    out.append(
        Check(
            "B10 median end-to-end latency, ms",
            ours["latency_p50_ms"],
            peer["latency_p50_ms"],
            "the peer",
            "<= 1.2",
            ours["latency_p50_ms"] <= 1.2 * peer["latency_p50_ms"],
        )
    )
    return out
