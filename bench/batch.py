"""B8 batch: one large OpenAI-form batch on a stack with a budget that binds, all figures in
one run.

The input is 50,000 lines (2,000 with --quick), each a small image by URL from a local
HTTP server or by a `file-` id of an uploaded vision image, padded with prompt text to
about 4 KB a line so that the full file is 200 MB. Figures:
- validation: lines a second from `POST /v1/batches` to `in_progress` (target >= 5,000);
- API and prepare-worker RSS growth from before the upload to the end of validation
  (target <= 64 MiB);
- Redis memory per waiting line: used_memory once lines run, above the idle stack's,
  over the lines not yet finished (target <= 2 KiB);
- upstream RPM achieved against the budget, over a steady window (target >= 98 %);
- interactive jobs (one at a time, `Prefer: wait`) during the batch against the same on
  the idle stack before it: p50 ratio (target <= 1.2).
The batch is cancelled once measured: its remaining lines are not needed for any figure.
"""

from __future__ import annotations

import functools
import http.server
import io
import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import redis
import requests
from PIL import Image

from bench.intake import _tree_rss
from bench.report import Check
from bench.stack import running

KEY = "key-big"
HEADERS = {"Authorization": f"Bearer {KEY}"}
LINE_BYTES = 4096
LATENCY = 0.5


def _png(seed: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (seed % 256, 40, 90)).save(out, "PNG")
    return out.getvalue()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def _image_server(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _input(lines: int, urls: list[str], files: list[str]) -> bytes:
    out = io.BytesIO()
    for n in range(lines):
        image = urls[n % len(urls)] if n % 2 else files[n % len(files)]
        body = {
            "model": "mimo-v2.5",
            "max_tokens": 16,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": image}},
                        {"type": "text", "text": "describe"},
                    ],
                }
            ],
        }
        line = {
            "custom_id": f"line-{n}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": body,
        }
        raw = json.dumps(line)
        pad = max(0, LINE_BYTES - len(raw) - 1)
        body["messages"][0]["content"][1]["text"] = "describe " + "x" * max(0, pad - 9)
        out.write(json.dumps(line).encode() + b"\n")
    return out.getvalue()


def _interactive(api: str, image: str, n: int) -> list[float]:
    """Seconds each of `n` jobs took, submitted one after another and waited for."""
    took = []
    with requests.Session() as http:
        http.headers.update(HEADERS)
        for i in range(n):
            started = time.perf_counter()
            job = http.post(
                f"{api}/v1/jobs",
                json={"prompt": f"interactive {i}", "images": [image]},
                headers={"Prefer": "wait=60"},
                timeout=90,
            ).json()
            assert job["status"] == "succeeded", job
            took.append(time.perf_counter() - started)
    return took


def _batch(api: str, batch_id: str) -> dict[str, Any]:
    return dict(requests.get(f"{api}/v1/batches/{batch_id}", headers=HEADERS, timeout=30).json())


def _pid(stack: Any, command: str, queue: str | None = None) -> int:
    """The child running `visionq COMMAND` (for a worker, the one of `queue`)."""
    for child in stack.children:
        args = [str(a) for a in child.args]
        if args[3] == command and (queue is None or queue in args):
            return int(child.pid)
    raise LookupError(command)


def run(quick: bool, out: Path) -> dict[str, Any]:
    lines, rpm, window, probes = (2000, 1200, 20, 8) if quick else (50_000, 3000, 60, 20)
    root = out / "batch-images"
    root.mkdir(exist_ok=True)
    for n in range(8):
        (root / f"{n}.png").write_bytes(_png(n))
    server, base = _image_server(root)
    try:
        with running(
            workers={"prepare": 1, "upstream": 1, "webhooks": 1},
            simulator_args=("--rpm", "0", "--latency", str(LATENCY)),
            env={
                "VISIONQ_UPSTREAM_RPM": str(rpm),
                "VISIONQ_UPSTREAM_CONCURRENCY": "64",
                "VISIONQ_ALLOW_PRIVATE_URLS": "true",  # the images are served on loopback
            },
        ) as stack:
            return _measure(stack, base, lines=lines, rpm=rpm, window=window, probes=probes)
    finally:
        server.shutdown()


def _measure(
    stack: Any, base: str, *, lines: int, rpm: int, window: int, probes: int
) -> dict[str, Any]:
    api = stack.api_url
    urls = [f"{base}/{n}.png" for n in range(8)]
    with requests.Session() as http:
        http.headers.update(HEADERS)
        files = [
            http.post(
                f"{api}/v1/files",
                files={"file": (f"{n}.png", _png(100 + n), "image/png")},
                data={"purpose": "vision"},
                timeout=30,
            ).json()["id"]
            for n in range(4)
        ]
    probe_image = urls[0]
    idle = _interactive(api, probe_image, probes)
    store = redis.Redis.from_url(stack.redis_url)
    redis_idle = int(store.info("memory")["used_memory"])
    data = _input(lines, urls, files)
    api_pid, prepare_pid = _pid(stack, "api"), _pid(stack, "worker", "prepare")
    rss_before = _tree_rss(api_pid) + _tree_rss(prepare_pid)
    peak = [rss_before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak.append(_tree_rss(api_pid) + _tree_rss(prepare_pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    upload_started = time.perf_counter()
    with requests.Session() as http:
        http.headers.update(HEADERS)
        file_id = http.post(
            f"{api}/v1/files",
            files={"file": ("batch.jsonl", data, "application/jsonl")},
            data={"purpose": "batch"},
            timeout=600,
        ).json()["id"]
        upload_seconds = time.perf_counter() - upload_started
        created = time.perf_counter()
        batch = http.post(
            f"{api}/v1/batches",
            json={
                "input_file_id": file_id,
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
            timeout=60,
        ).json()
    while (batch := _batch(api, batch["id"]))["status"] == "validating":
        time.sleep(0.02)
    validation_seconds = time.perf_counter() - created
    stop.set()
    sampler.join()
    assert batch["status"] == "in_progress", batch
    # Steady state: the first window's lines are running; measure the budget over `window`.
    time.sleep(5)
    redis_running = int(store.info("memory")["used_memory"])
    running_batch = _batch(api, batch["id"])
    finished = (
        running_batch["request_counts"]["completed"] + running_batch["request_counts"]["failed"]
    )
    waiting = max(1, lines - finished)
    calls_before = stack.simulator_stats()["requests"]
    window_started = time.perf_counter()
    during = _interactive(api, probe_image, probes)
    time.sleep(max(0.0, window - (time.perf_counter() - window_started)))
    calls = stack.simulator_stats()["requests"] - calls_before
    achieved = calls / (time.perf_counter() - window_started) * 60
    requests.post(f"{api}/v1/batches/{batch['id']}/cancel", headers=HEADERS, timeout=60)
    while (ended := _batch(api, batch["id"]))["status"] not in ("cancelled", "completed"):
        time.sleep(0.2)
    return {
        "lines": lines,
        "input_bytes": len(data),
        "upload_seconds": round(upload_seconds, 2),
        "validation_seconds": round(validation_seconds, 2),
        "validation_lines_per_s": round(lines / validation_seconds),
        "rss_growth_mib": round((max(peak) - rss_before) / 2**20, 1),
        "redis_bytes_per_waiting_line": round((redis_running - redis_idle) / waiting, 1),
        "budget_rpm": rpm,
        "achieved_rpm": round(achieved, 1),
        "budget_used": round(achieved / rpm, 4),
        "interactive_idle_p50_s": round(statistics.median(idle), 3),
        "interactive_during_p50_s": round(statistics.median(during), 3),
        "interactive_ratio": round(statistics.median(during) / statistics.median(idle), 3),
        "ended": ended["status"],
        "ended_counts": ended["request_counts"],
    }


def checks(r: dict[str, Any]) -> list[Check]:
    return [
        Check(
            "B8 batch validation, lines/s",
            r["validation_lines_per_s"],
            None,
            "",
            ">= 5000",
            r["validation_lines_per_s"] >= 5000,
        ),
        Check(
            "B8 API + prepare RSS growth, MiB",
            r["rss_growth_mib"],
            64,
            "64 MiB",
            "<= 64",
            r["rss_growth_mib"] <= 64,
        ),
        Check(
            "B8 Redis bytes per waiting line",
            r["redis_bytes_per_waiting_line"],
            2048,
            "2 KiB",
            "<= 2048",
            r["redis_bytes_per_waiting_line"] <= 2048,
        ),
        Check(
            "B8 upstream RPM during the batch",
            r["achieved_rpm"],
            r["budget_rpm"],
            "the budget",
            "ratio >= 0.98",
            r["budget_used"] >= 0.98,
        ),
        Check(
            "B8 interactive p50 during the batch, s",
            r["interactive_during_p50_s"],
            r["interactive_idle_p50_s"],
            "the same on the idle stack",
            "ratio <= 1.2",
            r["interactive_ratio"] <= 1.2,
        ),
    ]
