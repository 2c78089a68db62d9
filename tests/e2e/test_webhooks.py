"""Signed webhooks through the real stack, verified by a real receiver with `standardwebhooks`.

The test stack runs a compressed retry schedule (1,1,1,2,2 s), a 4 s delivery lease and a
sweeper that looks every 0.2 s.
"""

from __future__ import annotations

import json
import time

import pytest
import redis
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tests.support import CORPUS, WEBHOOK_SECRET, Receiver, Stack, bare_job, data_url
from visionq.state.jobs import JobStore

JPEG = data_url(CORPUS / "good" / "hopper.jpg")


def _submit(stack: Stack, receiver: Receiver, prompt: str = "describe") -> str:
    response = stack.submit({"prompt": prompt, "images": [JPEG], "webhook": {"url": receiver.url}})
    assert response.status_code == 202, response.text
    assert response.json()["webhook"] == {
        "url": receiver.url,
        "status": "pending",
        "attempts": 0,
        "last_status_code": None,
    }
    return response.json()["id"]


def _webhook_state(stack: Stack, job_id: str, until: set[str], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    with stack.session() as http:
        while True:
            job = http.get(f"{stack.base_url}/v1/jobs/{job_id}").json()
            if job["webhook"]["status"] in until:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"webhook still {job['webhook']}:\n{stack.logs()}")
            time.sleep(0.1)


def test_a_succeeded_job_is_delivered_signed(stack: Stack, receiver: Receiver) -> None:
    job_id = _submit(stack, receiver)
    job = _webhook_state(stack, job_id, {"delivered"})
    assert job["webhook"]["attempts"] == 1
    assert job["webhook"]["last_status_code"] == 200
    [delivery] = receiver.deliveries
    assert delivery.path == "/hooks"
    assert delivery.headers["webhook-id"] == f"msg_{job_id}"
    event = delivery.verified
    assert event["type"] == "job.succeeded"
    assert event["data"]["id"] == job_id
    assert event["data"]["status"] == "succeeded"
    assert event["data"]["result"]["content"].startswith("simulator saw 1 image(s)")
    assert event["timestamp"] == int(event["data"]["completed_at"])


def test_failed_and_canceled_jobs_send_their_event(stack: Stack, receiver: Receiver) -> None:
    failed = _submit(stack, receiver, "[sim:status=400]")
    canceled = _submit(stack, receiver, "[sim:latency=3]")
    with stack.session() as http:
        assert http.post(f"{stack.base_url}/v1/jobs/{canceled}/cancel").status_code == 200
    _webhook_state(stack, failed, {"delivered"})
    _webhook_state(stack, canceled, {"delivered"})
    types = {d.verified["data"]["id"]: d.verified["type"] for d in receiver.deliveries}
    assert types == {failed: "job.failed", canceled: "job.canceled"}


def test_errors_are_retried_with_one_event_id(stack: Stack, receiver: Receiver) -> None:
    receiver.script = [500, 503, 429]
    job_id = _submit(stack, receiver)
    job = _webhook_state(stack, job_id, {"delivered"})
    assert job["webhook"]["attempts"] == 4
    assert len(receiver.deliveries) == 4
    assert {d.headers["webhook-id"] for d in receiver.deliveries} == {f"msg_{job_id}"}
    assert all(not isinstance(d.verified, Exception) for d in receiver.deliveries)


def test_a_redirect_is_a_failure_and_never_followed(stack: Stack, receiver: Receiver) -> None:
    receiver.script = [302]
    job_id = _submit(stack, receiver)
    job = _webhook_state(stack, job_id, {"delivered"})
    assert [d.path for d in receiver.deliveries] == ["/hooks", "/hooks"]
    assert job["webhook"]["attempts"] == 2


def test_410_stops_at_once(stack: Stack, receiver: Receiver) -> None:
    receiver.script = [410]
    job_id = _submit(stack, receiver)
    job = _webhook_state(stack, job_id, {"disabled", "delivered", "failed"})
    assert job["webhook"] == {
        "url": receiver.url,
        "status": "disabled",
        "attempts": 1,
        "last_status_code": 410,
    }
    time.sleep(1.5)
    assert len(receiver.deliveries) == 1


def test_giving_up_after_the_schedule(stack: Stack, receiver: Receiver) -> None:
    receiver.script = [500] * 20
    job_id = _submit(stack, receiver)
    job = _webhook_state(stack, job_id, {"failed", "delivered"}, timeout=40)
    assert job["webhook"]["status"] == "failed"
    assert job["webhook"]["attempts"] == 6  # the first try and five retries (1,1,1,2,2)
    assert job["status"] == "succeeded"  # the result itself stays pollable


def test_a_tampered_body_fails_verification(stack: Stack, receiver: Receiver) -> None:
    job_id = _submit(stack, receiver)
    _webhook_state(stack, job_id, {"delivered"})
    [delivery] = receiver.deliveries
    event = json.loads(delivery.body)
    event["data"]["result"]["content"] = "something else"
    with pytest.raises(WebhookVerificationError):
        Webhook(WEBHOOK_SECRET).verify(json.dumps(event).encode(), delivery.headers)


def test_redeliver_sends_the_same_event_again(stack: Stack, receiver: Receiver) -> None:
    job_id = _submit(stack, receiver)
    _webhook_state(stack, job_id, {"delivered"})
    with stack.session() as http:
        response = http.post(f"{stack.base_url}/v1/jobs/{job_id}/webhook/redeliver")
    assert response.status_code == 202
    deadline = time.monotonic() + 10
    while len(receiver.deliveries) < 2:
        assert time.monotonic() < deadline, stack.logs()
        time.sleep(0.1)
    first, second = receiver.deliveries
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == f"msg_{job_id}"
    assert second.verified["type"] == "job.succeeded"


def test_redeliver_needs_a_finished_job_with_a_webhook(stack: Stack, receiver: Receiver) -> None:
    plain = stack.run({"prompt": "x", "images": [JPEG]})
    running = _submit(stack, receiver, "[sim:latency=2]")
    with stack.session() as http:
        no_hook = http.post(f"{stack.base_url}/v1/jobs/{plain['id']}/webhook/redeliver")
        unfinished = http.post(f"{stack.base_url}/v1/jobs/{running}/webhook/redeliver")
    # Two different refusals, each saying which it is.
    for response in (no_hook, unfinished):
        assert response.status_code == 409
        assert (response.json()["error"]["type"], response.json()["error"]["param"]) == (
            "conflict",
            "id",
        )
    assert "has no webhook" in no_hook.json()["error"]["message"]
    assert "is not finished" in unfinished.json()["error"]["message"]
    _webhook_state(stack, running, {"delivered"})


def test_refused_webhook_urls_are_400_at_submit(stack: Stack) -> None:
    for url in ("ftp://example.com/hook", "http:///nohost", "http://name.invalid/hook"):
        response = stack.submit({"prompt": "x", "images": [JPEG], "webhook": {"url": url}})
        assert response.status_code == 400, url
        assert response.json()["error"]["param"] == "webhook.url"


def test_a_job_finished_by_anyone_is_delivered(stack: Stack, receiver: Receiver) -> None:
    """Finishing puts the event in the outbox in the same step: no task has to remember it."""
    jobs = JobStore(redis.Redis.from_url(stack.redis_url), ttl=600, queued_grace=300)
    record = bare_job(jobs, tenant="alice", webhook_url=receiver.url)
    jobs.succeed(
        record.id, {"content": "finished outside the pipeline", "usage": {}, "response": {}}
    )
    _webhook_state(stack, record.id, {"delivered"})
    assert (
        receiver.deliveries[0].verified["data"]["result"]["content"]
        == "finished outside the pipeline"
    )


def test_a_worker_killed_mid_delivery_still_delivers(stack: Stack, receiver: Receiver) -> None:
    receiver.hold_seconds = 2.0  # the first attempt is in flight when the worker dies
    job_id = _submit(stack, receiver)
    deadline = time.monotonic() + 15
    while not receiver.deliveries:
        assert time.monotonic() < deadline, stack.logs()
        time.sleep(0.02)
    stack.kill_and_replace("worker-webhooks")
    receiver.hold_seconds = 0.0
    job = _webhook_state(stack, job_id, {"delivered"}, timeout=40)
    assert job["webhook"]["status"] == "delivered"
    assert {d.headers["webhook-id"] for d in receiver.deliveries} == {f"msg_{job_id}"}
    assert len(receiver.deliveries) >= 2  # at least once: the killed attempt, then the retry
