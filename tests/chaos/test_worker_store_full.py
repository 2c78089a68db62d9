"""Redis at `maxmemory` (noeviction): it refuses every write, workers' acknowledgements
included. The worker processes must stay up, finish what they can, and carry on by
themselves once memory is freed."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.chaos.onehost import log_lines, one_worker_stack, process, queue_child
from tests.support import CORPUS, Stack, data_url
from visionq.broker import PREPARE_QUEUE, PREPARE_TASK, QUEUES
from visionq.broker.celery_redis import CeleryRedis
from visionq.dev.redisserver import RedisServer

pytestmark = pytest.mark.chaos
JPEG = data_url(CORPUS / "good" / "hopper.jpg")
#: How long Redis stays full: longer than a job lease (3 s), so that leases run out.
FULL_FOR = 15.0
#: From freeing the memory to every accepted job done; with margin for this machine.
RESUME_BOUND = 60.0
#: Where a prepare message waits while the test holds it back from the workers.
STAGING = "test:staging"


class SlowImages:
    """Serves one JPEG after a delay, so that prepares fetching it keep their slots."""

    def __init__(self, delay: float) -> None:
        body = (CORPUS / "good" / "hopper.jpg").read_bytes()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                time.sleep(delay)
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/slow.jpg"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    own = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield own
    own.stop()


@pytest.fixture
def stack(server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # A long grace: a job whose prepare message was lost would wait that long to be queued
    # again, so a job that finishes within the bound was served by its own message.
    with one_worker_stack(server, tmp_path_factory, VISIONQ_QUEUED_GRACE="300") as running:
        yield running


def _accepted(stack: Stack, body: dict[str, Any]) -> str:
    response = stack.submit(body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _wait_for(what: str, check: Any, stack: Stack, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}:\n{stack.logs()}"
        time.sleep(0.05)


def _jobs(stack: Stack, ids: list[str]) -> list[dict[str, Any]]:
    with stack.session() as http:
        return [http.get(f"{stack.base_url}/v1/jobs/{i}", timeout=30).json() for i in ids]


def _prepares_unacknowledged(client: redis.Redis) -> int:
    """Prepare messages a worker has taken and not yet acknowledged: kombu keeps each in
    its `unacked` hash until then, with Celery's headers naming the task."""
    return sum(
        json.loads(raw)[0]["headers"]["task"] == PREPARE_TASK for raw in client.hvals("unacked")
    )


def _fill(client: redis.Redis) -> int:
    """Up to maxmemory with filler keys, then the limit below what is used, so that no
    delete of a few keys makes room: every write is refused until the test frees it."""
    client.config_set("maxmemory", client.info("memory")["used_memory"] + 1_000_000)
    n = 0
    try:
        while True:
            client.set(f"test:filler:{n}", b"x" * 50_000)
            n += 1
    except redis.OutOfMemoryError:
        pass
    client.config_set("maxmemory", client.info("memory")["used_memory"] - 500_000)
    return n


def test_workers_survive_a_full_redis_and_resume_when_it_has_room(
    stack: Stack, server: RedisServer
) -> None:
    client = redis.Redis.from_url(server.url)
    worker = process(stack, "worker")
    assert stack.run({"prompt": "before", "images": [JPEG]})["status"] == "succeeded"
    children = {queue: queue_child(worker.popen.pid, queue) for queue in QUEUES}

    # One prepare message kept out of the workers' reach, to arrive once Redis is full:
    # both prepare slots fetch a slow image meanwhile, so nobody takes it from its list.
    slow = SlowImages(delay=3)
    try:
        busy = [_accepted(stack, {"prompt": f"slow {i}", "images": [slow.url]}) for i in (0, 1)]
        _wait_for(
            "both prepares running",
            lambda: all(j["status"] == "running" for j in _jobs(stack, busy)),
            stack,
        )
        held = _accepted(stack, {"prompt": "held", "images": [JPEG]})
        assert client.rename(CeleryRedis(client).waiting_list(PREPARE_QUEUE), STAGING)
        _wait_for(
            "the slow prepares done",
            lambda: all(j["status"] == "succeeded" for j in _jobs(stack, busy)),
            stack,
        )
    finally:
        slow.stop()

    # Upstream calls under way as Redis fills, in both slots: they answer 500, and their
    # retry and acknowledgement meet a full Redis. More jobs wait for a slot behind them.
    flaky = [
        _accepted(stack, {"prompt": f"f{i} [sim:latency=3,sequence=500]", "images": [JPEG]})
        for i in (0, 1)
    ]
    _wait_for(
        "both calls under way",
        lambda: all(j["attempts"] == 1 for j in _jobs(stack, flaky)),
        stack,
    )
    plain = [
        _accepted(stack, {"prompt": f"p{i} [sim:latency=1]", "images": [JPEG]}) for i in range(4)
    ]
    # Prepared and acknowledged, not only started ("running" is set as prepare begins):
    # a prepare still in flight as Redis fills would have its acknowledgement held, and
    # while it is held the worker takes no message, so the held one would wait unseen.
    _wait_for(
        "the waiting jobs prepared",
        lambda: (
            all(j["images"][0]["image_tokens"] for j in _jobs(stack, plain))
            and _prepares_unacknowledged(client) == 0
        ),
        stack,
    )
    fillers = _fill(client)
    full_at = time.monotonic()
    # Reaches the idle prepare worker with Redis full (RENAME needs no memory), as a
    # message pushed just below the limit would.
    assert client.rename(STAGING, CeleryRedis(client).waiting_list(PREPARE_QUEUE))
    time.sleep(FULL_FOR)
    alive_when_full = {queue: queue_child(worker.popen.pid, queue) for queue in QUEUES}

    client.config_set("maxmemory", 0)
    client.delete(*[f"test:filler:{n}" for n in range(fillers)])
    freed_at = time.monotonic()
    ids = [held, *flaky, *plain]
    jobs = [stack.wait(job_id, timeout=RESUME_BOUND) for job_id in ids]
    resumed = time.monotonic() - freed_at
    print(
        f"\nRedis full for {freed_at - full_at:.0f} s ({fillers} filler keys); "
        f"{len(ids)} accepted jobs all done {resumed:.1f} s after memory was freed"
    )
    assert [job["status"] for job in jobs] == ["succeeded"] * len(ids), jobs
    assert resumed < RESUME_BOUND
    # The same three processes throughout: none ended, none was restarted.
    assert alive_when_full == children
    assert {queue: queue_child(worker.popen.pid, queue) for queue in QUEUES} == children
    assert worker.popen.poll() is None
    lines = log_lines(worker)
    assert not [
        line
        for line in lines
        if line.get("logger") == "visionq.supervisor" and line["level"] != "INFO"
    ]
    broker = [line["message"] for line in lines if line.get("logger") == "workers.transport"]
    assert any("is held here" in message for message in broker), broker
    assert any("written later" in message for message in broker), broker


def test_workers_survive_their_redis_turning_replica_for_a_while(
    stack: Stack, server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A failover seen from clients still connected to the old primary: it turns replica
    (READONLY to writes, and UNBLOCKED to a BRPOP under way), then primary again."""
    worker = process(stack, "worker")
    assert stack.run({"prompt": "before", "images": [JPEG]})["status"] == "succeeded"
    children = {queue: queue_child(worker.popen.pid, queue) for queue in QUEUES}
    ids = [
        _accepted(stack, {"prompt": f"r{i} [sim:latency=2]", "images": [JPEG]}) for i in range(4)
    ]
    other = RedisServer(tmp_path_factory.mktemp("other")).start()
    try:
        ours, theirs = redis.Redis.from_url(server.url), redis.Redis.from_url(other.url)
        theirs.replicaof("127.0.0.1", server.port)  # a copy of ours, to follow meanwhile
        _wait_for(
            "the copy in sync",
            lambda: theirs.info("replication").get("master_link_status") == "up",
            stack,
        )
        theirs.replicaof("NO", "ONE")
        ours.replicaof("127.0.0.1", other.port)
        replica_at = time.monotonic()
        time.sleep(FULL_FOR)
        ours.replicaof("NO", "ONE")
    finally:
        other.stop()
    jobs = [stack.wait(job_id, timeout=RESUME_BOUND) for job_id in ids]
    print(
        f"\nRedis a replica for {FULL_FOR:.0f} s: {len(ids)} jobs all done "
        f"{time.monotonic() - replica_at:.1f} s after it turned replica"
    )
    assert [job["status"] for job in jobs] == ["succeeded"] * len(ids), jobs
    assert {queue: queue_child(worker.popen.pid, queue) for queue in QUEUES} == children
