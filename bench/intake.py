"""B1 and B2: the intake's rate, against the least a Flask app can do served the same way.

B1 (JSON): `POST /v1/jobs` with one `http://` image URL (on a local server; the intake only
checks it), at 10 and 50 connections, against a bare "hello" route. No prepare worker
runs: every accepted job's message stays in the `prepare` list, which is counted to show
each was enqueued for real. B2 (upload): 1 MB multipart uploads, against a naive Flask
handler doing `file.save()` plus `LPUSH`, the two alternated in rounds; then the API's RSS
(gunicorn master and workers, sampled every 50 ms) while ten ~50 MB uploads run at once.
The load generator is wrk; the API, the baselines, Redis and wrk share the machine's cores,
which bounds every rate here.
Also: Redis round trips per submit, counted in this process through the same app.
"""

from __future__ import annotations

import base64
import functools
import http.server
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
import requests
from PIL import Image

from bench import wrk
from bench.baseline_apps import NAIVE_QUEUE
from bench.report import Check
from bench.stack import running
from visionq.broker import PREPARE_QUEUE
from visionq.dev.ports import free_port, wait_for_http
from visionq.state import keys

BOUNDARY = "visionqbenchboundary"
RSS_SAMPLE_SECONDS = 0.05
#: B2's naive and API rates are measured in this many alternated rounds each.
B2_ROUNDS = 2


def _png(width: int, height: int) -> bytes:
    """Noise, stored without compression: the file is as big as its pixels."""
    image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=0)
    return out.getvalue()


def _multipart(image: bytes) -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\n'
            f"describe\r\n--{BOUNDARY}\r\n"
            f'Content-Disposition: form-data; name="image"; filename="a.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


@contextmanager
def _image_server(png: bytes) -> Iterator[str]:
    """The image the B1 jobs name; nothing fetches it during B1 (no prepare worker)."""
    folder = Path(tempfile.mkdtemp(prefix="visionq-bench-images-"))
    (folder / "a.png").write_bytes(png)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/a.png"
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def _baseline(app: str, logs: Path, *args: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    log = (logs / f"baseline-{app}.log").open("wb")
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.baseline_apps", app, "--port", str(port), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for_http(url, child, timeout=60)
        yield url, child
    finally:
        child.terminate()
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()


def process_tree(pid: int) -> Iterator[int]:
    """A process and its live descendants (gunicorn master + workers, prefork children)."""
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        yield current
        todo += [int(c) for c in children]


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants."""
    total = 0
    for current in process_tree(pid):
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        if rss := re.search(r"VmRSS:\s+(\d+) kB", status):  # none while a process exits
            total += int(rss.group(1)) * 1024
    return total


def _upload_rss(url: str, pid: int, body: Path, *, uploads: int) -> dict[str, Any]:
    """Peak RSS growth of `pid`'s tree while `uploads` posts of `body` run at once."""
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(_tree_rss(pid))
            stop.wait(RSS_SAMPLE_SECONDS)

    def post(_: int) -> int:
        with body.open("rb") as fp:
            return requests.post(
                url,
                data=fp,
                headers={
                    "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                    "Authorization": f"Bearer {wrk.KEY}",
                },
                timeout=300,
            ).status_code

    before = _tree_rss(pid)
    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.monotonic()
    posters = [
        threading.Thread(target=lambda n=n: statuses.append(post(n))) for n in range(uploads)
    ]
    statuses: list[int] = []
    for thread in posters:
        thread.start()
    for thread in posters:
        thread.join()
    elapsed = time.monotonic() - started
    stop.set()
    sampler.join()
    in_flight = uploads * body.stat().st_size
    peak = max(samples, default=before)
    return {
        "uploads": uploads,
        "upload_bytes": body.stat().st_size,
        "bytes_in_flight": in_flight,
        "rss_before": before,
        "rss_peak": peak,
        "rss_growth": peak - before,
        "growth_per_byte_in_flight": round((peak - before) / in_flight, 3),
        "samples": len(samples),
        "seconds": round(elapsed, 2),
        "statuses": sorted(set(statuses)),
    }


def _job_ids(messages: list[bytes]) -> set[str]:
    """The jobs named by prepare messages (the sweeper may have queued one again: ids,
    not messages, are counted)."""
    return {json.loads(base64.b64decode(json.loads(raw)["body"]))[0][0] for raw in messages}


def _settled_counts(client: redis.Redis) -> tuple[int, int]:
    """Jobs created and jobs with a prepare message, read together once the API has
    finished the requests wrk left in flight (read apart, a job created in between
    counted in one figure and not the other)."""
    last = -1
    while (now := client.zcard(keys.tenant_jobs("big"))) != last:
        last = now
        time.sleep(0.5)
    with client.pipeline(transaction=True) as pipe:
        jobs, raw = pipe.zcard(keys.tenant_jobs("big")).lrange(PREPARE_QUEUE, 0, -1).execute()
    return jobs, len(_job_ids(raw))


def _combined(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Alternated wrk runs of one server as one figure, each run's rate kept."""
    requests_, seconds = sum(r["requests"] for r in runs), sum(r["seconds"] for r in runs)
    return {
        "connections": runs[0]["connections"],
        "seconds": seconds,
        "requests": requests_,
        "per_second": round(requests_ / seconds, 2),
        "per_second_by_round": [r["per_second"] for r in runs],
        "p99_ms": max((r["p99_ms"] for r in runs if r["p99_ms"] is not None), default=None),
        "non_2xx": sum(r["non_2xx"] for r in runs),
        "socket_errors": [r["socket_errors"] for r in runs if r["socket_errors"]] or None,
    }


def _count_round_trips(redis_url: str, image_url: str, *, submits: int) -> dict[str, Any]:
    """Redis round trips per JSON submit, through the real app in this process: every
    packed send on any redis-py connection (ours and kombu's) is one."""
    from redis.connection import AbstractConnection

    from service.app import create_app
    from visionq.settings import Settings

    settings = Settings.from_env(
        {
            "VISIONQ_REDIS_URL": redis_url,
            "MIMO_API_KEY": "bench",
            "VISIONQ_API_KEYS": f"big:{wrk.KEY}",
            "VISIONQ_RATE_LIMIT": "none",
            "VISIONQ_STORAGE_URL": f"file://{tempfile.mkdtemp(prefix='visionq-bench-rt-')}",
        }
    )
    client = create_app(settings).test_client()
    headers = {"Authorization": f"Bearer {wrk.KEY}"}
    body = {"prompt": "describe", "images": [image_url]}
    sends = 0
    original = AbstractConnection.send_packed_command

    def counting(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        nonlocal sends
        sends += 1
        original(self, command, check_health)

    client.post("/v1/jobs", json=body, headers=headers)  # connections made, bindings known
    AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]
    try:
        for _ in range(submits):
            assert client.post("/v1/jobs", json=body, headers=headers).status_code == 202
    finally:
        AbstractConnection.send_packed_command = original  # type: ignore[method-assign]
    return {"submits": submits, "round_trips": sends, "per_submit": sends / submits}


def _chart(figures: dict[str, Any], out: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rate, upload) = plt.subplots(1, 2, figsize=(10, 4))
    for name, runs in (("hello", figures["b1_hello"]), ("API", figures["b1_api"])):
        rate.plot(
            [r["connections"] for r in runs], [r["per_second"] for r in runs], "o-", label=name
        )
    rate.set(xlabel="connections", ylabel="requests/s", title="B1 JSON submit")
    rate.legend()
    names = ["naive", "API"]
    upload.bar(names, [figures["b2_naive"]["per_second"], figures["b2_api"]["per_second"]])
    upload.set(ylabel="1 MB uploads/s", title="B2 upload")
    fig.tight_layout()
    name = "intake.png"
    fig.savefig(out / name)
    plt.close(fig)
    return name


def run(quick: bool, out: Path) -> dict[str, Any]:
    seconds = 2 if quick else 10
    b2_seconds = seconds // B2_ROUNDS
    big_uploads = 10
    work = Path(tempfile.mkdtemp(prefix="visionq-bench-intake-"))
    small, big = _png(580, 580), _png(4000, 4000)
    json_type = "application/json"
    form_type = f"multipart/form-data; boundary={BOUNDARY}"
    upload_script = wrk.script(work, "upload", _multipart(small), form_type)
    (work / "big.body").write_bytes(_multipart(big))
    figures: dict[str, Any] = {"generator": "wrk -t1", "seconds_per_run": seconds}
    try:
        with (
            _image_server(_png(64, 64)) as image_url,
            running(
                workers={},
                env={"VISIONQ_ALLOW_PRIVATE_URLS": "true", "VISIONQ_RATE_LIMIT": "none"},
            ) as stack,
        ):
            client = redis.Redis.from_url(stack.redis_url)
            body = f'{{"prompt": "describe", "images": ["{image_url}"]}}'.encode()
            json_script = wrk.script(work, "json", body, json_type)
            api = stack.children[-1]
            with _baseline("hello", stack.logs) as (hello_url, _):
                figures["b1_hello"] = [
                    wrk.run(hello_url, json_script, connections=c, seconds=seconds)
                    for c in (10, 50)
                ]
            figures["b1_api"] = [
                wrk.run(f"{stack.api_url}/v1/jobs", json_script, connections=c, seconds=seconds)
                for c in (10, 50)
            ]
            figures["b1_accepted"] = sum(r["requests"] - r["non_2xx"] for r in figures["b1_api"])
            figures["b1_jobs"], figures["b1_jobs_with_a_message"] = _settled_counts(client)
            figures["prepare_workers"] = 0
            figures["round_trips"] = _count_round_trips(stack.redis_url, image_url, submits=50)
            with _baseline(
                "upload",
                stack.logs,
                "--redis-url",
                stack.redis_url,
                "--folder",
                str(work / "naive"),
            ) as (naive_url, naive):
                # Alternated, so that a slower spell of the shared machine hits both; both
                # rates are measured before either RSS test leaves 500 MB to write back.
                # First, one untimed second each: a server's first uploads pay one-time
                # costs (Pillow's plugins, the storage folders, malloc arenas).
                for url in (naive_url, f"{stack.api_url}/v1/jobs"):
                    wrk.run(url, upload_script, connections=10, seconds=1)
                naive_runs, api_runs = [], []
                for _ in range(B2_ROUNDS):
                    naive_runs.append(
                        wrk.run(naive_url, upload_script, connections=10, seconds=b2_seconds)
                    )
                    shutil.rmtree(work / "naive", ignore_errors=True)
                    api_runs.append(
                        wrk.run(
                            f"{stack.api_url}/v1/jobs",
                            upload_script,
                            connections=10,
                            seconds=b2_seconds,
                        )
                    )
                figures["b2_naive"] = _combined(naive_runs)
                figures["b2_naive"]["enqueued"] = client.llen(NAIVE_QUEUE)
                figures["b2_api"] = _combined(api_runs)
                shutil.rmtree(stack.logs / "images", ignore_errors=True)
                figures["b2_naive_rss"] = _upload_rss(
                    naive_url, naive.pid, work / "big.body", uploads=big_uploads
                )
            figures["b2_api_rss"] = _upload_rss(
                f"{stack.api_url}/v1/jobs", api.pid, work / "big.body", uploads=big_uploads
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figures["b1_ratio"] = [
        round(a["per_second"] / h["per_second"], 3)
        for a, h in zip(figures["b1_api"], figures["b1_hello"], strict=True)
    ]
    figures["b2_ratio"] = round(
        figures["b2_api"]["per_second"] / figures["b2_naive"]["per_second"], 3
    )
    figures["p99_ms_median_api"] = statistics.median(r["p99_ms"] or 0 for r in figures["b1_api"])
    figures["chart"] = _chart(figures, out)
    return figures


def checks(r: dict[str, Any]) -> list[Check]:
    out = []
    for api, hello in zip(r["b1_api"], r["b1_hello"], strict=True):
        c = api["connections"]
        out.append(
            Check(
                f"B1 JSON jobs/s, {c} connections",
                api["per_second"],
                hello["per_second"],
                "bare Flask hello",
                "ratio >= 0.5",
                api["per_second"] >= 0.5 * hello["per_second"] and api["non_2xx"] == 0,
            )
        )
        out.append(
            Check(
                f"B1 JSON p99 ms, {c} connections",
                api["p99_ms"] or 0.0,
                hello["p99_ms"],
                "bare Flask hello p99",
                "reported",
                api["p99_ms"] is not None,
            )
        )
    out.append(
        Check(
            "B1 jobs with a prepare message",
            r["b1_jobs_with_a_message"],
            r["b1_jobs"],
            "jobs created",
            "ratio 1",
            r["b1_jobs_with_a_message"] == r["b1_jobs"] >= r["b1_accepted"],
        )
    )
    api, naive = r["b2_api"], r["b2_naive"]
    out.append(
        Check(
            "B2 1 MB uploads/s",
            api["per_second"],
            naive["per_second"],
            "naive file.save()+LPUSH",
            "ratio >= 1.5",
            api["per_second"] >= 1.5 * naive["per_second"] and api["non_2xx"] == 0,
        )
    )
    rss = r["b2_api_rss"]
    out.append(
        Check(
            f"B2 API RSS growth, {rss['uploads']} big uploads at once, bytes",
            rss["rss_growth"],
            rss["bytes_in_flight"],
            "bytes in flight",
            "ratio <= 2",
            rss["rss_growth"] <= 2 * rss["bytes_in_flight"] and rss["statuses"] == [202],
        )
    )
    return out
