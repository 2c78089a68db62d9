"""Batches end to end through the real stack, over HTTP as a client without an SDK sees
them: validation with line numbers, every line run as a job, the result files, cancel,
lists, tenants and the batch's webhook. tests/e2e/test_sdks.py drives the same through
the official openai and anthropic packages."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.support import CORPUS, Stack, data_url
from tests.support.webhooks import Receiver
from visionq.settings import Settings

HOPPER = data_url(CORPUS / "good" / "hopper.png")
ENDED = ("completed", "failed", "expired", "cancelled")


def line(
    custom_id: str, prompt: str = "describe", url: str = HOPPER, **body: Any
) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "mimo-v2.5",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": url}},
                        {"type": "text", "text": prompt},
                    ],
                }
            ],
            **body,
        },
    }


def upload(stack: Stack, lines: list[Any], tenant: str = "alice") -> str:
    data = b"".join(
        (item if isinstance(item, bytes) else json.dumps(item).encode()) + b"\n" for item in lines
    )
    with stack.session(tenant) as http:
        answer = http.post(
            f"{stack.base_url}/v1/files",
            files={"file": ("input.jsonl", data, "application/jsonl")},
            data={"purpose": "batch"},
            timeout=30,
        )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


def create(stack: Stack, file_id: str, tenant: str = "alice", **extra: Any) -> dict[str, Any]:
    with stack.session(tenant) as http:
        answer = http.post(
            f"{stack.base_url}/v1/batches",
            json={
                "input_file_id": file_id,
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
                **extra,
            },
            timeout=30,
        )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def wait_ended(
    stack: Stack, batch_id: str, tenant: str = "alice", timeout: float = 90
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with stack.session(tenant) as http:
        while True:
            batch = http.get(f"{stack.base_url}/v1/batches/{batch_id}", timeout=30).json()
            if batch["status"] in ENDED:
                return dict(batch)
            if time.monotonic() > deadline:
                raise AssertionError(f"batch still {batch['status']}: {batch}\n{stack.logs()}")
            time.sleep(0.2)


def content(stack: Stack, file_id: str, tenant: str = "alice") -> list[dict[str, Any]]:
    with stack.session(tenant) as http:
        answer = http.get(f"{stack.base_url}/v1/files/{file_id}/content", timeout=30)
    assert answer.status_code == 200, answer.text
    return [json.loads(raw) for raw in answer.content.splitlines() if raw.strip()]


def test_every_line_runs_as_a_job_and_lands_in_its_file(stack: Stack, image_server: str) -> None:
    file_id = upload(
        stack,
        [
            line("by-data-url"),
            line("by-url", url=f"{image_server}/good/hopper.jpg"),
            line("broken-image", url=f"{image_server}/bad/broken.png"),
            line("upstream-refuses", prompt="[sim:status=400]"),
            line("old-field-name", max_tokens=50),
        ],
    )
    created = create(stack, file_id, metadata={"run": "1"})
    assert created["status"] == "validating" and created["object"] == "batch"
    assert created["input_file_id"] == file_id and created["metadata"] == {"run": "1"}
    batch = wait_ended(stack, created["id"])
    assert batch["status"] == "completed", batch
    assert batch["request_counts"] == {"total": 5, "completed": 3, "failed": 2, "canceled": 0}
    for stamp in ("created_at", "in_progress_at", "finalizing_at", "completed_at"):
        assert isinstance(batch[stamp], int), stamp
    assert batch["usage"]["input_tokens"] > 0 and batch["usage"]["output_tokens"] > 0

    output = content(stack, batch["output_file_id"])
    assert [o["custom_id"] for o in output] == ["by-data-url", "by-url", "old-field-name"]
    for item in output:
        assert item["id"].startswith("batch_req_") and item["error"] is None
        assert item["response"]["status_code"] == 200
        assert item["response"]["body"]["object"] == "chat.completion"
    errors = {e["custom_id"]: e for e in content(stack, batch["error_file_id"])}
    assert errors["broken-image"]["error"]["code"] == "invalid_image"
    assert errors["broken-image"]["response"] is None
    refused = errors["upstream-refuses"]
    assert refused["error"]["code"] == "upstream_bad_request"
    assert refused["response"]["status_code"] == 400

    # A line's job is a job too, named by the output's request_id.
    with stack.session() as http:
        job = http.get(
            f"{stack.base_url}/v1/jobs/{output[0]['response']['request_id']}", timeout=30
        ).json()
    assert (job["batch_id"], job["custom_id"], job["status"]) == (
        batch["id"],
        "by-data-url",
        "succeeded",
    )


def test_a_file_that_breaks_the_rules_fails_with_line_numbers_and_sends_nothing(
    stack: Stack,
) -> None:
    before = stack.upstream_calls()
    file_id = upload(
        stack,
        [
            line("ok"),
            b"this is not JSON",
            line("ok"),
            {**line("wrong-url"), "url": "/v1/embeddings"},
            line("bad-model", model="gpt-4o"),
            line("bad-temperature", temperature=7),
        ],
    )
    batch = wait_ended(stack, create(stack, file_id)["id"])
    assert batch["status"] == "failed" and isinstance(batch["failed_at"], int)
    found = [(e["line"], e["code"], e["param"]) for e in batch["errors"]["data"]]
    assert found == [
        (2, "invalid_json_line", None),
        (3, "duplicate_custom_id", "custom_id"),
        (4, "invalid_url", "url"),
        (5, "invalid_request", "body.model"),
        (6, "invalid_request", "body.temperature"),
    ]
    assert batch["output_file_id"] is None and batch["error_file_id"] is None
    assert stack.upstream_calls() == before


def test_cancel_stops_lines_not_yet_sent_and_keeps_finished_ones(stack: Stack) -> None:
    lines = [line("fast-0"), line("fast-1")] + [
        line(f"slow-{n}", prompt="[sim:latency=30]") for n in range(3)
    ]
    batch = create(stack, upload(stack, lines))
    deadline = time.monotonic() + 60
    with stack.session() as http:
        while True:
            seen = http.get(f"{stack.base_url}/v1/batches/{batch['id']}", timeout=30).json()
            if seen["request_counts"]["completed"] >= 2:
                break
            assert time.monotonic() < deadline, seen
            time.sleep(0.2)
        answer = http.post(f"{stack.base_url}/v1/batches/{batch['id']}/cancel", timeout=30)
        assert answer.status_code == 200 and answer.json()["status"] == "cancelling"
        assert isinstance(answer.json()["cancelling_at"], int)
    ended = wait_ended(stack, batch["id"])
    assert ended["status"] == "cancelled" and isinstance(ended["cancelled_at"], int)
    assert ended["request_counts"] == {"total": 5, "completed": 2, "failed": 0, "canceled": 3}
    assert [o["custom_id"] for o in content(stack, ended["output_file_id"])] == ["fast-0", "fast-1"]
    stopped = content(stack, ended["error_file_id"])
    assert {e["custom_id"] for e in stopped} == {"slow-0", "slow-1", "slow-2"}
    assert {e["error"]["code"] for e in stopped} == {"batch_cancelled"}
    with stack.session() as http:
        again = http.post(f"{stack.base_url}/v1/batches/{batch['id']}/cancel", timeout=30)
    assert again.status_code == 409 and again.json()["error"]["type"] == "conflict"


def test_batches_are_listed_newest_first_and_only_to_their_tenant(stack: Stack) -> None:
    file_id = upload(stack, [line("x")], tenant="bob")
    ids = [create(stack, file_id, tenant="bob")["id"] for _ in range(3)]
    with stack.session("bob") as http:
        first = http.get(f"{stack.base_url}/v1/batches", params={"limit": 2}, timeout=30).json()
        assert [b["id"] for b in first["data"]] == ids[::-1][:2]
        assert first["has_more"] is True and first["object"] == "list"
        rest = http.get(
            f"{stack.base_url}/v1/batches",
            params={"limit": 2, "after": first["last_id"]},
            timeout=30,
        ).json()
        assert rest["data"][0]["id"] == ids[0]
    with stack.session("alice") as http:
        other = http.get(f"{stack.base_url}/v1/batches/{ids[0]}", timeout=30)
        assert other.status_code == 404 and other.json()["error"]["type"] == "not_found"
        assert ids[0] not in {
            b["id"] for b in http.get(f"{stack.base_url}/v1/batches", timeout=30).json()["data"]
        }
        # Another tenant's file cannot be a batch's input either.
        refused = http.post(
            f"{stack.base_url}/v1/batches",
            json={
                "input_file_id": file_id,
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
            timeout=30,
        )
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "input_file_id"


def test_bad_batch_requests_are_refused_with_the_field_named(stack: Stack) -> None:
    file_id = upload(stack, [line("x")])
    cases = [
        ({"endpoint": "/v1/embeddings"}, "endpoint"),
        ({"completion_window": "48h"}, "completion_window"),
        ({"input_file_id": "file-nope"}, "input_file_id"),
        ({"surprise": 1}, "surprise"),
    ]
    for change, param in cases:
        body = {
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            **change,
        }
        with stack.session() as http:
            answer = http.post(f"{stack.base_url}/v1/batches", json=body, timeout=30)
        assert answer.status_code == 400, (change, answer.text)
        assert answer.json()["error"]["param"] == param


def test_an_ended_batch_sends_its_signed_event(stack: Stack, receiver: Receiver) -> None:
    file_id = upload(stack, [line("a"), line("b")])
    batch = create(stack, file_id, webhook={"url": receiver.url})
    ended = wait_ended(stack, batch["id"])
    deadline = time.monotonic() + 30
    while not receiver.deliveries:
        assert time.monotonic() < deadline, stack.logs()
        time.sleep(0.1)
    [delivery] = receiver.deliveries
    assert delivery.headers["webhook-id"] == f"msg_{batch['id']}"
    event = delivery.verified
    assert event["type"] == "batch.completed"
    assert event["data"]["id"] == batch["id"]
    assert event["data"]["request_counts"] == ended["request_counts"]
    assert event["timestamp"] == ended["completed_at"]


def test_files_and_jobs_of_another_form_stay_apart(stack: Stack) -> None:
    """An OpenAI batch is not an Anthropic one: the other form's routes do not know it."""
    batch = create(stack, upload(stack, [line("x")]))
    with stack.session() as http:
        answer = http.get(
            f"{stack.base_url}/anthropic/v1/messages/batches/{batch['id']}", timeout=30
        )
    assert answer.status_code == 404


def test_a_batch_file_over_200_mb_is_413_and_stores_nothing(stack: Stack, tmp_path: Path) -> None:
    big = tmp_path / "big.jsonl"
    with big.open("wb") as out:
        out.write(json.dumps(line("c1")).encode() + b"\n")
        out.truncate(Settings().max_request_bytes + 1)
    bodies = stack.storage_root / "bodies"

    def stored_files() -> set[Path]:
        return set(bodies.rglob("file-*")) if bodies.exists() else set()

    before = stored_files()
    with stack.session() as http, big.open("rb") as fp:
        answer = http.post(
            f"{stack.base_url}/v1/files",
            files={"file": ("big.jsonl", fp, "application/jsonl")},
            data={"purpose": "batch"},
            timeout=120,
        )
        listed = http.get(f"{stack.base_url}/v1/files", params={"purpose": "batch"}).json()
    assert answer.status_code == 413, answer.text
    assert answer.json()["error"]["type"] == "payload_too_large"
    assert "big.jsonl" not in {f["filename"] for f in listed["data"]}
    # Only earlier tests' batches may have written files meanwhile (their results).
    with stack.session() as http:
        for new in stored_files() - before:
            record = http.get(f"{stack.base_url}/v1/files/{new.name}", timeout=10).json()
            assert record.get("purpose") == "batch_output", record
