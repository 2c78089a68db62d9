"""The upstream's failures, driven through the simulator's per-request directives."""

from __future__ import annotations

import pytest

from tests.support import CORPUS, Stack, data_url

IMAGE = data_url(CORPUS / "good" / "hopper.jpg")


def _run(stack: Stack, directive: str) -> dict:
    return stack.run({"prompt": f"describe {directive}", "images": [IMAGE]})


def test_transient_503s_are_retried_until_success(stack: Stack) -> None:
    job = _run(stack, "[sim:status=503,fail_first=2,retry_after=0]")
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 3


def test_429_with_retry_after_is_retried(stack: Stack) -> None:
    job = _run(stack, "[sim:status=429,fail_first=1,retry_after=1]")
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2


def test_a_dropped_connection_is_retried(stack: Stack) -> None:
    job = _run(stack, "[sim:drop]")
    assert job["status"] == "failed"
    assert job["error"]["type"] == "upstream_unavailable"
    assert job["attempts"] == 4  # VISIONQ_UPSTREAM_MAX_ATTEMPTS in the test stack


def test_persistent_500_gives_up_as_upstream_unavailable(stack: Stack) -> None:
    job = _run(stack, "[sim:status=500,retry_after=0]")
    assert job["status"] == "failed"
    assert job["error"]["type"] == "upstream_unavailable"
    assert job["error"]["upstream_status"] == 500
    assert job["attempts"] == 4


def test_malformed_answer_is_retried_then_fails(stack: Stack) -> None:
    job = _run(stack, "[sim:malformed]")
    assert job["status"] == "failed"
    assert job["error"]["type"] == "upstream_unavailable"


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, "upstream_bad_request"),
        (404, "upstream_bad_request"),
        (401, "upstream_auth"),
        (403, "upstream_auth"),
        (402, "insufficient_balance"),
        (421, "content_filter"),
    ],
)
def test_client_errors_are_not_retried(stack: Stack, status: int, error_type: str) -> None:
    job = _run(stack, f"[sim:status={status}]")
    assert job["status"] == "failed"
    assert job["error"]["type"] == error_type
    assert job["error"]["upstream_status"] == status
    assert job["attempts"] == 1
    assert "sim-test-key" not in str(job)
