"""Deadlines through the real stack: a job still waiting for the upstream budget when its
`Cancel-After` passes ends `canceled` with `deadline_exceeded`, and no call is made for it.
The budget here is one request a minute, so the second job must wait."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from tests.support import CORPUS, Stack, data_url, running_stack
from tests.support.databases import Databases

PNG = data_url(CORPUS / "good" / "hopper.png")


@pytest.fixture(scope="module")
def slow(redis_databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(redis_databases.take(), tmp_path_factory, VISIONQ_UPSTREAM_RPM="1") as stack:
        yield stack


def _submit(stack: Stack, headers: dict[str, str], **body: object) -> requests.Response:
    with stack.session() as http:
        return http.post(
            f"{stack.base_url}/v1/jobs",
            json={"prompt": "x", "images": [PNG], **body},
            headers=headers,
            timeout=30,
        )


def test_a_job_waiting_for_the_budget_past_its_deadline_is_canceled_unsent(slow: Stack) -> None:
    first = _submit(slow, {})
    assert slow.wait(first.json()["id"])["status"] == "succeeded"  # the minute's one call
    calls = slow.upstream_calls()
    started = time.monotonic()
    late = _submit(slow, {"Cancel-After": "2s"})
    assert late.status_code == 202, late.text
    assert late.json()["deadline"] == pytest.approx(time.time() + 2, abs=1)
    job = slow.wait(late.json()["id"], timeout=30)
    assert job["status"] == "canceled"
    assert job["error"]["type"] == "deadline_exceeded"
    assert 2 <= time.monotonic() - started < 10  # canceled at its deadline, not a minute on
    assert slow.upstream_calls() == calls  # never sent
    # The body's absolute deadline does the same.
    body = _submit(slow, {}, deadline=time.time() + 1)
    assert slow.wait(body.json()["id"], timeout=30)["error"]["type"] == "deadline_exceeded"


@pytest.mark.parametrize(
    ("headers", "body", "param"),
    [
        ({"Cancel-After": "soon"}, {}, "Cancel-After"),
        ({"Cancel-After": "0s"}, {}, "Cancel-After"),
        ({}, {"deadline": 1_000_000_000}, "deadline"),
    ],
)
def test_a_bad_or_past_deadline_is_refused(
    slow: Stack, headers: dict[str, str], body: dict[str, object], param: str
) -> None:
    answer = _submit(slow, headers, **body)
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == param
