"""Redis stopped with jobs queued and running, then started again (AOF on)."""

from __future__ import annotations

import time

import pytest
import requests

from tests.conftest import CORPUS, Stack, data_url
from visionq.redisserver import RedisServer

pytestmark = pytest.mark.chaos
JPEG = data_url(CORPUS / "good" / "hopper.jpg")


def test_a_redis_restart_loses_no_job(stack: Stack, redis_server: RedisServer) -> None:
    n = 10
    ids = [
        stack.submit({"prompt": f"r{i} [sim:latency=1]", "images": [JPEG]}).json()["id"]
        for i in range(n)
    ]
    redis_server.stop()
    stopped_at = time.monotonic()
    with stack.session() as http:
        down = http.get(f"{stack.base_url}/v1/jobs/{ids[0]}", timeout=30)
        ready = requests.get(f"{stack.base_url}/readyz", timeout=30)
    assert down.status_code == 503
    assert down.json()["error"]["type"] == "unavailable"
    assert int(down.headers["Retry-After"]) > 0
    assert ready.status_code == 503
    time.sleep(3)
    redis_server.start()
    finished = [stack.wait(i, timeout=120) for i in ids]
    print(
        f"\nRedis restart: {n} jobs, {sum(j['status'] == 'succeeded' for j in finished)} "
        f"succeeded, all terminal {time.monotonic() - stopped_at:.1f} s after the stop"
    )
    assert [j["status"] for j in finished] == ["succeeded"] * n
    after = stack.run({"prompt": "after the restart", "images": [JPEG]})
    assert after["status"] == "succeeded"
    assert requests.get(f"{stack.base_url}/readyz", timeout=10).status_code == 200
