"""The batch step called directly, without Celery: a window of lines at a time, and the
end of a batch whose completion window passed, on a real Redis and file storage."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import BinaryIO

import pytest
import redis

from tests.support import CORPUS, data_url
from visionq import pipeline
from visionq.batches import Batches
from visionq.intake import Intake
from visionq.runtime import Runtime
from visionq.settings import Settings
from visionq.state import keys

LINES = 7


def _line(n: int) -> bytes:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image_url",
                        "image_url": {"url": data_url(CORPUS / "good" / "hopper.png")},
                    },
                    {"type": "text", "text": f"line {n}"},
                ],
            }
        ]
    }
    line = {"custom_id": f"c{n}", "method": "POST", "url": "/v1/chat/completions", "body": body}
    return json.dumps(line).encode() + b"\n"


@pytest.fixture
def rt(redis_url: str, tmp_path: Path) -> Runtime:
    settings = Settings(redis_url=redis_url, storage_url=f"file://{tmp_path}", batch_window=4)
    return Runtime.from_settings(settings)


def _batch(rt: Runtime) -> str:
    def write(out: BinaryIO) -> None:
        for n in range(1, LINES + 1):
            out.write(_line(n))

    upload = rt.files.write_input(tenant="t", filename="in.jsonl", write=write)
    return _batches(rt).create(tenant="t", api="openai", input_file_id=upload.id).id


def _batches(rt: Runtime) -> Batches:
    intake = Intake(rt.settings, rt.store, rt.jobs, rt.broker, rt.files.records)
    return Batches(rt.settings, rt.batches, rt.files, intake, rt.jobs, rt.store)


def test_lines_become_jobs_a_window_at_a_time(rt: Runtime) -> None:
    batch_id = _batch(rt)
    pipeline.advance_batch(batch_id, rt)
    batch = rt.batches.get(batch_id, tenant="t")
    assert batch.status == "in_progress" and batch.count("total") == LINES
    assert (batch.count("admitted"), batch.count("in_flight")) == (4, 4)
    jobs = rt.batches.line_jobs(batch_id, 0, 100)
    assert [rt.jobs.get(j, tenant="t").fields["custom_id"] for j in jobs] == [
        "c1",
        "c2",
        "c3",
        "c4",
    ]
    pipeline.advance_batch(batch_id, rt)  # no room: nothing more
    assert rt.batches.get(batch_id, tenant="t").count("admitted") == 4


def _expire_with_one_success(rt: Runtime, batch_id: str) -> None:
    """The first line succeeds, then the batch's completion window passes."""
    first = rt.batches.line_jobs(batch_id, 0, 1)[0]
    result = {
        "content": "done",
        "reasoning_content": None,
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 5, "completion_tokens": 2},
        "response": {"object": "chat.completion"},
    }
    assert rt.jobs.succeed(first, result)  # type: ignore[arg-type]
    rt.batches.move(batch_id, allowed=("in_progress",), fields={"expires_at": time.time() - 1})
    pipeline.advance_batch(batch_id, rt)


def test_an_expired_batch_ends_every_unfinished_line_and_keeps_the_finished(rt: Runtime) -> None:
    batch_id = _batch(rt)
    pipeline.advance_batch(batch_id, rt)
    _expire_with_one_success(rt, batch_id)
    batch = rt.batches.get(batch_id, tenant="t")
    assert batch.status == "expired" and batch.fields.get("expired_at")
    assert (batch.count("completed"), batch.count("expired"), batch.count("failed")) == (1, 6, 0)
    output, _ = rt.files.open_content(batch.fields["output_file_id"], tenant="t")
    errors, _ = rt.files.open_content(batch.fields["error_file_id"], tenant="t")
    with output, errors:
        done = [json.loads(x) for x in output.read().splitlines()]
        ended = [json.loads(x) for x in errors.read().splitlines()]
    assert [d["custom_id"] for d in done] == ["c1"]
    assert [e["custom_id"] for e in ended] == [f"c{n}" for n in range(2, LINES + 1)]
    assert {e["error"]["code"] for e in ended} == {"batch_expired"}
    # The admitted lines' jobs ended too, so no worker will call the upstream for them.
    for job_id in rt.batches.line_jobs(batch_id, 1, 10):
        job = rt.jobs.get(job_id, tenant="t")
        assert job.status == "failed" and job.fields["error"]["type"] == "batch_expired"


def test_a_finalizer_run_again_after_a_crash_rewrites_the_same_files(rt: Runtime) -> None:
    batch_id = _batch(rt)
    pipeline.advance_batch(batch_id, rt)
    _expire_with_one_success(rt, batch_id)
    first = rt.batches.get(batch_id, tenant="t")
    outputs = {first.fields["output_file_id"], first.fields["error_file_id"]}

    def batch_outputs() -> set[str]:
        files, _ = rt.files.records.list_files(
            tenant="t", purpose="batch_output", limit=100, after=None, newest_first=True
        )
        return {f.id for f in files}

    assert batch_outputs() == outputs
    # What a finalizer killed after writing its files leaves: the files, not the end.
    stored = redis.Redis.from_url(rt.settings.redis_url)
    stored.hset(keys.batch(batch_id), "status", "finalizing")
    stored.hdel(keys.batch(batch_id), "output_file_id", "error_file_id")
    pipeline.advance_batch(batch_id, rt)
    again = rt.batches.get(batch_id, tenant="t")
    assert again.status == "expired"
    assert {again.fields["output_file_id"], again.fields["error_file_id"]} == outputs
    assert batch_outputs() == outputs  # the first run's files were replaced, none left over


def test_a_file_of_more_than_50000_requests_fails_at_line_50001_and_runs_none(
    rt: Runtime,
) -> None:
    def write(out: BinaryIO) -> None:
        for n in range(1, 50_002):
            body = {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image_url",
                                "image_url": {"url": "https://example.com/a.png"},
                            },
                            {"type": "text", "text": "what is it?"},
                        ],
                    }
                ]
            }
            line = {"custom_id": f"c{n}", "method": "POST", "url": "/v1/chat/completions"}
            out.write(json.dumps({**line, "body": body}).encode() + b"\n")

    upload = rt.files.write_input(tenant="t", filename="big.jsonl", write=write)
    batch_id = _batches(rt).create(tenant="t", api="openai", input_file_id=upload.id).id
    pipeline.advance_batch(batch_id, rt)
    batch = rt.batches.get(batch_id, tenant="t")
    assert batch.status == "failed"
    errors = batch.fields["errors"] or []
    assert [(e["code"], e["line"]) for e in errors] == [("too_many_requests", 50_001)]
    assert rt.batches.line_jobs(batch_id, 0, 10) == []
