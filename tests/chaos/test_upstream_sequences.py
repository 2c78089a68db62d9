"""The upstream failing in turn: 429 (with Retry-After), 500, a dropped connection, then OK."""

from __future__ import annotations

import time

from tests.chaos.ledger import Ledger
from tests.support import CORPUS, Receiver, Stack, data_url

JPEG = data_url(CORPUS / "good" / "hopper.jpg")


def test_a_fault_sequence_ends_in_one_result(stack: Stack, receiver: Receiver) -> None:
    n = 8
    ledger = Ledger(stack, receiver)
    started = time.monotonic()
    for i in range(n):
        ledger.submit(f"s{i} [sim:sequence=429/500/drop,retry_after=1]", JPEG)
    finished = ledger.settle()
    print("\n" + ledger.check(finished, calls=4 * n, label="fault sequence", since=started))
    assert all(j["attempts"] == 4 for j in finished)
    assert time.monotonic() - started >= 1.0  # the 429's Retry-After was waited out


def test_a_400_is_never_retried(stack: Stack) -> None:
    before = stack.upstream_calls()
    job = stack.run({"prompt": "[sim:sequence=400]", "images": [JPEG]})
    assert job["status"] == "failed"
    assert job["error"]["type"] == "upstream_bad_request"
    assert job["attempts"] == 1
    assert stack.upstream_calls() - before == 1
