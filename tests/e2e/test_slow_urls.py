"""Image URLs whose server breaks off the body, through the real stack (issue 14, defect 5).

A body trickled past the fetch deadline, cut short, or reset is the remote server's fault:
the job must end `failed` with `invalid_image_url` within the documented deadline, after a
bounded number of tries, and nothing may try the URL again afterwards. (It used to be taken
for an outage of our own storage and handed back uncounted, for ever.)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.brokenserver import BrokenImageServer
from tests.conftest import CORPUS, Stack, running_stack
from visionq.dev.redisserver import RedisServer
from visionq.pipeline import MAX_PREPARE_ATTEMPTS

FETCH_TIMEOUT = 3.0
LEASE = 3.0  # VISIONQ_JOB_LEASE in the test stack
#: A storage outage is looked at again this long after it is handed back (its Retry-After).
STORAGE_RETRY = 5.0
#: Each try may take the whole deadline, and a try lost with its worker one lease more;
#: the margin is for a loaded machine.
BOUND = FETCH_TIMEOUT * MAX_PREPARE_ATTEMPTS + LEASE + 30.0
IMAGE = (CORPUS / "good" / "hopper.png").read_bytes()


@pytest.fixture(scope="module")
def broken() -> Iterator[BrokenImageServer]:
    with BrokenImageServer(IMAGE, every=1.0) as server:
        yield server


@pytest.fixture(scope="module")
def slow_stack(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with running_stack(
        redis_server.url.replace("/0", "/11"),
        tmp_path_factory,
        VISIONQ_URL_FETCH_TIMEOUT=str(FETCH_TIMEOUT),
    ) as stack:
        yield stack


def _watch(
    stack: Stack, job_id: str, tries: Callable[[], int], bound: float
) -> tuple[dict[str, Any], list[str]]:
    """The job once finished or once `bound` passed, and each change of its status or of
    the number of tries the server saw, with the time it was seen."""
    started = time.monotonic()
    timeline: list[str] = []
    last: tuple[str, int] | None = None
    with stack.session() as http:
        while True:
            job = http.get(f"{stack.base_url}/v1/jobs/{job_id}", timeout=10).json()
            elapsed = time.monotonic() - started
            now = (job["status"], tries())
            if now != last:
                timeline.append(f"{elapsed:.1f}s {now[0]}, {now[1]} tries")
                last = now
            if job["status"] in ("succeeded", "failed", "canceled") or elapsed > bound:
                timeline.append(f"{elapsed:.1f}s {now[0]}, {now[1]} tries")
                return job, timeline
            time.sleep(0.5)


def test_a_whole_image_from_the_same_server_is_fetched(
    slow_stack: Stack, broken: BrokenImageServer
) -> None:
    job = slow_stack.run({"prompt": "control", "images": [broken.url("whole")]})
    assert job["status"] == "succeeded", job
    assert broken.seen("whole") == 1


@pytest.mark.parametrize(
    ("behaviour", "says"),
    [("trickle", "timed out"), ("short", "before the whole image"), ("reset", "reset")],
)
def test_a_body_the_server_breaks_off_fails_the_job_within_the_deadline(
    behaviour: str, says: str, slow_stack: Stack, broken: BrokenImageServer
) -> None:
    submitted = time.monotonic()
    response = slow_stack.submit({"prompt": behaviour, "images": [broken.url(behaviour)]})
    assert response.status_code == 202, response.text
    job, timeline = _watch(slow_stack, response.json()["id"], lambda: broken.seen(behaviour), BOUND)
    took = time.monotonic() - submitted
    tries = broken.seen(behaviour)
    observed = f"{behaviour}: {tries} tries in {took:.1f}s; {timeline}"

    assert job["status"] == "failed", observed
    assert job["error"]["type"] == "invalid_image_url", observed
    assert says in job["error"]["message"], observed
    assert took < BOUND, observed
    assert 1 <= tries <= MAX_PREPARE_ATTEMPTS, observed
    # Finished means finished: no sweep or storage retry brings the URL back.
    time.sleep(LEASE + STORAGE_RETRY + 2)
    assert broken.seen(behaviour) == tries, observed
