"""Soak: many small jobs with webhooks, at a steady rate, for a long time, with a worker
restarted every few minutes; then the result TTL passes. Not in `python -m bench` by
default (`python -m bench soak`); `--quick` (2,000 jobs, about two minutes) runs in CI.

The full run is 100,000 jobs at 80 a second (what the 2 cores here sustain with room for
the restarts; about 21 minutes) with a result TTL of 3 minutes, each a small PNG (50
distinct ones) as a data URL, with a webhook to a receiver in this process. A restart is
a rolling one (the replacement starts, then the old worker gets SIGTERM): stopping first
would leave a queue without a consumer for the soft-shutdown timeout (30 s), longer than
the quick run's TTL, and a job still queued when its TTL passes expires unrun. Every 10 s
it samples the API's and the workers' RSS (each with its children), Redis's memory and
key count, the files in the image store and the open file descriptors of the stack.
Figures:
- every accepted job terminal, its result written once (`vq:done` counted), its webhook
  under one `webhook-id`;
- growth over the steady state (from the first TTL on, when as many jobs expire as arrive)
  of API RSS, worker RSS and Redis memory per stored job: the median of its last fifth of
  samples against that of its first fifth, target <= 5 %;
- Redis keys and stored files once the TTL has passed, against the idle stack's before the
  load, after a warm-up of 20 jobs and their TTL (target: back to it; any key left over is
  named in the JSON). The usage counters, kept for 400 days by design, are left out of
  the comparison: a run that crosses an hour adds that hour's hash.
The samples are written to `soak.json` and drawn in `soak.png`.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import io
import itertools
import json
import os
import shutil
import statistics
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import redis
import requests
from PIL import Image

from bench.intake import _tree_rss, process_tree
from bench.report import Check
from bench.stack import BenchStack, running
from visionq.state.keys import DONE_CHANNEL, EXPIRY
from visionq.state.keys import job as job_key

KEY = "key-big"
SECRET = "whsec_" + base64.b64encode(b"soak-benchmark-secret-32-bytes!!").decode()
IMAGES = 50


def _data_url(n: int) -> str:
    out = io.BytesIO()
    Image.new("RGB", (48, 48), (n * 5 % 256, 80, 160)).save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


class _Receiver:
    """Webhooks on loopback: the `webhook-id`s seen per job."""

    def __init__(self) -> None:
        self.ids: dict[str, set[str]] = defaultdict(set)
        self.deliveries = 0
        lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                job = json.loads(body)["data"]["id"]
                with lock:
                    receiver.ids[job].add(self.headers["webhook-id"])
                    receiver.deliveries += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Writes:
    """Result writes per job, as `vq:done` publishes them (one per finishing transition)."""

    def __init__(self, redis_url: str) -> None:
        self.count: Counter[str] = Counter()
        self._stop = threading.Event()
        pubsub = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(DONE_CHANNEL)

        def listen() -> None:
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=0.2)
                if message is not None:
                    self.count[message["data"].decode()] += 1

        threading.Thread(target=listen, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()


def _fds(pid: int) -> int:
    total = 0
    for current in process_tree(pid):
        with contextlib.suppress(OSError):
            total += len(os.listdir(f"/proc/{current}/fd"))
    return total


def _role(child: Any) -> str:
    args = [str(a) for a in child.args]
    return args[3] if args[3] != "worker" else f"worker-{args[5]}"


#: Key families kept longer than the result TTL on purpose (`visionq.state.usage`).
KEPT = frozenset({"usage", "usage-tenants", "quota"})


def _family(key: bytes) -> str:
    """`job` for `vq:job:<id>`; the broker's keys (kombu's, no `vq:`) count as one."""
    parts = key.split(b":", 2)
    return parts[1].decode() if parts[0] == b"vq" and len(parts) > 1 else "broker"


def _sample(stack: BenchStack, store: redis.Redis, started: float) -> dict[str, Any]:
    rss: Counter[str] = Counter()
    fds = 0
    for child in list(stack.children):
        role = _role(child)
        rss["api" if role == "api" else "workers" if role.startswith("worker") else "other"] += (
            _tree_rss(child.pid)
        )
        fds += _fds(child.pid)
    memory = store.info("memory")["used_memory"]
    images = stack.logs / "images"
    files = sum(
        1 for p in images.rglob("*") if p.is_file() and "tmp" not in p.relative_to(images).parts
    )
    families = Counter(_family(k) for k in store.scan_iter(count=1000))
    return {
        "t": round(time.monotonic() - started, 1),
        "api_rss_mib": rss["api"] / 2**20,
        "workers_rss_mib": rss["workers"] / 2**20,
        "redis_mib": memory / 2**20,
        # Without the usage counters (`KEPT`).
        "redis_keys": sum(n for family, n in families.items() if family not in KEPT),
        "jobs_stored": families["job"],
        # Expired jobs whose files the sweeper has not yet seen to: a backlog that grows
        # is the expiry path falling behind.
        "expired_waiting": store.zcount(EXPIRY, "-inf", time.time()),
        "families": dict(families),
        "files": files,
        "fds": fds,
    }


def _growth(samples: list[dict[str, Any]], key: str) -> float:
    """The last fifth's median against the first fifth's, in percent (of the samples
    given: those of the steady state)."""
    n = len(samples)
    first = [s[key] for s in samples[: max(1, n // 5)]]
    last = [s[key] for s in samples[4 * n // 5 :]] or [samples[-1][key]]
    base = statistics.median(first)
    return round(100 * (statistics.median(last) - base) / base, 1) if base else 0.0


def run(quick: bool, out: Path) -> dict[str, Any]:
    jobs, rate, restart_every, ttl, every = (
        (2000, 40, 20, 20, 2) if quick else (100_000, 80, 180, 180, 10)
    )
    receiver = _Receiver()
    env = {
        "VISIONQ_UPSTREAM_RPM": "1000000",
        "VISIONQ_UPSTREAM_CONCURRENCY": "64",
        "VISIONQ_RESULT_TTL": str(ttl),
        "VISIONQ_WEBHOOK_SECRET": SECRET,
        "VISIONQ_ALLOW_PRIVATE_URLS": "true",
        "VISIONQ_RATE_LIMIT": "none",
    }
    try:
        with running(
            workers={"prepare": 1, "upstream": 1, "webhooks": 1},
            simulator_args=("--rpm", "0", "--latency", "0.05"),
            env=env,
        ) as stack:
            return _soak(stack, receiver, out, jobs, rate, restart_every, ttl, every)
    finally:
        receiver.stop()


def _warm_up(stack: BenchStack, receiver: _Receiver, store: redis.Redis, ttl: int) -> set[bytes]:
    """A few jobs through every queue, then their TTL: what an idle stack that has worked
    keeps in Redis (kombu's bindings, the pacer's counters), the baseline to come back to;
    its keys."""
    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {KEY}"
        for n in range(20):
            body = {
                "prompt": f"warm {n}",
                "images": [_data_url(n)],
                "webhook": {"url": receiver.url},
            }
            http.post(f"{stack.api_url}/v1/jobs", json=body, timeout=30).raise_for_status()
    deadline = time.monotonic() + 60
    while len(receiver.ids) < 20 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(ttl + 15)
    receiver.ids.clear()
    receiver.deliveries = 0
    return set(store.scan_iter(count=1000))


def _soak(
    stack: BenchStack,
    receiver: _Receiver,
    out: Path,
    jobs: int,
    rate: int,
    restart_every: int,
    ttl: int,
    every: int,
) -> dict[str, Any]:
    store = redis.Redis.from_url(stack.redis_url)
    baseline_keys = _warm_up(stack, receiver, store, ttl)
    started = time.monotonic()
    baseline = _sample(stack, store, started)
    writes = _Writes(stack.redis_url)
    samples: list[dict[str, Any]] = []
    stop = threading.Event()

    def sampler() -> None:
        while not stop.wait(every):
            samples.append(_sample(stack, store, started))

    restarts = 0

    def restarter() -> None:
        nonlocal restarts
        for queue in itertools.cycle(("prepare", "upstream", "webhooks")):
            if stop.wait(restart_every):
                return
            child = next(c for c in stack.children if _role(c) == f"worker-{queue}")
            stack.restart(child, f"worker-{queue}-restart-{restarts}")
            restarts += 1

    threads = [threading.Thread(target=f, daemon=True) for f in (sampler, restarter)]
    for thread in threads:
        thread.start()
    images = [_data_url(n) for n in range(IMAGES)]
    local = threading.local()
    accepted: list[str] = []
    refused: Counter[int] = Counter()

    def submit(n: int) -> None:
        time.sleep(max(0.0, started + n / rate - time.monotonic()))
        if not hasattr(local, "http"):
            local.http = requests.Session()
            local.http.headers["Authorization"] = f"Bearer {KEY}"
        body = {
            "prompt": f"soak {n}",
            "images": [images[n % IMAGES]],
            "webhook": {"url": receiver.url},
        }
        answer = local.http.post(f"{stack.api_url}/v1/jobs", json=body, timeout=30)
        if answer.status_code == 202:
            accepted.append(answer.json()["id"])
        else:
            refused[answer.status_code] += 1

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(submit, range(jobs)))
    load_seconds = time.monotonic() - started
    deadline = time.monotonic() + 300 + jobs / 50
    while len(receiver.ids) < len(accepted) and time.monotonic() < deadline:
        time.sleep(0.5)
    done_seconds = time.monotonic() - started
    stop.set()
    for thread in threads:
        thread.join(120)
    load_samples = list(samples)
    unfinished = [j for j in accepted if j not in receiver.ids]
    stuck = _stuck(stack, store, unfinished, out)
    # The steady state: once the first jobs' TTL has passed, as many expire as arrive.
    steady = [s for s in load_samples if s["t"] - baseline["t"] >= min(ttl, load_seconds / 5)]
    # Then the TTL: every job and its files go (the sweeper's expiry path), and so must
    # everything they kept in Redis and in the store.
    stop_after = time.monotonic() + ttl + 15
    after: list[dict[str, Any]] = []
    while time.monotonic() < stop_after:
        time.sleep(every)
        after.append(_sample(stack, store, started))
    writes.stop()
    final = after[-1] if after else _sample(stack, store, started)
    now_keys = set(store.scan_iter(count=1000))
    # The usage counters are kept for VISIONQ_USAGE_RETENTION (400 days), not the TTL: an
    # hour's hash is new when the run crosses an hour, by design.
    left = sorted(k.decode() for k in now_keys - baseline_keys if _family(k) not in KEPT)
    gone = sorted(k.decode() for k in baseline_keys - now_keys if _family(k) not in KEPT)
    per_job = [
        {
            **s,
            "redis_bytes_per_job": (s["redis_mib"] - baseline["redis_mib"])
            * 2**20
            / s["jobs_stored"],
        }
        for s in steady
        if s["jobs_stored"]
    ]
    figures: dict[str, Any] = {
        "jobs": jobs,
        "rate": rate,
        "accepted": len(accepted),
        "refused": dict(refused),
        "terminal": len(accepted) - len(unfinished),
        "results_twice": sum(1 for j in accepted if writes.count[j] > 1),
        "results_missing": sum(1 for j in accepted if writes.count[j] == 0),
        "jobs_not_one_webhook_id": sum(1 for j in accepted if len(receiver.ids.get(j, ())) != 1),
        "webhook_deliveries": receiver.deliveries,
        "worker_restarts": restarts,
        "load_seconds": round(load_seconds, 1),
        "done_seconds": round(done_seconds, 1),
        "unfinished_sample": stuck,
        "keys_left_after_ttl": left[:50],
        "keys_gone_after_ttl": gone[:50],
        "fds_growth_pct": _growth(steady, "fds"),
        "api_rss_growth_pct": _growth(steady, "api_rss_mib"),
        "workers_rss_growth_pct": _growth(steady, "workers_rss_mib"),
        "redis_per_job_growth_pct": _growth(per_job, "redis_bytes_per_job") if per_job else 0.0,
        "baseline": baseline,
        "final": final,
        "samples": load_samples + after,
    }
    _chart(figures["samples"], baseline, load_seconds, out / "soak.png")
    return figures


def _stuck(
    stack: BenchStack, store: redis.Redis, unfinished: list[str], out: Path
) -> list[dict[str, str]]:
    """When jobs did not finish: the records of the first few (before their TTL takes
    them), and the stack's logs copied to `out/soak-logs`, which outlive the stack."""
    if not unfinished:
        return []
    logs = out / "soak-logs"
    shutil.rmtree(logs, ignore_errors=True)
    shutil.copytree(stack.logs, logs, ignore=shutil.ignore_patterns("images", "redis"))
    sample = []
    for job_id in unfinished[:10]:
        record = cast(dict[bytes, bytes], store.hgetall(job_key(job_id)))
        fields = {k.decode(): v.decode(errors="replace")[:200] for k, v in record.items()}
        sample.append({"id": job_id, **{k: v for k, v in fields.items() if k != "request"}})
    return sample


def _chart(
    samples: list[dict[str, Any]], baseline: dict[str, Any], load: float, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] / 60 for s in samples]
    panels = [
        ("RSS, MiB", ["api_rss_mib", "workers_rss_mib"]),
        ("Redis memory, MiB", ["redis_mib"]),
        ("Redis keys / stored jobs", ["redis_keys", "jobs_stored"]),
        ("files in the store; open fds", ["files", "fds"]),
    ]
    figure, axes = plt.subplots(len(panels), 1, figsize=(9, 10), sharex=True)
    for axis, (title, keys) in zip(axes, panels, strict=True):
        for key in keys:
            axis.plot(t, [s[key] for s in samples], label=key)
            axis.axhline(baseline[key], linestyle=":", linewidth=0.8)
        axis.axvline(load / 60, color="grey", linewidth=0.8)
        axis.set_title(title, fontsize=9)
        axis.legend(fontsize=7, loc="upper left")
    axes[-1].set_xlabel("minutes (grey: end of submissions; dotted: idle stack before)")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def checks(r: dict[str, Any]) -> list[Check]:
    base, final = r["baseline"], r["final"]
    return [
        Check(
            "soak jobs terminal",
            r["terminal"],
            r["accepted"],
            "jobs accepted",
            "ratio 1",
            r["terminal"] == r["accepted"],
        ),
        Check(
            "soak results written twice", r["results_twice"], None, "", "0", r["results_twice"] == 0
        ),
        Check(
            "soak jobs without exactly one webhook-id",
            r["jobs_not_one_webhook_id"],
            None,
            "",
            "0",
            r["jobs_not_one_webhook_id"] == 0,
        ),
        Check(
            "soak API RSS growth, %",
            r["api_rss_growth_pct"],
            None,
            "",
            "<= 5",
            r["api_rss_growth_pct"] <= 5,
        ),
        Check(
            "soak worker RSS growth, %",
            r["workers_rss_growth_pct"],
            None,
            "",
            "<= 5",
            r["workers_rss_growth_pct"] <= 5,
        ),
        Check(
            "soak Redis bytes per stored job, growth %",
            r["redis_per_job_growth_pct"],
            None,
            "",
            "<= 5",
            r["redis_per_job_growth_pct"] <= 5,
        ),
        Check(
            "soak Redis keys after the TTL",
            final["redis_keys"],
            base["redis_keys"],
            "idle stack before",
            "back to it",
            final["redis_keys"] <= base["redis_keys"],
        ),
        Check(
            "soak Redis memory after the TTL, MiB",
            round(final["redis_mib"], 2),
            round(base["redis_mib"], 2),
            "idle stack before",
            "<= baseline + 1",
            final["redis_mib"] <= base["redis_mib"] + 1,
        ),
        Check(
            "soak stored files after the TTL",
            final["files"],
            base["files"],
            "idle stack before",
            "back to it",
            final["files"] <= base["files"],
        ),
    ]
