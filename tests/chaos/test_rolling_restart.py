"""A rolling restart: every worker gets SIGTERM under load and new ones start."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter

from tests.chaos.ledger import Ledger
from tests.support import CORPUS, Receiver, Stack, data_url

JPEG = data_url(CORPUS / "good" / "hopper.jpg")


def test_sigterm_every_worker_during_load(stack: Stack, receiver: Receiver) -> None:
    n = 30
    ledger = Ledger(stack, receiver)
    for i in range(n):
        ledger.submit(f"t{i} [sim:latency=1]", JPEG)
    deadline = time.monotonic() + 30
    with stack.session() as http:
        while True:  # a call under way, which the SIGTERM must let finish rather than drop
            jobs = [http.get(f"{stack.base_url}/v1/jobs/{i}").json() for i in ledger.ids]
            if any(j["status"] == "running" and j["attempts"] >= 1 for j in jobs):
                break
            assert time.monotonic() < deadline, stack.logs()
            time.sleep(0.05)
    statuses = Counter(j["status"] for j in jobs)
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
    summary = ledger.check(finished, calls=n, label="rolling restart", since=started)
    print(f"\nSIGTERM with jobs {dict(statuses)}; {summary}")
