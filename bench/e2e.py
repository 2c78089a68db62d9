"""B3 end-to-end overhead: submit to `succeeded` for one ~100 KB image, minus the upstream's
latency, against a Celery no-op task's round trip on the same Redis.

Jobs run one at a time (submit, then `?wait=` until it succeeds), so the figure is
latency, not queueing. The simulator answers with no added latency (`--latency 0`), so
the whole submit-to-`succeeded` time is our overhead plus the simulator's own handling
of the image, which is broken out as the "upstream call" stage.

The baseline runs in the same stack, interleaved with the jobs batch by batch (the
machine is shared and noisy): a Celery worker of the upstream worker's pool kind
(threads) with a no-op task, timed as `delay().get()`.

Where the time goes comes from timestamps on one clock (every process is on this host):
the client's, the job's own (`created_at`, `started_at`, `completed_at`, to the ms) and
the workers' JSON log lines ("prepared ...", "upstream answered ... in X s").
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
import requests
from celery import Celery

from bench.e2e_latency import hundred_kb_png
from bench.report import Check
from bench.stack import BenchStack, running
from visionq.broker import POOLS, UPSTREAM_QUEUE, default_concurrency
from visionq.state import keys

NOOP_TASK = "bench.noop"
NOOP_POOL = (
    "--pool",
    POOLS[UPSTREAM_QUEUE],
    "--concurrency",
    str(default_concurrency()[UPSTREAM_QUEUE]),
)
BATCH = 10
STAGES = (
    "intake",
    "queue_to_prepare",
    "prepare",
    "queue_to_upstream",
    "upstream_call",
    "finish",
    "long_poll_wake",
)
UNLIMITED_BUDGET = {
    "VISIONQ_UPSTREAM_RPM": "1000000",
    "VISIONQ_UPSTREAM_TPM": "1000000000",
    "VISIONQ_RATE_LIMIT": "none",
}


def noop_celery(redis_url: str) -> Celery:
    """The baseline's app: the same Redis as broker and result backend, one no-op task."""
    app = Celery("bench-noop", broker=redis_url, backend=redis_url)
    app.conf.update(
        task_serializer="json", accept_content=["json"], broker_connection_retry_on_startup=True
    )
    app.task(name=NOOP_TASK)(_noop)
    return app


def _noop() -> None:
    return None


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _summary(values: list[float]) -> dict[str, float]:
    """Median and p99 in ms, from seconds."""
    return {
        "n": len(values),
        "p50_ms": round(statistics.median(values) * 1000, 2),
        "p99_ms": round(_percentile(values, 0.99) * 1000, 2),
        "mean_ms": round(statistics.fmean(values) * 1000, 2),
    }


def _one_job(
    http: requests.Session, api: str, image: bytes, prompt: str = "describe"
) -> dict[str, Any]:
    submitted = time.time()
    response = http.post(
        f"{api}/v1/jobs", files=[("image", ("x.png", image))], data={"prompt": prompt}
    )
    response.raise_for_status()
    job = response.json()
    posted = time.time()
    while job["status"] not in ("succeeded", "failed", "canceled"):
        job = http.get(f"{api}/v1/jobs/{job['id']}", params={"wait": 30}).json()
    done = time.time()
    if job["status"] != "succeeded":
        raise RuntimeError(f"a benchmark job did not succeed: {job}")
    return {"id": job["id"], "submitted": submitted, "posted": posted, "done": done, "job": job}


def _log_times(logs: Path) -> dict[str, dict[str, float]]:
    """Per job: when prepare ended, and when the upstream call started and ended."""
    out: dict[str, dict[str, float]] = {}
    for path in logs.glob("worker-*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            entry = json.loads(line)
            job_id, message = entry.get("job_id"), entry.get("message", "")
            if not job_id:
                continue
            at = datetime.fromisoformat(entry["time"]).timestamp()
            if message.startswith("prepared "):
                out.setdefault(job_id, {})["prepared"] = at
            elif message.startswith("upstream answered 200"):
                times = out.setdefault(job_id, {})
                times["call_end"] = at
                times["call_start"] = at - float(entry["duration"])
    return out


def _stages(sample: dict[str, Any], logged: dict[str, float]) -> dict[str, float]:
    job = sample["job"]
    bounds = [
        sample["submitted"],
        job["created_at"],
        job["started_at"],
        logged["prepared"],
        logged["call_start"],
        logged["call_end"],
        job["completed_at"],
        sample["done"],
    ]
    return {name: bounds[i + 1] - bounds[i] for i, name in enumerate(STAGES)}


def _noop_worker(stack: BenchStack) -> subprocess.Popen[bytes]:
    log = (stack.logs / "noop-worker.log").open("wb")
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.e2e", stack.redis_url],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return child


def _monitored(stack: BenchStack, api: str, image: bytes, n: int) -> dict[str, Any]:
    """Redis commands per job, from MONITOR, while `n` jobs run one at a time: the
    clients' own round trips, and the commands their scripts ran inside Redis. The idle
    workers' and sweeper's polling is included (a few commands a second)."""
    seen: list[tuple[str, str]] = []
    client = redis.Redis.from_url(stack.redis_url)
    ready, stop = threading.Event(), threading.Event()

    def listen() -> None:
        with client.monitor() as monitor:
            ready.set()
            while not stop.is_set():
                line = monitor.next_command()
                who = f"{line['client_address']}:{line['client_port']}"
                seen.append((who, line["command"].split(" ", 1)[0].upper()))

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    ready.wait(5)
    started = time.monotonic()
    with requests.Session() as http:
        http.headers["Authorization"] = "Bearer key-big"
        for _ in range(n):
            _one_job(http, api, image)
    seconds = time.monotonic() - started
    stop.set()
    redis.Redis.from_url(stack.redis_url).ping()  # one more line, so the monitor sees `stop`
    thread.join(5)
    trips, scripted, in_multi = Counter[str](), Counter[str](), set[str]()
    for client, name in seen:
        if client == "lua:":
            scripted[name] += 1
        elif name == "EXEC":
            in_multi.discard(client)
        elif client not in in_multi:  # a MULTI ... EXEC block is one round trip
            trips[name] += 1
            if name == "MULTI":
                in_multi.add(client)
    return {
        "jobs": n,
        "seconds": round(seconds, 2),
        "round_trips_per_job": round(sum(trips.values()) / n, 1),
        "script_commands_per_job": round(sum(scripted.values()) / n, 1),
        "round_trips_by_command": {k: round(v / n, 2) for k, v in trips.most_common()},
    }


def _noop_round_trips(app: Celery, n: int) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        app.send_task(NOOP_TASK).get(timeout=30)
        times.append(time.perf_counter() - started)
    return times


def run(quick: bool, out: Path) -> dict[str, Any]:
    n_jobs = 50 if quick else 500
    warmup = 5
    image = hundred_kb_png()
    with running(
        workers={"prepare": 1, "upstream": 1},
        simulator_args=("--latency", "0", "--rpm", "0", "--tpm", "0", "--concurrency", "0"),
        env=UNLIMITED_BUDGET,
    ) as stack:
        noop = _noop_worker(stack)
        app = noop_celery(stack.redis_url)
        try:
            app.send_task(NOOP_TASK).get(timeout=60)  # the worker is up
            samples, baseline = [], []
            with requests.Session() as http:
                http.headers["Authorization"] = "Bearer key-big"
                for _ in range(warmup):
                    _one_job(http, stack.api_url, image)
                _noop_round_trips(app, warmup)
                while len(samples) < n_jobs:
                    batch = min(BATCH, n_jobs - len(samples))
                    baseline += _noop_round_trips(app, batch)
                    samples += [_one_job(http, stack.api_url, image) for _ in range(batch)]
        finally:
            noop.terminate()
            noop.wait(30)
            app.close()
        redis_commands = _monitored(stack, stack.api_url, image, 10 if quick else 20)
        redis_bytes = _job_bytes(stack, image)
        logged = _log_times(stack.logs)
    simulator_latency = 0.0
    overheads = [s["done"] - s["submitted"] - simulator_latency for s in samples]
    stages = [_stages(s, logged[s["id"]]) for s in samples if s["id"] in logged]
    return {
        "chart": _chart(overheads, baseline, out),
        "mode": "one job at a time (latency, not queueing)",
        "image_bytes": len(image),
        "simulator_latency_s": simulator_latency,
        "jobs": len(samples),
        "overhead": _summary(overheads),
        "noop_round_trip": _summary(baseline),
        "noop_pool": " ".join(NOOP_POOL),
        "stages_decomposed_jobs": len(stages),
        "stages_p50_ms": {
            k: round(statistics.median(s[k] for s in stages) * 1000, 2) for k in STAGES
        },
        "stages_p99_ms": {
            k: round(_percentile([s[k] for s in stages], 0.99) * 1000, 2) for k in STAGES
        },
        "stages_note": (
            "timeline on one clock: client submit, job created_at, started_at (prepare took "
            "it), 'prepared' log line, upstream call start/end (log line minus duration), "
            "completed_at, client saw succeeded; job times are to the ms"
        ),
        "redis": redis_commands,
        "redis_bytes_per_job": redis_bytes,
    }


#: Prompt sizes whose jobs' Redis footprint is reported: a usual one, one just past what is
#: kept inline, and about the largest a job may carry (`VISIONQ_MAX_TEXT_CHARS`'s default,
#: less room for the image in mimo-v2.5's context).
PROMPT_CHARS = (100, 16 * 1024 + 1, 4 * 1024 * 1024 - 1024)


def _job_bytes(stack: BenchStack, image: bytes) -> dict[str, int]:
    """Redis bytes a finished job's hash keeps for the result TTL (`MEMORY USAGE`), by the
    size of its prompt: a large request is kept in the store, so this stays bounded."""
    client = redis.Redis.from_url(stack.redis_url)
    with requests.Session() as http:
        http.headers["Authorization"] = "Bearer key-big"
        jobs = {chars: _one_job(http, stack.api_url, image, "p" * chars) for chars in PROMPT_CHARS}
    sizes = {str(chars): int(client.memory_usage(keys.job(s["id"]))) for chars, s in jobs.items()}
    client.close()
    return sizes


def _chart(overheads: list[float], noop: list[float], out: Path) -> str:
    """The latency distributions (CDF) of the job overhead and of the Celery no-op."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, values in (("job overhead", overheads), ("Celery no-op round trip", noop)):
        ms = sorted(v * 1000 for v in values)
        ax.plot(ms, [(i + 1) / len(ms) for i in range(len(ms))], label=label)
    ax.axvline(20, color="grey", linestyle=":", label="p99 target, 20 ms")
    ax.set(xlabel="ms", ylabel="fraction of jobs", title="B3 end-to-end overhead", xscale="log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    name = "e2e.png"
    fig.savefig(out / name)
    plt.close(fig)
    return name


def checks(r: dict[str, Any]) -> list[Check]:
    noop = r["noop_round_trip"]["p50_ms"]
    return [
        Check(
            "B3 overhead p50, ms",
            r["overhead"]["p50_ms"],
            noop,
            "Celery no-op round trip p50",
            "ratio <= 2",
            r["overhead"]["p50_ms"] <= 2 * noop,
        ),
        Check(
            "B3 overhead p99, ms",
            r["overhead"]["p99_ms"],
            None,
            "",
            "<= 20 ms",
            r["overhead"]["p99_ms"] <= 20,
        ),
        *(
            Check(
                f"B3 Redis bytes of a finished job, {chars}-character prompt",
                size,
                int(chars),
                "the prompt's characters",
                "<= 32 KiB",
                size <= 32 * 1024,
            )
            for chars, size in r["redis_bytes_per_job"].items()
        ),
    ]


def _serve_noop(redis_url: str) -> None:
    noop_celery(redis_url).worker_main(
        ["--quiet", "worker", *NOOP_POOL, "--without-gossip", "--without-mingle"]
    )


if __name__ == "__main__":
    _serve_noop(sys.argv[1])
