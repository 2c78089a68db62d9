"""B11 one worker command: what a new user gets from `visionq worker --concurrency 50` (all
queues, one command) beside a running API, sweeper and simulator.

- cold start: from starting the command to its `/readyz` (metrics port) answering 200,
  and to the first finished job, submitted as the command starts;
- 200 jobs at 1 s upstream latency, submitted at once: jobs/s from the first submit to the
  last answer, against the 50/s that fifty calls in flight allow.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from bench.headtohead import UNLIMITED
from bench.pacing import _png_data_url, _submit, _wait
from bench.report import Check
from bench.stack import running
from visionq.dev.ports import free_port

CONCURRENCY = 50
LATENCY = 1.0


def run(quick: bool, out: Path) -> dict[str, Any]:
    jobs = 100 if quick else 200
    port = free_port()
    env = {**UNLIMITED, "VISIONQ_METRICS_PORT": str(port)}
    images = [_png_data_url(n) for n in range(50)]
    with running(workers={}, simulator_args=("--rpm", "0"), env=env) as stack:
        api = stack.api_url
        assert stack.spawn is not None
        started = time.monotonic()
        worker = stack.spawn("worker", "worker", "--concurrency", str(CONCURRENCY))
        first, _ = _submit(api, "key-big", "first", images[0])
        ready = None
        while ready is None:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
                if answer.status_code == 200:
                    ready = time.monotonic() - started
            except requests.ConnectionError:
                pass
            assert worker.poll() is None, "the worker ended; see its log"
            time.sleep(0.02)
        assert _wait(api, "key-big", first)["status"] == "succeeded"
        first_done = time.monotonic() - started
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            t0 = time.monotonic()
            prompt = f"[sim:latency={LATENCY:g}]"
            ids = list(
                pool.map(
                    lambda n: _submit(api, "key-big", f"{n} {prompt}", images[n % 50]), range(jobs)
                )
            )
            done = list(pool.map(lambda j: _wait(api, "key-big", j[0]), ids))
            elapsed = time.monotonic() - t0
    succeeded = sum(job["status"] == "succeeded" for job in done)
    assert succeeded == jobs, f"{jobs - succeeded} of {jobs} jobs did not succeed"
    rate = jobs / elapsed
    ideal = CONCURRENCY / LATENCY
    return {
        "concurrency": CONCURRENCY,
        "upstream_latency_s": LATENCY,
        "jobs": jobs,
        "ready_s": round(ready, 2),
        "first_job_s": round(first_done, 2),
        "jobs_per_s": round(rate, 1),
        "ideal_jobs_per_s": ideal,
        "of_ideal": round(rate / ideal, 3),
    }


def checks(r: dict[str, Any]) -> list[Check]:
    return [
        Check(
            f"B11 cold start to the first finished job, s (ready at {r['ready_s']} s)",
            r["first_job_s"],
            None,
            "",
            "<= 10",
            r["first_job_s"] <= 10,
        ),
        Check(
            f"B11 {r['jobs']} jobs at 1 s latency, --concurrency {r['concurrency']}, jobs/s",
            r["jobs_per_s"],
            r["ideal_jobs_per_s"],
            "concurrency / latency",
            ">= 0.8",
            r["of_ideal"] >= 0.8,
        ),
    ]
