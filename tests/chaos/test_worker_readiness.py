"""`visionq worker`'s pool sizes and readiness: `--concurrency` means what a user means by
it, and the metrics port's `/readyz` says 200 only while every queue has a consumer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.chaos.onehost import children, log_lines, one_worker_stack, process, queue_child
from tests.support import CORPUS, Process, Stack, data_url, stack_env
from visionq.broker import cpu_count
from visionq.dev.ports import free_port
from visionq.dev.redisserver import RedisServer

pytestmark = pytest.mark.chaos
JPEG = data_url(CORPUS / "good" / "hopper.jpg")


def _readyz(port: int) -> tuple[int, dict[str, Any]]:
    response = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
    return response.status_code, response.json()


def _until(port: int, status: int, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            code, body = _readyz(port)
        except requests.ConnectionError:
            code, body = 0, {}
        if code == status:
            return body
        assert time.monotonic() < deadline, f"/readyz still {code} {body}"
        time.sleep(0.1)


@pytest.fixture
def metrics_port() -> int:
    return free_port()


@pytest.fixture
def stack(tmp_path_factory: pytest.TempPathFactory, metrics_port: int) -> Iterator[Stack]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        with one_worker_stack(
            server,
            tmp_path_factory,
            ("--concurrency", "20"),
            VISIONQ_METRICS_PORT=str(metrics_port),
        ) as running:
            yield running
    finally:
        server.stop()


def test_a_bare_concurrency_sizes_the_thread_pools_and_prepare_keeps_a_process_per_core(
    stack: Stack, metrics_port: int
) -> None:
    body = _until(metrics_port, 200)
    assert body == {
        "ready": True,
        "queues": dict.fromkeys(("prepare", "upstream", "webhooks"), True),
    }
    worker = process(stack, "worker")
    prepare = queue_child(worker.popen.pid, "prepare")
    assert prepare is not None
    assert len(children(prepare)) == cpu_count()  # the prefork pool: one child per core
    kept = [
        line
        for line in log_lines(worker)
        if line.get("queue") == "prepare" and line.get("concurrency") == cpu_count()
    ]
    assert kept and kept[0]["level"] == "INFO", kept
    # Twenty calls in flight at once: the upstream pool has the twenty threads asked for.
    with ThreadPoolExecutor(20) as pool:
        jobs = list(
            pool.map(
                lambda n: stack.run({"prompt": f"{n} [sim:latency=2]", "images": [JPEG]}),
                range(20),
            )
        )
    assert [job["status"] for job in jobs] == ["succeeded"] * 20
    stats = requests.get(f"{stack.simulator_url}/_sim/stats", timeout=5).json()
    assert stats["peak_in_flight"] == 20


def test_readiness_follows_a_queue_child_that_dies_and_comes_back(
    stack: Stack, metrics_port: int
) -> None:
    _until(metrics_port, 200)
    worker = process(stack, "worker")
    killed = queue_child(worker.popen.pid, "upstream")
    assert killed is not None
    os.kill(killed, signal.SIGKILL)
    down = _until(metrics_port, 503, timeout=5)
    assert down["queues"] == {"prepare": True, "upstream": False, "webhooks": True}
    assert _until(metrics_port, 200)["ready"] is True
    assert queue_child(worker.popen.pid, "upstream") not in (None, killed)
    # The restarted child takes work, and its counts are the scrape on every other path.
    assert stack.run({"prompt": "after", "images": [JPEG]})["status"] == "succeeded"
    scrape = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
    assert scrape.status_code == 200
    assert "visionq_upstream_calls_total{" in scrape.text


def test_more_prepare_processes_than_cores_is_warned_and_the_ready_file_follows_the_worker(
    tmp_path: Path, redis_url: str
) -> None:
    ready_file = tmp_path / "ready"
    env = stack_env(redis_url, tmp_path / "images", "http://127.0.0.1:9")
    asked = cpu_count() + 1
    worker = Process(
        "worker",
        [
            *("worker", "--queues", "prepare", "--concurrency", f"prepare={asked}"),
            *("--ready-file", str(ready_file)),
        ],
        env,
        tmp_path,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready_file.exists():
            assert worker.popen.poll() is None, worker.tail()
            assert time.monotonic() < deadline, worker.tail()
            time.sleep(0.1)
        assert ready_file.read_text() == str(worker.popen.pid)
        assert len(children(worker.popen.pid)) == asked
        warned = [line for line in log_lines(worker) if line.get("cores") == cpu_count()]
        assert [(w["level"], w["concurrency"]) for w in warned] == [("WARNING", asked)], warned
        worker.popen.send_signal(signal.SIGTERM)
        assert worker.popen.wait(60) == 0
        assert not ready_file.exists()
    finally:
        worker.stop()


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--concurrency", "upstream=many"], "a pool size is a number"),
        (["--concurrency", "uploads=4"], "unknown queue 'uploads'"),
        (["--concurrency", "0"], "at least 1"),
        (["--ready-file", "ready"], "--ready-file is for one queue"),
    ],
)
def test_a_bad_worker_option_is_a_usage_error(args: list[str], complaint: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "visionq", "worker", *args], capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr
    assert complaint in done.stderr
