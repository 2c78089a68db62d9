"""An upstream worker killed while jobs wait for the budget: every job still finishes within
a job lease plus a sweep (plus the budget's own pace), whatever it was doing.

A waiting job holds no lease of its own: it sits in the pacer's queue and the ticket that
would have served it sits in a thread of the killed worker. The stack's queued grace is
300 s here, so a job that finishes in time was not saved by it.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from tests.support import CORPUS, Process, Stack, data_url, running_stack
from visionq.dev.redisserver import RedisServer

JPEG = data_url(CORPUS / "good" / "hopper.jpg")
JOBS = 24
LEASE, SWEEP = 3.0, 0.2
#: For a loaded two-core machine: process start-up, polling, the API's own wait.
MARGIN = 15.0


@contextmanager
def _stack(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, **env: str) -> Iterator[Stack]:
    server = RedisServer(tmp_path / "redis").start()
    try:
        with running_stack(
            server.url,
            tmp_path_factory,
            upstream_workers=2,
            VISIONQ_QUEUED_GRACE="300",
            VISIONQ_JOB_LEASE=str(LEASE),
            VISIONQ_SWEEP_INTERVAL=str(SWEEP),
            **env,
        ) as stack:
            yield stack
    finally:
        server.stop()


def _submit(stack: Stack, latency: float) -> list[str]:
    ids = []
    for i in range(JOBS):
        body = {"prompt": f"job {i} [sim:latency={latency}]", "images": [JPEG]}
        response = stack.submit(body, tenant=("alice", "bob")[i % 2])
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    return ids


def _jobs(stack: Stack, ids: list[str]) -> list[dict]:
    out = []
    for n, job_id in enumerate(ids):
        with stack.session(("alice", "bob")[n % 2]) as http:
            out.append(http.get(f"{stack.base_url}/v1/jobs/{job_id}", timeout=10).json())
    return out


def _wait_until_called(stack: Stack, ids: list[str], calls: int) -> list[dict]:
    deadline = time.monotonic() + 60
    while True:
        jobs = _jobs(stack, ids)
        if sum(j["attempts"] >= 1 for j in jobs) >= calls:
            return jobs
        assert time.monotonic() < deadline, stack.logs()
        time.sleep(0.05)


def _upstream_workers(stack: Stack) -> list[Process]:
    return [p for p in stack.processes if p.name.startswith("worker-upstream")]


def _calls_in_flight(worker: Process, simulator_url: str) -> int:
    """Open connections from the worker to the simulator: before any call has answered,
    each is a call in flight (afterwards the pool keeps idle ones too)."""
    port = int(simulator_url.rsplit(":", 1)[1])
    return sum(
        1
        for c in psutil.Process(worker.popen.pid).net_connections("tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


def _kill(stack: Stack, worker: Process) -> None:
    """SIGKILL, and no replacement: the surviving worker has to take the work."""
    worker.popen.send_signal(signal.SIGKILL)
    worker.popen.wait(30)
    worker.stop()
    stack.processes.remove(worker)


def _assert_all_finish_in_time(
    stack: Stack, ids: list[str], killed_at: float, *, budget_seconds: float
) -> str:
    """Every job succeeds within lease + sweep after the kill, plus the time the budget
    itself needs for the jobs still unfinished then, plus a margin."""
    bound = LEASE + SWEEP + budget_seconds + MARGIN
    deadline = killed_at + bound
    while True:
        jobs = _jobs(stack, ids)
        unfinished = [j for j in jobs if j["status"] in ("queued", "running")]
        if not unfinished or time.time() > deadline:
            break
        time.sleep(0.2)
    assert not unfinished, (
        f"{len(unfinished)} of {len(ids)} jobs still {sorted({j['status'] for j in unfinished})}"
        f" {bound:.1f} s after the kill (bound: lease {LEASE} + sweep {SWEEP} + budget"
        f" {budget_seconds:.1f} + margin {MARGIN}):\n{stack.logs()}"
    )
    assert [j["status"] for j in jobs] == ["succeeded"] * len(ids), jobs
    last = max(j["completed_at"] for j in jobs) - killed_at
    assert last <= bound, last
    return f"all {len(ids)} succeeded, the last {last:.1f} s after the kill (bound {bound:.1f} s)"


@pytest.mark.parametrize("replaced", [False, True], ids=["not-replaced", "replaced"])
def test_a_worker_killed_while_jobs_wait_for_the_rpm_window(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, replaced: bool
) -> None:
    rpm, latency = 120, 1.0  # 2 calls a second: the jobs queue for the window
    with _stack(tmp_path, tmp_path_factory, VISIONQ_UPSTREAM_RPM=str(rpm)) as stack:
        ids = _submit(stack, latency)
        jobs = _wait_until_called(stack, ids, calls=4)
        victim = _upstream_workers(stack)[0]
        if replaced:
            stack.kill_and_replace(victim.name)
        else:
            _kill(stack, victim)
        killed_at = time.time()
        left = sum(j["status"] != "succeeded" for j in jobs)
        print(
            "\n"
            + _assert_all_finish_in_time(
                stack, ids, killed_at, budget_seconds=left / (rpm / 60) + latency
            )
        )


def test_a_worker_killed_mid_call_while_others_wait_for_a_slot(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    concurrency, latency = 4, 2.0
    with _stack(
        tmp_path,
        tmp_path_factory,
        VISIONQ_UPSTREAM_CONCURRENCY=str(concurrency),
        VISIONQ_UPSTREAM_RPM="60000",
    ) as stack:
        ids = _submit(stack, latency)
        _wait_until_called(stack, ids, calls=concurrency)  # the first calls, none answered
        in_flight = {
            w.name: _calls_in_flight(w, stack.simulator_url) for w in _upstream_workers(stack)
        }
        victim = max(in_flight, key=in_flight.__getitem__)
        assert in_flight[victim] >= 1, in_flight
        stack.kill_and_replace(victim)
        killed_at = time.time()
        finished = _assert_all_finish_in_time(
            stack, ids, killed_at, budget_seconds=JOBS / concurrency * latency
        )
        retried = sum(j["attempts"] == 2 for j in _jobs(stack, ids))
        print(f"\nkilled {victim} with {in_flight[victim]} calls in flight: {finished}")
        assert retried >= 1  # the killed calls were made again
