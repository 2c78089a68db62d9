"""visionq driven only through the official `openai` and `anthropic` Python packages, with
their base URL pointed at the stack: what a user who already has either SDK sees.

Nothing here calls visionq's HTTP API by hand; every request is the SDK's own, and every
answer is parsed by the SDK's own models, so a field of the wrong name or type, a page
that does not turn, or a results stream in the wrong form fails here.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import anthropic
import openai

from tests.support import CORPUS, Stack
from tests.support.stack import KEYS

HOPPER = CORPUS / "good" / "hopper.png"
T = TypeVar("T")


def _until(get: Callable[[], T], done: Callable[[T], bool], timeout: float = 90) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if done(value):
            return value
        assert time.monotonic() < deadline, value
        time.sleep(0.25)


def _openai(stack: Stack, tenant: str = "alice") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=KEYS[tenant], max_retries=0)


def _anthropic(stack: Stack, tenant: str = "alice") -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=f"{stack.base_url}/anthropic", api_key=KEYS[tenant], max_retries=0
    )


def _chat_line(custom_id: str, image_url: str, prompt: str = "describe") -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "mimo-v2.5",
            "max_tokens": 100,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": image_url}},
                        {"type": "text", "text": prompt},
                    ],
                }
            ],
        },
    }


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def test_the_openai_sdk_uploads_runs_and_downloads_a_batch(stack: Stack) -> None:
    client = _openai(stack)
    with HOPPER.open("rb") as fp:
        image = client.files.create(file=fp, purpose="vision")
    assert image.purpose == "vision" and image.bytes == HOPPER.stat().st_size
    data_url = "data:image/png;base64," + base64.b64encode(HOPPER.read_bytes()).decode()
    lines = [
        _chat_line("by-file", image.id),
        _chat_line("by-data-url", data_url),
        _chat_line("refused", data_url, prompt="[sim:status=400]"),
    ]
    upload = client.files.create(file=("requests.jsonl", _jsonl(lines)), purpose="batch")
    assert upload.object == "file" and upload.status == "processed"
    assert client.files.retrieve(upload.id).filename == "requests.jsonl"

    batch = client.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"project": "sdk-test"},
    )
    assert batch.status == "validating" and batch.metadata == {"project": "sdk-test"}
    done = _until(
        lambda: client.batches.retrieve(batch.id),
        lambda b: b.status in ("completed", "failed", "expired", "cancelled"),
    )
    assert done.status == "completed", done
    assert done.request_counts is not None
    counts = done.request_counts
    assert (counts.total, counts.completed, counts.failed) == (3, 2, 1)
    assert done.usage is not None and done.usage.input_tokens > 0
    assert done.output_file_id is not None and done.error_file_id is not None

    output = [
        json.loads(raw) for raw in client.files.content(done.output_file_id).text.splitlines()
    ]
    by_id = {line["custom_id"]: line for line in output}
    assert set(by_id) == {"by-file", "by-data-url"}
    for line in output:
        completion = openai.types.chat.ChatCompletion.model_validate(line["response"]["body"])
        assert completion.choices[0].message.content
    errors = [json.loads(raw) for raw in client.files.content(done.error_file_id).text.splitlines()]
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [
        ("refused", "upstream_bad_request")
    ]
    assert upload.id in {f.id for f in client.files.list(purpose="batch")}
    assert client.files.delete(upload.id).deleted is True
    try:
        client.files.retrieve(upload.id)
    except openai.NotFoundError:
        pass
    else:
        raise AssertionError("a deleted file is still there")


def test_the_openai_sdk_lists_pages_and_cancels(stack: Stack) -> None:
    client = _openai(stack, "bob")
    data_url = "data:image/png;base64," + base64.b64encode(HOPPER.read_bytes()).decode()
    slow = [_chat_line(f"slow-{n}", data_url, "[sim:latency=20]") for n in range(3)]
    upload = client.files.create(file=("slow.jsonl", _jsonl(slow)), purpose="batch")
    made = [
        client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        for _ in range(3)
    ]
    # The SDK turns the pages itself, with `after`, until `has_more` is false.
    listed = [b.id for b in client.batches.list(limit=2)]
    assert listed[:3] == [b.id for b in reversed(made)]
    first_page = client.batches.list(limit=2)
    assert len(first_page.data) == 2 and first_page.has_more

    target = made[0].id
    _until(lambda: client.batches.retrieve(target), lambda b: b.status == "in_progress")
    cancelling = client.batches.cancel(target)
    assert cancelling.status in ("cancelling", "cancelled")
    ended = _until(lambda: client.batches.retrieve(target), lambda b: b.status == "cancelled")
    assert ended.cancelled_at is not None and ended.request_counts is not None
    assert ended.request_counts.completed == 0
    for other in made[1:]:
        client.batches.cancel(other.id)
    try:
        client.batches.cancel(target)
    except openai.ConflictError:
        pass
    else:
        raise AssertionError("cancelling an ended batch is not a conflict")
    try:
        _openai(stack, "alice").batches.retrieve(target)
    except openai.NotFoundError:
        pass
    else:
        raise AssertionError("another tenant's batch is visible")


def test_the_anthropic_sdk_runs_a_message_batch(stack: Stack) -> None:
    client = _anthropic(stack)
    png = base64.b64encode(HOPPER.read_bytes()).decode()
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}}

    def request(custom_id: str, prompt: str) -> Any:
        return {
            "custom_id": custom_id,
            "params": {
                "model": "mimo-v2.5",
                "max_tokens": 100,
                "messages": [
                    {"role": "user", "content": [image, {"type": "text", "text": prompt}]}
                ],
            },
        }

    batch = client.messages.batches.create(
        requests=[request("one", "describe"), request("two", "[sim:status=400] describe")]
    )
    assert batch.type == "message_batch" and batch.processing_status == "in_progress"
    ended = _until(
        lambda: client.messages.batches.retrieve(batch.id),
        lambda b: b.processing_status == "ended",
    )
    assert ended.request_counts.succeeded == 1 and ended.request_counts.errored == 1
    assert ended.ended_at is not None and ended.results_url is not None
    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    assert results["one"].type == "succeeded"
    assert "text" in {block.type for block in results["one"].message.content}
    assert results["two"].type == "errored"
    assert results["two"].error.error.type == "invalid_request_error"

    assert batch.id in {b.id for b in client.messages.batches.list(limit=5)}
    deleted = client.messages.batches.delete(batch.id)
    assert deleted.id == batch.id and deleted.type == "message_batch_deleted"
    try:
        client.messages.batches.retrieve(batch.id)
    except anthropic.NotFoundError:
        pass
    else:
        raise AssertionError("a deleted batch is still there")


def test_the_anthropic_sdk_cancels_a_message_batch(stack: Stack) -> None:
    client = _anthropic(stack, "bob")
    png = base64.b64encode(HOPPER.read_bytes()).decode()
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}}
    slow = {
        "model": "mimo-v2.5",
        "max_tokens": 10,
        "messages": [
            {"role": "user", "content": [image, {"type": "text", "text": "[sim:latency=20] wait"}]}
        ],
    }
    batch = client.messages.batches.create(
        requests=[{"custom_id": f"r{n}", "params": slow} for n in range(3)]  # type: ignore[misc]
    )
    canceling = client.messages.batches.cancel(batch.id)
    assert canceling.processing_status in ("canceling", "ended")
    assert canceling.cancel_initiated_at is not None
    ended = _until(
        lambda: client.messages.batches.retrieve(batch.id),
        lambda b: b.processing_status == "ended",
    )
    assert ended.request_counts.canceled == 3
    assert {r.result.type for r in client.messages.batches.results(batch.id)} == {"canceled"}
