"""Workers killed mid-job: every job still ends, once, with one upstream call per kill."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from PIL import Image

from tests.chaos.ledger import Ledger
from tests.support import CORPUS, Process, Receiver, Stack, data_url

JPEG = data_url(CORPUS / "good" / "hopper.jpg")


def test_sigkill_of_the_upstream_worker_mid_call(stack: Stack, receiver: Receiver) -> None:
    n = 50
    ledger = Ledger(stack, receiver)
    ids = [ledger.submit(f"job {i} [sim:latency=4]", JPEG) for i in range(n)]
    deadline = time.monotonic() + 30
    with stack.session() as http:
        while True:  # every job is inside its upstream call (none has come out of it yet)
            jobs = [http.get(f"{stack.base_url}/v1/jobs/{i}").json() for i in ids]
            if all(j["attempts"] == 1 and j["status"] == "running" for j in jobs):
                break
            assert time.monotonic() < deadline, stack.logs()
            time.sleep(0.05)
    stack.kill_and_replace("worker-upstream")
    killed_at = time.monotonic()
    finished = ledger.settle()
    # the killed call, then one more each
    print("\n" + ledger.check(finished, calls=2 * n, label="upstream SIGKILL", since=killed_at))
    assert all(j["attempts"] == 2 for j in finished)
    contents = [j["result"]["content"] for j in finished]
    assert all(f"text: job {i} " in c for i, c in enumerate(contents))


def _pool_children(process: Process) -> list[int]:
    pid = process.popen.pid
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_sigkill_of_a_prepare_pool_child_mid_prepare(
    stack: Stack, receiver: Receiver, tmp_path: Path
) -> None:
    # Large enough that preparing it (decode, resize, encode) takes a good part of a second.
    big = tmp_path / "big.png"
    Image.effect_noise((3000, 2000), 64).convert("RGB").save(big)
    n = 4
    ledger = Ledger(stack, receiver)
    ids = [ledger.submit(f"p{i}", data_url(big)) for i in range(n)]
    worker = next(p for p in stack.processes if p.name == "worker-prepare")
    deadline = time.monotonic() + 20
    with stack.session() as http:
        while not any(
            http.get(f"{stack.base_url}/v1/jobs/{i}").json()["status"] == "running" for i in ids
        ):
            assert time.monotonic() < deadline, stack.logs()
            time.sleep(0.01)
    for child in _pool_children(worker):
        os.kill(child, signal.SIGKILL)
    killed_at = time.monotonic()
    finished = ledger.settle()
    # Prepared again, never a second upstream call.
    print("\n" + ledger.check(finished, calls=n, label="prepare child SIGKILL", since=killed_at))
    assert worker.popen.poll() is None  # the worker replaced its children and carries on
