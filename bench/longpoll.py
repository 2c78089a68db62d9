"""How many concurrent `?wait=60` clients one API process holds, and what they cost.

Usage: python bench/longpoll.py [--clients 1000] [--threads 1100] [--hold 30]

Starts its own redis-server and one API process (`visionq api --workers 1`), creates
queued jobs straight in Redis (no worker runs, so nothing finishes on its own), opens one
long-poll per job, then measures over `--hold` seconds: the API process's CPU time and
RSS, and how fast `/healthz` still answers. Finally it finishes every job at once and
measures how long the held requests take to come back (the pub/sub wake-up).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis
import requests

from visionq.dev.ports import free_port
from visionq.dev.redisserver import RedisServer
from visionq.state.jobs import JobStore


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _gunicorn_worker(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return int(children[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1100)
    parser.add_argument("--hold", type=float, default=30.0)
    args = parser.parse_args()
    threading.stack_size(256 * 1024)  # a thousand client threads in this process too

    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis").start()
        port = free_port()
        env = dict(
            os.environ,
            VISIONQ_REDIS_URL=server.url,
            VISIONQ_AUTH="disabled",
            VISIONQ_STORAGE_URL=f"file://{tmp}/images",
        )
        api = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "visionq",
                "api",
                "--port",
                str(port),
                "--workers",
                "1",
                "--threads",
                str(args.threads),
            ],
            env=env,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            _run(args, base, server, api)
        finally:
            api.terminate()
            api.wait(30)
            server.stop()


def _run(
    args: argparse.Namespace, base: str, server: RedisServer, api: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(f"{base}/healthz", timeout=1)
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline, "the API did not start"
            time.sleep(0.1)
    worker = _gunicorn_worker(api.pid)
    jobs = JobStore(redis.Redis.from_url(server.url), ttl=3600, queued_grace=300)
    ids = [
        jobs.create(
            tenant="default",
            model="mimo-v2.5",
            api="openai",
            request={},
            images=[],
            webhook_url=None,
            metadata=None,
        ).id
        for _ in range(args.clients)
    ]
    returned: dict[str, float] = {}
    statuses: dict[str, str] = {}

    def poll(job_id: str) -> None:
        with requests.Session() as http:
            job = http.get(f"{base}/v1/jobs/{job_id}", params={"wait": 60}, timeout=90).json()
            if "status" not in job:
                print("error answer:", job)
        returned[job_id] = time.monotonic()
        statuses[job_id] = job["status"]

    idle_rss = _rss_mb(worker)
    threads = [threading.Thread(target=poll, args=(i,), daemon=True) for i in ids]
    for t in threads:
        t.start()
    time.sleep(5)  # let every request reach the API and block
    early = len(returned)
    cpu0, t0 = _cpu_seconds(worker), time.monotonic()
    health = []
    while time.monotonic() - t0 < args.hold:
        started = time.perf_counter()
        requests.get(f"{base}/healthz", timeout=30)
        health.append((time.perf_counter() - started) * 1000)
        time.sleep(0.5)
    cpu_used = _cpu_seconds(worker) - cpu0
    window = time.monotonic() - t0
    held_rss = _rss_mb(worker)

    finished_at = time.monotonic()
    for job_id in ids:
        jobs.start(job_id)
        jobs.succeed(job_id, {"content": "done"})
    for t in threads:
        t.join(60)
    wake = sorted(returned[i] - finished_at for i in ids if i in returned)
    print(
        f"clients held: {args.clients - early} of {args.clients} "
        f"(returned early: {early}); API threads {args.threads}, 1 worker process"
    )
    print(
        f"API CPU while holding: {cpu_used:.2f} s over {window:.0f} s "
        f"({100 * cpu_used / window:.1f} % of one core)"
    )
    print(
        f"API worker RSS: {idle_rss:.0f} MB idle, {held_rss:.0f} MB holding "
        f"({(held_rss - idle_rss) * 1024 / max(1, args.clients):.0f} KB per held client)"
    )
    print(
        f"/healthz while holding: median {statistics.median(health):.1f} ms, "
        f"max {max(health):.1f} ms"
    )
    print(
        f"after finishing all jobs: {len(wake)} returned, "
        f"{sum(s == 'succeeded' for s in statuses.values())} saw succeeded; "
        f"p50 {1000 * wake[len(wake) // 2]:.0f} ms, last {1000 * wake[-1]:.0f} ms"
    )


if __name__ == "__main__":
    main()
