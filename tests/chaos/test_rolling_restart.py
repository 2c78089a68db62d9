"""A rolling restart: every worker gets SIGTERM under load and new ones start."""

from __future__ import annotations

import signal
import threading
import time

import pytest
import requests

from tests.conftest import CORPUS, Stack, data_url

pytestmark = pytest.mark.chaos
JPEG = data_url(CORPUS / "good" / "hopper.jpg")


def test_sigterm_every_worker_during_load(stack: Stack) -> None:
    n = 30
    before = requests.get(f"{stack.simulator_url}/_sim/stats", timeout=5).json()["requests"]
    ids = [
        stack.submit({"prompt": f"t{i} [sim:latency=1]", "images": [JPEG]}).json()["id"]
        for i in range(n)
    ]
    time.sleep(0.5)  # some preparing, some calling, most still queued
    restarts = [
        threading.Thread(target=stack.kill_and_replace, args=(name, signal.SIGTERM))
        for name in ("worker-prepare", "worker-upstream", "worker-webhooks")
    ]
    started = time.monotonic()
    for t in restarts:
        t.start()
    for t in restarts:
        t.join()
    finished = [stack.wait(i, timeout=120) for i in ids]
    after = requests.get(f"{stack.simulator_url}/_sim/stats", timeout=5).json()["requests"]
    assert [j["status"] for j in finished] == ["succeeded"] * n
    assert after - before == n  # running calls were finished, not dropped and made again
    print(
        f"\nrolling restart: {n} jobs, {n} terminal, 0 lost, {after - before - n} extra "
        f"calls; all done {time.monotonic() - started:.1f} s after the SIGTERMs"
    )
