"""What every chaos test asserts about the jobs it submitted, counted from outside.

- terminal: each job ends `succeeded` (the faults are all recoverable ones);
- one result write: each finishing transition publishes the id on `vq:done` once, and a
  second finish is refused without publishing, so a subscriber counts the writes;
- upstream calls: the simulator's own counter;
- one `webhook-id`: every job has a webhook to a real receiver, which must see each job's
  event at least once and always under the id `msg_<job>`.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import redis

from tests.support import Receiver, Stack
from visionq.state.connection import open_redis
from visionq.state.keys import DONE_CHANNEL


class Ledger:
    def __init__(self, stack: Stack, receiver: Receiver) -> None:
        self.stack = stack
        self.receiver = receiver
        self.ids: list[str] = []
        self.writes: Counter[str] = Counter()
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._thread = threading.Thread(target=self._count_writes, daemon=True)
        self._thread.start()
        assert self._subscribed.wait(10), "could not subscribe to the done channel"
        self.calls_before = stack.upstream_calls()

    def _count_writes(self) -> None:
        # Resubscribes after a Redis restart; the workers take longer than that to resume.
        while not self._stop.is_set():
            try:
                client = open_redis(self.stack.redis_url, socket_timeout=2)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(DONE_CHANNEL)
                self._subscribed.set()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    if message is not None:
                        self.writes[message["data"].decode()] += 1
            except redis.RedisError:
                time.sleep(0.05)

    def submit(self, prompt: str, image: str) -> str:
        body = {"prompt": prompt, "images": [image], "webhook": {"url": self.receiver.url}}
        response = self.stack.submit(body)
        assert response.status_code == 202, response.text
        self.ids.append(response.json()["id"])
        return self.ids[-1]

    def settle(self, timeout: float = 90) -> list[dict[str, Any]]:
        """Every job's final state, once its webhook is delivered too."""
        jobs = [self.stack.wait(job_id, timeout=timeout) for job_id in self.ids]
        deadline = time.monotonic() + 30
        while {d.headers["webhook-id"] for d in self.receiver.deliveries} < {
            f"msg_{i}" for i in self.ids
        }:
            assert time.monotonic() < deadline, "webhooks missing:\n" + self.stack.logs()
            time.sleep(0.1)
        time.sleep(0.5)  # let any late duplicate result write arrive before counting
        self._stop.set()
        return jobs

    def check(self, jobs: list[dict[str, Any]], *, calls: int, label: str, since: float) -> str:
        """Assert the four properties; the summary line for the closing note."""
        elapsed = time.monotonic() - since
        n = len(self.ids)
        terminal = [j for j in jobs if j["status"] in ("succeeded", "failed", "canceled")]
        assert [j["status"] for j in jobs] == ["succeeded"] * n, jobs
        assert {i: self.writes[i] for i in self.ids} == dict.fromkeys(self.ids, 1)
        made = self.stack.upstream_calls() - self.calls_before
        assert made == calls, f"{made} upstream calls, not {calls}:\n{self.stack.logs()}"
        for delivery in self.receiver.deliveries:
            event = delivery.verified
            assert not isinstance(event, Exception), event
            assert delivery.headers["webhook-id"] == f"msg_{event['data']['id']}"
        duplicated = sum(self.writes[i] - 1 for i in self.ids)
        return (
            f"{label}: {n} submitted, {len(terminal)} terminal, {n - len(terminal)} lost, "
            f"{duplicated} duplicated results, {calls} upstream calls; "
            f"all done {elapsed:.1f} s after the fault"
        )
