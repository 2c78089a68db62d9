"""B4 worker efficiency and scale-out: upstream jobs/s with 1, 2 (and 4) upstream worker
processes of 100 threads each, against Little's bound (processes x 100 / 1 s latency).

The simulator answers after 1 s with its limits lifted, and our budget is set far above
anything reached, so only the workers bound the rate. A backlog of prepared jobs is made
first, with every upstream worker told (Celery remote control) not to consume; then the
workers are switched on one phase at a time (1, then 2, then 4 consuming), and each phase's
rate is the simulator's answered calls over a steady window after a ramp of 2.5-3 s
(the first wave's turns are staggered by the pacer's per-process gate, so a window that
starts one latency after switching on still sees the ramp: 78 % instead of 95 %).
Per phase, CPU ms per job for each kind of process comes from /proc/<pid>/stat (utime +
stime) deltas over the window, with each worker's RSS at its end.

Everything shares the machine's 2 cores: at 4 processes the figures say where they ran out.
"""

from __future__ import annotations

import base64
import io
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import matplotlib
import redis
import requests
from celery import Celery
from PIL import Image

from bench.report import Check
from bench.stack import BenchStack, running
from bench.wrk import WRK
from visionq.broker import PREPARE_QUEUE, UPSTREAM_QUEUE
from visionq.state.pacing import waiting_jobs

LATENCY = 1.0
CONCURRENCY = 100
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
_WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"prompt": "describe", "images": ["%s"]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer key-big"
local answered = 0
response = function(status, headers, body)
  answered = answered + 1
  if answered >= %d then wrk.thread:stop() end
end
"""


def _tiny_png() -> str:
    """A small image: B4 measures the upstream stage, not image handling."""
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 120, 200)).save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def _make_backlog(api: str, client: redis.Redis, jobs: int) -> tuple[str, int]:
    """Submit `jobs` jobs (wrk may add a few in flight as it stops) and wait until they are
    prepared; returns the load generator used and how many jobs wait for the upstream."""
    threads = 2
    if not os.access(WRK, os.X_OK):
        with requests.Session() as http:
            http.headers["Authorization"] = "Bearer key-big"
            body = {"prompt": "describe", "images": [_tiny_png()]}
            for _ in range(jobs):
                http.post(f"{api}/v1/jobs", json=body, timeout=60).raise_for_status()
        return "python requests, one connection", _wait_prepared(client, jobs, timeout=120)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_WRK_SCRIPT % (_tiny_png(), -(-jobs // threads)))
    # Each wrk thread stops after its share; wrk itself runs out its duration, so it is
    # stopped once the jobs are all prepared.
    wrk = subprocess.Popen(
        [WRK, "-t", str(threads), "-c", "8", "-d", "300s", "-s", script.name, f"{api}/v1/jobs"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        return "wrk", _wait_prepared(client, jobs, timeout=120)
    finally:
        wrk.terminate()
        wrk.wait(10)
        os.unlink(script.name)


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def _rss_mib(pid: int) -> float:
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except OSError:
        return 0.0
    return round(pages * PAGE / 2**20, 1)


def _redis_pid(redis_url: str) -> int:
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if b"redis-server" in cmdline and f":{port}".encode() in cmdline:
                return int(entry)
    raise RuntimeError(f"no redis-server on port {port}")


def _processes(stack: BenchStack) -> dict[str, list[int]]:
    """Kind of process -> its pids (a pool's children with their parent)."""
    kinds: dict[str, list[int]] = {"redis": [_redis_pid(stack.redis_url)]}
    for child in stack.children:
        args = [str(a) for a in child.args]
        if "worker" in args:
            kind = f"{args[args.index('--queues') + 1]}_worker"
        else:
            kind = next(k for k in ("simulator", "sweeper", "api") if k in args)
        kinds.setdefault(kind, []).extend([child.pid, *_children(child.pid)])
    return kinds


def _upstream_nodes(app: Celery, stack: BenchStack) -> list[str]:
    """The upstream workers' Celery node names, in the order they were started."""
    pids = [
        c.pid
        for c in stack.children
        if "worker" in c.args and UPSTREAM_QUEUE in [str(a) for a in c.args]
    ]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        names = [name for reply in app.control.ping(timeout=1.0) for name in reply]
        nodes = [next((n for n in names if n.endswith(f"-{pid}")), None) for pid in pids]
        if all(nodes) and any(n.startswith(f"celery@{PREPARE_QUEUE}") for n in names):
            return [n for n in nodes if n]
    raise RuntimeError("the upstream workers did not answer a ping within 60 s")


def _wait_prepared(client: redis.Redis, jobs: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    ready = 0
    while time.monotonic() < deadline:
        ready = sum(waiting_jobs(client).values())
        if ready >= jobs and client.llen(PREPARE_QUEUE) == 0:
            return ready
        time.sleep(0.2)
    return ready


def _sample(stack: BenchStack, kinds: dict[str, list[int]]) -> dict[str, Any]:
    return {
        "at": time.monotonic(),
        "answered": stack.simulator_stats()["by_status"].get("200", 0),
        "cpu": {kind: sum(_cpu_seconds(p) for p in pids) for kind, pids in kinds.items()},
    }


def _phase(
    stack: BenchStack, kinds: dict[str, list[int]], nodes: list[str], ramp: float, window: float
) -> dict[str, Any]:
    time.sleep(ramp)
    start = _sample(stack, kinds)
    time.sleep(window)
    end = _sample(stack, kinds)
    seconds = end["at"] - start["at"]
    answered = end["answered"] - start["answered"]
    jobs_per_s = answered / seconds
    bound = len(nodes) * CONCURRENCY / LATENCY
    cpu = {k: end["cpu"][k] - start["cpu"][k] for k in kinds}
    return {
        "processes": len(nodes),
        "window_s": round(seconds, 2),
        "answered": answered,
        "jobs_per_s": round(jobs_per_s, 1),
        "littles_bound": bound,
        "efficiency": round(jobs_per_s / bound, 4),
        "cpu_ms_per_job": {k: round(v * 1000 / max(1, answered), 3) for k, v in cpu.items()},
        "cores_busy": {k: round(v / seconds, 3) for k, v in cpu.items()},
        "cores_busy_total": round(sum(cpu.values()) / seconds, 3),
        # What running at the bound would take at this phase's CPU cost per job.
        "cores_needed_at_bound": round(sum(cpu.values()) / max(1, answered) * bound, 2),
        "load_average_1m": round(os.getloadavg()[0], 2),  # the other engineers' load too
        "upstream_worker_rss_mib": [_rss_mib(int(n.rsplit("-", 1)[1])) for n in nodes],
    }


def _chart(phases: list[dict[str, Any]], out: Path) -> str:
    matplotlib.use("Agg")  # no display here
    import matplotlib.pyplot as plt

    name = "scaleout.png"
    procs = [p["processes"] for p in phases]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(procs, [p["littles_bound"] for p in phases], "k--", marker="o", label="Little's bound")
    ax.plot(procs, [p["jobs_per_s"] for p in phases], marker="s", label="measured")
    ax.set_xlabel(f"upstream worker processes ({CONCURRENCY} threads each)")
    ax.set_ylabel("upstream jobs/s (1 s latency)")
    ax.set_xticks(procs)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / name, dpi=100)
    plt.close(fig)
    return name


def run(quick: bool, out: Path) -> dict[str, Any]:
    steps = (1, 2) if quick else (1, 2, 4)
    ramp, window = (2.5, 3.0) if quick else (3.0, 10.0)
    need = sum(int(n * CONCURRENCY / LATENCY * (ramp + window)) for n in steps)
    jobs = int(need * 1.05)  # need is at the bound, an upper limit on what is served
    env = {
        "VISIONQ_UPSTREAM_RPM": "100000000",
        "VISIONQ_UPSTREAM_TPM": "1000000000",
        "VISIONQ_UPSTREAM_CONCURRENCY": "100000",
        "VISIONQ_RATE_LIMIT": "none",
        "VISIONQ_LOG_LEVEL": "warning",
    }
    with running(
        workers={"prepare": 1, "upstream": steps[-1]},
        concurrency={"upstream": CONCURRENCY},
        simulator_args=(
            "--latency",
            str(LATENCY),
            "--rpm",
            "0",
            "--tpm",
            "0",
            "--concurrency",
            "0",
        ),
        env=env,
        api_args=("--workers", "2"),
    ) as stack:
        app = Celery("bench-scaleout", broker=stack.redis_url)
        client = redis.Redis.from_url(stack.redis_url)
        try:
            nodes = _upstream_nodes(app, stack)
            app.control.cancel_consumer(UPSTREAM_QUEUE, destination=nodes, reply=True)
            started = time.monotonic()
            generator, prepared = _make_backlog(stack.api_url, client, jobs)
            backlog_seconds = time.monotonic() - started
            kinds = _processes(stack)
            phases = []
            for n in steps:
                active = phases[-1]["processes"] if phases else 0
                app.control.add_consumer(UPSTREAM_QUEUE, destination=nodes[active:n], reply=True)
                phases.append(_phase(stack, kinds, nodes[:n], ramp, window))
            left = sum(waiting_jobs(client).values())
        finally:
            client.close()
            app.close()
    return {
        "latency_s": LATENCY,
        "concurrency_per_process": CONCURRENCY,
        "backlog_jobs": prepared,
        "backlog_left_at_end": left,
        "backlog_seconds": round(backlog_seconds, 1),
        "load_generator": generator,
        "ramp_s": ramp,
        "phases": phases,
        "chart": _chart(phases, out),
        "cores": os.cpu_count(),
        "note": (
            "API, prepare worker, upstream workers, Redis, simulator and this client share "
            "the cores; cores_busy per kind shows which ran out"
        ),
    }


def checks(r: dict[str, Any]) -> list[Check]:
    return [
        Check(
            f"B4 jobs/s, {p['processes']} upstream process(es)",
            p["jobs_per_s"],
            p["littles_bound"],
            "Little's bound",
            "ratio >= 0.9" if p["processes"] <= 2 else "report",
            p["efficiency"] >= 0.9 or p["processes"] > 2,
        )
        for p in r["phases"]
    ]
