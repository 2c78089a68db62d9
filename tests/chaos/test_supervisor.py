"""`visionq worker` for every queue: one child per queue, under a supervisor that notices
a child's end at once and starts it again, or gives up so that systemd or Kubernetes
restart the whole worker."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from tests.chaos.onehost import log_lines, one_worker_stack, process, queue_child, zombies
from tests.support import CORPUS, Stack, data_url
from visionq.dev.redisserver import RedisServer

pytestmark = pytest.mark.chaos
JPEG = data_url(CORPUS / "good" / "hopper.jpg")
#: From the kill to every job submitted after it being done: the restart's first backoff
#: (1 s), a Celery worker's start (a few seconds here), the jobs themselves; with margin.
RECOVERY_BOUND = 45.0


@pytest.fixture
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        with one_worker_stack(server, tmp_path_factory) as running:
            yield running
    finally:
        server.stop()


def test_a_sigkilled_queue_child_is_restarted(stack: Stack) -> None:
    worker = process(stack, "worker")
    assert stack.run({"prompt": "before", "images": [JPEG]})["status"] == "succeeded"
    killed = queue_child(worker.popen.pid, "upstream")
    assert killed is not None
    os.kill(killed, signal.SIGKILL)
    killed_at = time.monotonic()
    ids = []
    for i in range(5):
        response = stack.submit({"prompt": f"after {i}", "images": [JPEG]})
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    jobs = [stack.wait(job_id, timeout=RECOVERY_BOUND) for job_id in ids]
    recovered = time.monotonic() - killed_at
    print(f"\nupstream child SIGKILLed: 5 jobs submitted after it done in {recovered:.1f} s")
    assert [job["status"] for job in jobs] == ["succeeded"] * 5
    assert recovered < RECOVERY_BOUND
    assert worker.popen.poll() is None
    assert zombies(worker.popen.pid) == []
    assert queue_child(worker.popen.pid, "upstream") not in (None, killed)
    about_killed = [
        (line["level"], line.get("exit"), line.get("restart_in"))
        for line in log_lines(worker)
        if line.get("logger") == "visionq.supervisor" and line.get("pid") == killed
    ]
    assert about_killed == [("INFO", None, None), ("WARNING", "SIGKILL", 1)], about_killed


def _next_child(parent: int, queue: str, other_than: set[int], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while (pid := queue_child(parent, queue)) is None or pid in other_than:
        assert time.monotonic() < deadline, f"no new {queue} child after {timeout} s"
        time.sleep(0.05)
    return pid


def test_a_child_that_keeps_dying_ends_the_worker_with_status_1(stack: Stack) -> None:
    worker = process(stack, "worker")
    parent = worker.popen.pid
    others = [queue_child(parent, queue) for queue in ("prepare", "webhooks")]
    killed: set[int] = set()
    started = time.monotonic()
    for _ in range(5):  # the first and four restarts
        pid = _next_child(parent, "upstream", killed, timeout=30)
        os.kill(pid, signal.SIGKILL)
        killed.add(pid)
    status = worker.popen.wait(60)
    print(
        f"\n5 SIGKILLs of the upstream child: the worker exited {status} after "
        f"{time.monotonic() - started:.1f} s"
    )
    assert status == 1
    for pid in others:  # stopped, not left behind
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    ends = [
        line
        for line in log_lines(worker)
        if line.get("logger") == "visionq.supervisor"
        and line.get("pid") in killed
        and "exit" in line
    ]
    assert [(e["level"], e.get("restart_in")) for e in ends] == [
        ("WARNING", 1),
        ("WARNING", 2),
        ("WARNING", 4),
        ("WARNING", 8),
        ("CRITICAL", None),
    ], ends


def test_sigterm_lets_running_work_finish_and_restarts_nothing(stack: Stack) -> None:
    worker = process(stack, "worker")
    response = stack.submit({"prompt": "slow [sim:latency=3]", "images": [JPEG]})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    deadline = time.monotonic() + 30
    with stack.session() as http:
        while http.get(f"{stack.base_url}/v1/jobs/{job_id}").json()["attempts"] < 1:
            assert time.monotonic() < deadline, stack.logs()
            time.sleep(0.05)
    worker.popen.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    status = worker.popen.wait(60)
    print(
        f"\nSIGTERM mid-call: the worker exited {status} after {time.monotonic() - stopped:.1f} s"
    )
    assert status == 0
    with stack.session() as http:  # finished by the warm shutdown: no worker is left
        assert http.get(f"{stack.base_url}/v1/jobs/{job_id}").json()["status"] == "succeeded"
    lines = [line for line in log_lines(worker) if line.get("logger") == "visionq.supervisor"]
    assert not [line for line in lines if line["level"] != "INFO"], lines
    assert sum("ended" in line["message"] for line in lines) == 3, lines
