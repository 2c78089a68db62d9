"""Redis stopped with jobs queued and running, then started again (AOF on)."""

from __future__ import annotations

import time

import requests

from tests.chaos.ledger import Ledger
from tests.support import CORPUS, Receiver, Stack, data_url
from visionq.dev.redisserver import RedisServer

JPEG = data_url(CORPUS / "good" / "hopper.jpg")


def test_a_redis_restart_loses_no_job(
    stack: Stack, chaos_redis: RedisServer, receiver: Receiver
) -> None:
    n = 10
    ledger = Ledger(stack, receiver)
    ids = [ledger.submit(f"r{i} [sim:latency=1]", JPEG) for i in range(n)]
    chaos_redis.stop()
    stopped_at = time.monotonic()
    with stack.session() as http:
        down = http.get(f"{stack.base_url}/v1/jobs/{ids[0]}", timeout=30)
        ready = requests.get(f"{stack.base_url}/readyz", timeout=30)
    assert down.status_code == 503
    assert down.json()["error"]["type"] == "unavailable"
    assert int(down.headers["Retry-After"]) > 0
    assert ready.status_code == 503
    time.sleep(3)
    chaos_redis.start()
    finished = ledger.settle(timeout=120)
    # Calls answered while Redis was down are recorded once it is back (their workers hold
    # the answers and the sweeper gives them a lease to do so), not made again.
    calls = stack.upstream_calls() - ledger.calls_before
    assert calls == n
    print("\n" + ledger.check(finished, calls=calls, label="Redis restart", since=stopped_at))
    after = stack.run({"prompt": "after the restart", "images": [JPEG]})
    assert after["status"] == "succeeded"
    assert requests.get(f"{stack.base_url}/readyz", timeout=10).status_code == 200
