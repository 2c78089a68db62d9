"""The upstream failing in turn: 429 (with Retry-After), 500, a dropped connection, then OK."""

from __future__ import annotations

import time

import pytest

from tests.conftest import CORPUS, Stack, data_url

pytestmark = pytest.mark.chaos
JPEG = data_url(CORPUS / "good" / "hopper.jpg")


def test_a_fault_sequence_ends_in_one_result(stack: Stack) -> None:
    n = 8
    before = stack.upstream_calls()
    started = time.monotonic()
    ids = [
        stack.submit(
            {"prompt": f"s{i} [sim:sequence=429/500/drop,retry_after=1]", "images": [JPEG]}
        ).json()["id"]
        for i in range(n)
    ]
    finished = [stack.wait(i, timeout=90) for i in ids]
    elapsed = time.monotonic() - started
    assert [j["status"] for j in finished] == ["succeeded"] * n
    assert all(j["attempts"] == 4 for j in finished)
    assert stack.upstream_calls() - before == 4 * n
    assert elapsed >= 1.0  # the 429's Retry-After was waited out
    print(f"\nfault sequence: {n} jobs, {n} succeeded after 4 calls each, {elapsed:.1f} s")


def test_a_400_is_never_retried(stack: Stack) -> None:
    before = stack.upstream_calls()
    job = stack.run({"prompt": "[sim:sequence=400]", "images": [JPEG]})
    assert job["status"] == "failed"
    assert job["error"]["type"] == "upstream_bad_request"
    assert job["attempts"] == 1
    assert stack.upstream_calls() - before == 1
