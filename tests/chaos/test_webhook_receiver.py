"""A webhook receiver that is down while jobs finish, then comes back on the same port."""

from __future__ import annotations

import time

from tests.chaos.ledger import Ledger
from tests.support import CORPUS, Receiver, Stack, data_url

JPEG = data_url(CORPUS / "good" / "hopper.jpg")


def test_a_receiver_down_then_up_gets_every_event_once_per_id(
    stack: Stack, receiver: Receiver
) -> None:
    n = 10
    port = receiver.port
    receiver.stop()
    ledger = Ledger(stack, receiver)
    ids = [ledger.submit(f"w{i}", JPEG) for i in range(n)]
    deadline = time.monotonic() + 30
    with stack.session() as http:
        while True:  # every job finished, and its first deliveries were refused
            hooks = [http.get(f"{stack.base_url}/v1/jobs/{i}").json()["webhook"] for i in ids]
            if all(h["attempts"] >= 2 for h in hooks):
                break
            assert time.monotonic() < deadline, stack.logs()
            time.sleep(0.1)
    assert all(h["status"] == "pending" and h["last_status_code"] is None for h in hooks)
    ledger.receiver = Receiver(port=port).start()
    back_at = time.monotonic()
    try:
        finished = ledger.settle()
        print("\n" + ledger.check(finished, calls=n, label="webhook receiver down", since=back_at))
    finally:
        ledger.receiver.stop()
    with stack.session() as http:
        hooks = [http.get(f"{stack.base_url}/v1/jobs/{i}").json()["webhook"] for i in ids]
    assert [h["status"] for h in hooks] == ["delivered"] * n
    assert all(h["attempts"] >= 3 for h in hooks)
