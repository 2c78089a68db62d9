"""Shared pacing through the real stack: two upstream worker processes against a simulator
that enforces the same per-minute budget, so any request over it would be a 429."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.conftest import CORPUS, Stack, data_url, running_stack
from visionq.dev.redisserver import RedisServer

PNG = data_url(CORPUS / "good" / "hopper.png")
RPM = 120  # 2 calls a second


@pytest.fixture(scope="module")
def paced(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(
        redis_server.url.replace("/0", "/9"),
        tmp_path_factory,
        simulator_args=("--rpm", str(RPM)),
        upstream_workers=2,
        VISIONQ_UPSTREAM_RPM=str(RPM),
    ) as stack:
        yield stack


def test_a_small_tenant_is_not_stuck_behind_a_big_one_and_nothing_hits_a_429(
    paced: Stack,
) -> None:
    big = [paced.submit({"prompt": f"big {i}", "images": [PNG]}).json()["id"] for i in range(40)]
    small = paced.submit({"prompt": "small", "images": [PNG]}, tenant="bob").json()["id"]
    big_jobs = [paced.wait(job_id, timeout=120) for job_id in big]
    small_job = paced.wait(small, "bob", timeout=120)
    stats = requests.get(f"{paced.simulator_url}/_sim/stats", timeout=5).json()

    assert [j["status"] for j in big_jobs] == ["succeeded"] * 40
    assert small_job["status"] == "succeeded"
    assert stats["rate_limited"] == 0  # both workers waited for room instead
    assert stats["requests"] == 41
    # First in, first out would finish the small job last; fair turns finish it within
    # a few turns of its arrival, while the big tenant's backlog still waits. Counted from
    # the small job's arrival, so a slow submit (a loaded machine) does not change it.
    arrived, done = small_job["created_at"], small_job["completed_at"]
    overtaking = sum(arrived < j["completed_at"] < done for j in big_jobs)
    still_waiting = sum(j["completed_at"] > done for j in big_jobs)
    # Overtaking it: the job each upstream process already holds while it waits for the
    # window, those in flight, and the few served while it is prepared (3 to 7 in 15 runs
    # here, 6 once in CI); first in, first out would be all 40.
    assert overtaking <= 8, (overtaking, still_waiting)
    assert still_waiting >= 10, (overtaking, still_waiting)
