"""`visionq.Client` against the real stack: every call, its typed results and its errors."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from itertools import islice

import pytest

from tests.support import CORPUS, KEYS, WEBHOOK_SECRET, Receiver, Stack, data_url
from visionq import Client
from visionq.client import (
    ApiError,
    Job,
    JobImage,
    TokenCount,
    Unreachable,
    WaitTimeout,
    WebhookVerificationFailed,
    verify_webhook,
)
from visionq.dev.ports import free_port

JPEG = CORPUS / "good" / "hopper.jpg"
PNG = CORPUS / "good" / "hopper.png"
OTHER_SECRET = "whsec_" + base64.b64encode(b"a secret the server does not use").decode()


@pytest.fixture
def client(stack: Stack) -> Iterator[Client]:
    with Client(stack.base_url, KEYS["alice"]) as http:
        yield http


def test_uploads_are_submitted_waited_for_and_typed(client: Client) -> None:
    job = client.submit([JPEG, str(PNG)], "describe both", metadata={"order": "42"})
    assert isinstance(job, Job)
    assert job.status in ("queued", "running", "succeeded")
    assert [image.source for image in job.images] == ["upload", "upload"]
    done = client.wait(job.id, timeout=60)
    assert done.status == "succeeded" and done.finished
    assert done.content is not None
    assert done.content.startswith("simulator saw 2 image(s): #1 jpeg")
    assert "text: describe both" in done.content
    assert done.metadata == {"order": "42"}
    assert all(isinstance(i, JobImage) and i.image_tokens for i in done.images)
    assert done.usage_estimate["image_tokens"] == sum(i.image_tokens or 0 for i in done.images)
    assert done.raw["id"] == job.id
    assert client.get(job.id) == done


def test_urls_and_data_urls_are_sent_as_they_are(client: Client, image_server: str) -> None:
    job = client.submit([f"{image_server}/good/hopper.png", data_url(JPEG)], "compare")
    assert [image.source for image in job.images] == ["url", "data_url"]
    done = client.wait(job.id, timeout=60)
    assert done.status == "succeeded", done.error
    assert done.content is not None and "#1 png" in done.content and "#2 jpeg" in done.content


def test_the_messages_form_refers_to_uploads(client: Client) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data_url(PNG)}},
                {"type": "image_url", "image_url": {"url": "upload:0"}},
                {"type": "text", "text": "which is which"},
            ],
        },
    ]
    job = client.submit([JPEG], messages=messages, max_completion_tokens=64)
    done = client.wait(job.id, timeout=60)
    assert done.status == "succeeded", done.error
    assert done.content is not None
    assert done.content.startswith("simulator saw 2 image(s): #1 png")
    assert "#2 jpeg" in done.content
    with pytest.raises(ValueError, match="messages"):
        client.submit(["https://example.com/a.png"], messages=messages)


def test_the_same_idempotency_key_gives_the_same_job(client: Client) -> None:
    key = f"client-test-{time.monotonic_ns()}"
    first = client.submit([data_url(JPEG)], "once", idempotency_key=key)
    again = client.submit([data_url(JPEG)], "once", idempotency_key=key)
    assert again.id == first.id
    with pytest.raises(ApiError) as refused:
        client.submit([data_url(JPEG)], "a different body", idempotency_key=key)
    assert (refused.value.status, refused.value.type) == (409, "conflict")


def test_wait_reports_each_status_change_once(client: Client) -> None:
    job = client.submit([data_url(JPEG)], "[sim:latency=3]")
    updates: list[Job] = []
    done = client.wait(job.id, timeout=60, on_update=updates.append)
    statuses = [update.status for update in updates]
    assert statuses[-1] == "succeeded" and done.status == "succeeded"
    assert len(set(statuses)) == len(statuses)
    assert statuses == [s for s in ("queued", "running", "succeeded") if s in statuses]


def test_wait_gives_up_with_the_last_state(client: Client) -> None:
    job = client.submit([data_url(JPEG)], "[sim:latency=15]")
    with pytest.raises(WaitTimeout) as timed_out:
        client.wait(job.id, timeout=0.5)
    [last] = timed_out.value.jobs
    assert last.id == job.id and not last.finished
    client.cancel(job.id)


def test_list_pages_through_next_cursors(stack: Stack) -> None:
    with Client(stack.base_url, KEYS["bob"]) as bob:
        ids = {bob.submit([data_url(JPEG)], f"page {n}").id for n in range(5)}
        for job_id in ids:
            bob.wait(job_id, timeout=60)
        first = bob.list_page(limit=2)
        assert len(first.data) == 2 and first.has_more and first.next
        listed = list(islice(bob.list(page_size=2), 5))
        assert {job.id for job in listed} == ids
        assert [job.created_at for job in listed] == sorted(
            (job.created_at for job in listed), reverse=True
        )
        assert len(list(bob.list(limit=3, page_size=2))) == 3
        assert {job.status for job in bob.list("succeeded", limit=5)} == {"succeeded"}
        with pytest.raises(ApiError) as refused:
            next(bob.list("nonsense"))
        assert (refused.value.status, refused.value.param) == (400, "status")


def test_cancel_is_repeatable_and_a_finished_job_is_a_conflict(client: Client) -> None:
    job = client.submit([data_url(JPEG)], "[sim:latency=15]")
    canceled = client.cancel(job.id)
    assert canceled.status == "canceled"
    assert canceled.error is not None and canceled.error.type == "canceled"
    assert client.cancel(job.id).status == "canceled"
    done = client.wait(client.submit([data_url(JPEG)], "quick").id, timeout=60)
    with pytest.raises(ApiError) as refused:
        client.cancel(done.id)
    assert (refused.value.status, refused.value.type) == (409, "conflict")


def test_a_deleted_job_is_not_found(client: Client) -> None:
    job = client.wait(client.submit([data_url(JPEG)], "short-lived").id, timeout=60)
    assert client.delete(job.id) is None
    with pytest.raises(ApiError) as missing:
        client.get(job.id)
    assert (missing.value.status, missing.value.type) == (404, "not_found")


def test_count_tokens_matches_the_jobs_images(client: Client) -> None:
    images = [JPEG, data_url(PNG)]
    count = client.count_tokens(images)
    assert isinstance(count, TokenCount)
    job = client.wait(client.submit(images, "count").id, timeout=60)
    assert [i.image_tokens for i in count.images] == [i.image_tokens for i in job.images]
    assert [(i.width, i.height) for i in count.images] == [(i.width, i.height) for i in job.images]
    assert count.image_tokens == job.usage_estimate["image_tokens"] > 0


def test_a_refused_request_is_an_api_error(client: Client) -> None:
    with pytest.raises(ApiError) as refused:
        client.submit([CORPUS / "other" / "hopper.tif"], "x")
    assert (refused.value.status, refused.value.type) == (415, "unsupported_media_type")
    assert str(refused.value).startswith("415 unsupported_media_type: ")


def test_a_wrong_key_is_401(stack: Stack) -> None:
    with Client(stack.base_url, "not-a-key") as stranger, pytest.raises(ApiError) as refused:
        stranger.get("job_anything")
    assert (refused.value.status, refused.value.type) == (401, "unauthorized")


def test_no_service_is_unreachable_not_an_api_error() -> None:
    nowhere = Client(f"http://127.0.0.1:{free_port()}", "k", timeout=5)
    with nowhere, pytest.raises(Unreachable) as unreachable:
        nowhere.get("job_anything")
    assert not isinstance(unreachable.value, ApiError)


def test_the_environment_names_server_and_key(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VISIONQ_URL", stack.base_url)
    monkeypatch.setenv("VISIONQ_KEY", KEYS["alice"])
    with Client() as from_env:
        assert from_env.base_url == stack.base_url
        assert all(job.id.startswith("job_") for job in from_env.list(limit=1))
        assert KEYS["alice"] not in repr(from_env)


def _deliveries(receiver: Receiver, count: int, stack: Stack) -> None:
    deadline = time.monotonic() + 30
    while len(receiver.deliveries) < count:
        assert time.monotonic() < deadline, stack.logs()
        time.sleep(0.1)


def test_a_delivered_webhook_verifies_and_a_tampered_one_does_not(
    stack: Stack, client: Client, receiver: Receiver
) -> None:
    job = client.submit([data_url(JPEG)], "hook", webhook_url=receiver.url)
    assert job.webhook is not None and job.webhook.url == receiver.url
    client.wait(job.id, timeout=60)
    _deliveries(receiver, 1, stack)
    delivery = receiver.deliveries[0]

    event = verify_webhook(delivery.body, delivery.headers, WEBHOOK_SECRET)
    assert (event.type, event.id, event.job.id) == ("job.succeeded", f"msg_{job.id}", job.id)
    assert event.job.status == "succeeded" and event.timestamp == int(event.job.completed_at or 0)
    rotated = verify_webhook(delivery.body, delivery.headers, [OTHER_SECRET, WEBHOOK_SECRET])
    assert rotated.job == event.job

    with pytest.raises(WebhookVerificationFailed):
        verify_webhook(delivery.body, delivery.headers, OTHER_SECRET)
    tampered = delivery.body.replace(b'"succeeded"', b'"failed"', 1)
    with pytest.raises(WebhookVerificationFailed):
        verify_webhook(tampered, delivery.headers, WEBHOOK_SECRET)

    assert client.redeliver_webhook(job.id).id == job.id
    _deliveries(receiver, 2, stack)
    again = verify_webhook(
        receiver.deliveries[1].body, receiver.deliveries[1].headers, WEBHOOK_SECRET
    )
    assert again.id == event.id and again.job.id == job.id
