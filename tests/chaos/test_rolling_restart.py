"""A rolling restart: every worker gets SIGTERM under load and new ones start."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from tests.chaos.ledger import Ledger
from tests.support import CORPUS, Receiver, Stack, data_url

pytestmark = pytest.mark.chaos
JPEG = data_url(CORPUS / "good" / "hopper.jpg")


def test_sigterm_every_worker_during_load(stack: Stack, receiver: Receiver) -> None:
    n = 30
    ledger = Ledger(stack, receiver)
    for i in range(n):
        ledger.submit(f"t{i} [sim:latency=1]", JPEG)
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
    finished = ledger.settle(timeout=120)
    # Running calls were finished, not dropped and made again.
    print("\n" + ledger.check(finished, calls=n, label="rolling restart", since=started))
