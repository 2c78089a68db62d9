"""The client's parts that need no server: webhook verification against the server's own
signer, tolerant parsing of what a newer server may send, and the CLI's output pieces."""

from __future__ import annotations

import base64
import dataclasses
import io
import time
from typing import Any, get_args

import pytest
import requests

from service.jobs_api import MAX_LIST_LIMIT, MAX_WAIT_SECONDS
from service.openapi import openapi_document
from visionq import client as sdk
from visionq.client import (
    Client,
    Job,
    TokenCount,
    Unreachable,
    WebhookVerificationFailed,
    verify_webhook,
)
from visionq.client.cli import Progress, job_table
from visionq.models import TERMINAL_STATUSES, JobStatus
from visionq.webhooks import Signer, event_body, event_id

SECRET = "whsec_" + base64.b64encode(b"the current secret, 32 bytes ok").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"the previous secret, also fine").decode()
JOB: dict[str, Any] = {
    "id": "job_1",
    "object": "job",
    "status": "succeeded",
    "model": "mimo-v2.5",
    "api": "openai",
    "created_at": 1764000000.5,
    "started_at": 1764000001.0,
    "completed_at": 1764000002.25,
    "images": [{"index": 0, "source": "upload", "format": "png", "image_tokens": 16}],
    "usage_estimate": {"image_tokens": 16},
    "result": {"content": "an answer", "usage": {}, "response": {}},
    "error": None,
    "attempts": 1,
    "webhook": {"url": "https://x.example/h", "status": "pending", "attempts": 0},
    "metadata": {"order": "42"},
}


def _signed(signer: Signer, *, at: float | None = None) -> tuple[bytes, dict[str, str]]:
    body = event_body(JOB)
    return body, signer.headers(event_id(JOB["id"]), body, now=time.time() if at is None else at)


def test_an_event_signed_by_the_server_verifies_into_a_typed_event() -> None:
    body, headers = _signed(Signer(SECRET))
    event = verify_webhook(body, headers, SECRET)
    assert (event.id, event.type, event.timestamp) == ("msg_job_1", "job.succeeded", 1764000002)
    assert event.job.content == "an answer" and event.job.finished


def test_rotation_on_either_side_verifies() -> None:
    # The server signs with both secrets during its overlap; a receiver knows one or both.
    body, headers = _signed(Signer(SECRET, previous=OLD_SECRET, previous_until=time.time() + 60))
    assert len(headers["webhook-signature"].split()) == 2
    for secrets in (SECRET, OLD_SECRET, [OLD_SECRET, SECRET]):
        assert verify_webhook(body, headers, secrets).job.id == "job_1"
    # A receiver that already has the new secret, but still accepts the old one.
    body, headers = _signed(Signer(OLD_SECRET))
    assert verify_webhook(body, headers, [SECRET, OLD_SECRET]).job.id == "job_1"
    with pytest.raises(WebhookVerificationFailed, match="no signature matches"):
        verify_webhook(body, headers, SECRET)


def test_a_stale_or_future_timestamp_is_refused_unless_tolerated() -> None:
    for at, word in ((time.time() - 1000, "old"), (time.time() + 1000, "ahead")):
        body, headers = _signed(Signer(SECRET), at=at)
        with pytest.raises(WebhookVerificationFailed, match=word):
            verify_webhook(body, headers, SECRET)
        assert verify_webhook(body, headers, SECRET, tolerance=2000).job.id == "job_1"


def test_tampering_and_missing_or_malformed_headers_are_refused() -> None:
    body, headers = _signed(Signer(SECRET))
    bad: list[tuple[bytes, dict[str, str]]] = [
        (body.replace(b"an answer", b"another answer"), headers),
        (body, {k: v for k, v in headers.items() if k != "webhook-signature"}),
        (body, headers | {"webhook-timestamp": "yesterday"}),
        (body, headers | {"webhook-signature": headers["webhook-signature"].replace("v1,", "v2,")}),
        (body, headers | {"webhook-id": "msg_job_2"}),
    ]
    for tampered_body, tampered_headers in bad:
        with pytest.raises(WebhookVerificationFailed):
            verify_webhook(tampered_body, tampered_headers, SECRET)
    upper = {k.upper(): v for k, v in headers.items()}  # header names are case-insensitive
    assert verify_webhook(body.decode(), upper, SECRET).job.id == "job_1"


def test_fields_a_newer_server_adds_are_ignored_and_kept_in_raw() -> None:
    newer = JOB | {
        "priority": "high",
        "raw": "not ours",
        "images": [JOB["images"][0] | {"colorspace": "srgb"}],
        "error": {"type": "x", "message": "y", "hint": "z"},
    }
    job = Job.from_dict(newer)
    assert job.raw["priority"] == "high" and job.raw["raw"] == "not ours"
    assert job.images[0].image_tokens == 16 and job.error is not None and job.error.type == "x"
    assert job.webhook is not None and job.webhook.last_status_code is None
    count = TokenCount.from_dict(
        {
            "images": [
                {"index": 0, "format": "png", "width": 8, "height": 8, "image_tokens": 4, "x": 1}
            ],
            "image_tokens": 4,
            "model": "new",
        }
    )
    assert count.images[0].image_tokens == count.image_tokens == 4


def test_the_job_table_aligns_its_columns() -> None:
    queued = Job.from_dict(
        JOB
        | {"id": "job_22", "status": "queued", "images": []}
        | {"usage_estimate": {"image_tokens": None}, "result": None}
    )
    lines = job_table([Job.from_dict(JOB), queued]).splitlines()
    assert lines[0].split() == ["ID", "STATUS", "MODEL", "CREATED", "IMAGES", "TOKENS"]
    assert lines[1].split()[:2] + lines[1].split()[-2:] == ["job_1", "succeeded", "1", "16"]
    assert lines[2].split()[:2] + lines[2].split()[-2:] == ["job_22", "queued", "0", "-"]
    assert lines[0].index("STATUS") == lines[1].index("succeeded") == lines[2].index("queued")


def test_progress_writes_nothing_when_the_stream_is_not_a_terminal() -> None:
    stream = io.StringIO()
    with Progress(stream, interval=0.01) as progress:
        progress.show("job_1 running")
        time.sleep(0.05)
    assert not progress.enabled and stream.getvalue() == ""


def test_the_sdk_constants_and_result_fields_match_the_server() -> None:
    # The SDK repeats them so that it ships without the server; this keeps the two in step.
    assert get_args(JobStatus) == sdk.JOB_STATUSES
    assert sdk.TERMINAL_STATUSES == TERMINAL_STATUSES
    assert sdk.MAX_WAIT_SECONDS == MAX_WAIT_SECONDS
    assert sdk.MAX_PAGE_SIZE == MAX_LIST_LIMIT
    document = openapi_document()
    schemas = document["components"]["schemas"]
    assert tuple(schemas["Job"]["properties"]["status"]["enum"]) == sdk.JOB_STATUSES
    wait = next(
        p
        for p in document["paths"]["/v1/jobs/{job_id}"]["get"]["parameters"]
        if p["name"] == "wait"
    )
    assert wait["schema"]["maximum"] == sdk.MAX_WAIT_SECONDS
    limit = next(
        p for p in document["paths"]["/v1/jobs"]["get"]["parameters"] if p["name"] == "limit"
    )
    assert limit["schema"]["maximum"] == sdk.MAX_PAGE_SIZE
    pairs = {
        sdk.Job: "Job",
        sdk.JobImage: "JobImage",
        sdk.JobFailure: "ErrorBody",
        sdk.Result: "Result",
        sdk.WebhookState: "WebhookState",
        sdk.JobPage: "JobList",
        sdk.TokenCount: "TokenCount",
        sdk.ImageCount: "TokenCountImage",
    }
    for ours, theirs in pairs.items():
        names = {f.name for f in dataclasses.fields(ours)} - {"raw"}
        assert names == set(schemas[theirs]["properties"]) - {"object"}, ours.__name__


def _answering(monkeypatch: pytest.MonkeyPatch, client: Client, status: int, body: bytes) -> None:
    def request(method: str, url: str, **kwargs: Any) -> requests.Response:
        response = requests.Response()
        response.status_code, response._content = status, body
        return response

    monkeypatch.setattr(client._session, "request", request)


@pytest.mark.parametrize("body", [b"{}", b"[]", b"null", b'{"id": "job_1", "images": [3]}'])
def test_a_2xx_answer_not_shaped_like_a_job_is_unreachable(
    monkeypatch: pytest.MonkeyPatch, body: bytes
) -> None:
    with Client("http://api.invalid") as client:
        _answering(monkeypatch, client, 200, body)
        for call in (lambda: client.get("job_1"), lambda: client.cancel("job_1")):
            with pytest.raises(Unreachable, match="not the API"):
                call()
        with pytest.raises(Unreachable, match="not the API"):
            client.list_page()
        with pytest.raises(Unreachable, match="not the API"):
            client.count_tokens(["data:image/png;base64,AA=="])


def test_a_204_where_a_job_was_due_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    with Client("http://api.invalid") as client:
        _answering(monkeypatch, client, 204, b"")
        client.delete("job_1")
        with pytest.raises(Unreachable, match="not the API"):
            client.get("job_1")


def test_a_time_out_names_the_limit_that_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    with Client("http://api.invalid", timeout=5) as client:

        def request(method: str, url: str, **kwargs: Any) -> requests.Response:
            raise requests.Timeout

        monkeypatch.setattr(client._session, "request", request)
        with pytest.raises(Unreachable, match=r"within 35s"):
            client.get("job_1", wait=30)
        with pytest.raises(Unreachable, match=r"within 5s"):
            client.get("job_1")


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"type": "job.succeeded"}', b'{"type": "x", "timestamp": 1, "data": 3}'],
)
def test_a_signed_body_that_is_not_an_event_is_refused(body: bytes) -> None:
    headers = Signer(SECRET).headers(event_id("job_1"), body, now=time.time())
    with pytest.raises(WebhookVerificationFailed, match="not a webhook event"):
        verify_webhook(body, headers, SECRET)


def test_job_paths_quote_the_whole_id(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    with Client("http://api.invalid") as client:

        def request(method: str, url: str, **kwargs: Any) -> requests.Response:
            seen.append(url)
            response = requests.Response()
            response.status_code, response._content = 200, b"{}"
            return response

        monkeypatch.setattr(client._session, "request", request)
        with pytest.raises(Unreachable):
            client.redeliver_webhook("../x?y")
    assert seen == ["http://api.invalid/v1/jobs/..%2Fx%3Fy/webhook/redeliver"]
