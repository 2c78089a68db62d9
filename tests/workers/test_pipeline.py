"""The pipeline steps called directly, without Celery, against real Redis and the simulator."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import CORPUS, SIM_KEY, Stack
from visionq import pipeline, responses, retries
from visionq.errors import ContextLengthExceeded
from visionq.intake import Intake
from visionq.models import JobRequest
from visionq.runtime import Runtime
from visionq.settings import Settings
from visionq.state.jobs import request_body_name
from visionq.state.keys import job as job_key
from visionq.state.leases import Leases

MODEL = "mimo-v2.5"


def _runtime(stack: Stack, redis_url: str, tmp_path: Path, **settings: Any) -> Runtime:
    """A worker process's runtime on a database of the session's Redis and the stack's
    simulator, with two upstream attempts, and `settings` on top."""
    defaults: dict[str, Any] = {
        "redis_url": redis_url,
        "storage_url": f"file://{tmp_path}",
        "upstream_base_url": f"{stack.simulator_url}/v1",
        "mimo_api_key": SIM_KEY,
        "upstream_max_attempts": 2,
        "upstream_rpm": {"*": 6000},
    }
    return Runtime.from_settings(Settings(**(defaults | settings)))


@pytest.fixture
def runtime(stack: Stack, redis_url: str, tmp_path: Path) -> Runtime:
    return _runtime(stack, redis_url, tmp_path)


def _submit(rt: Runtime, prompt: str, *paths: Path) -> str:
    uploads = [io.BytesIO(p.read_bytes()) for p in paths]
    request = JobRequest(prompt=prompt, images=[])
    return (
        Intake(rt.settings, rt.store, rt.jobs, rt.broker, rt.files.records)
        .submit(request, tenant="t", uploads=uploads)
        .id
    )


def test_prepare_then_upstream(runtime: Runtime) -> None:
    job_id = _submit(runtime, "two", CORPUS / "good/hopper.png", CORPUS / "good/hopper.jpg")
    assert pipeline.prepare(job_id, runtime) == MODEL
    job = responses.job_object(runtime.jobs.get(job_id, tenant="t"))
    assert job["status"] == "running"
    assert [i["format"] for i in job["images"]] == ["png", "jpeg"]
    pipeline.call_upstream(MODEL, runtime)
    job = responses.job_object(runtime.jobs.get(job_id, tenant="t"))
    assert job["status"] == "succeeded"
    assert job["result"]["content"].startswith("simulator saw 2 image(s)")
    with pytest.raises(FileNotFoundError):
        runtime.store.open_body(job_id)  # the prepared body is removed once finished


def test_prepare_twice_is_harmless(runtime: Runtime) -> None:
    job_id = _submit(runtime, "again", CORPUS / "good/hopper.gif")
    assert pipeline.prepare(job_id, runtime)
    # A redelivered message for a prepared job: it must not queue a second upstream call.
    assert not pipeline.prepare(job_id, runtime)
    pipeline.call_upstream(MODEL, runtime)
    pipeline.call_upstream(MODEL, runtime)  # and again: the job is finished, nothing happens
    job = responses.job_object(runtime.jobs.get(job_id, tenant="t"))
    assert job["status"] == "succeeded"
    assert job["attempts"] == 1


def test_undecodable_image_fails_in_prepare(runtime: Runtime) -> None:
    job_id = _submit(runtime, "bad", CORPUS / "bad/truncated_jpeg.jpg")
    assert not pipeline.prepare(job_id, runtime)
    job = responses.job_object(runtime.jobs.get(job_id, tenant="t"))
    assert job["status"] == "failed"
    assert job["error"]["type"] == "invalid_image"


def test_a_retryable_error_brings_the_ticket_back_until_the_budget_is_spent(
    runtime: Runtime,
) -> None:
    job_id = _submit(runtime, "[sim:status=503,retry_after=0]", CORPUS / "good/hopper.png")
    assert pipeline.prepare(job_id, runtime)
    retry_in = pipeline.call_upstream(MODEL, runtime)
    assert retry_in is not None  # the ticket comes back for the job it offered again
    assert pipeline.call_upstream(MODEL, runtime) is None  # not due yet: nothing to do
    assert runtime.jobs.get(job_id, tenant="t").status == "running"
    time.sleep(retry_in)
    assert pipeline.call_upstream(MODEL, runtime) is None  # the second of two attempts gives up
    job = responses.job_object(runtime.jobs.get(job_id, tenant="t"))
    assert job["status"] == "failed"
    assert job["error"]["type"] == "upstream_unavailable"


def test_a_large_request_is_read_from_the_store_and_a_lost_one_fails_its_job(
    runtime: Runtime,
) -> None:
    kept = _submit(runtime, "k" * 20_000, CORPUS / "good/hopper.png")
    lost = _submit(runtime, "l" * 20_000, CORPUS / "good/hopper.png")
    runtime.store.delete_body(request_body_name(lost))
    assert pipeline.prepare(kept, runtime) == MODEL
    assert not pipeline.prepare(lost, runtime)
    error = responses.job_object(runtime.jobs.get(lost, tenant="t"))["error"]
    assert (error["type"], error["message"]) == (
        "internal",
        "the job's request is missing from the image store",
    )
    pipeline.call_upstream(MODEL, runtime)
    job = responses.job_object(runtime.jobs.get(kept, tenant="t"))
    assert job["status"] == "succeeded"
    assert "k" * 100 in job["result"]["content"]


def test_a_job_whose_upstream_attempts_keep_dying_ends(
    stack: Stack, redis_url: str, tmp_path: Path
) -> None:
    """Two upstream workers took the job and died without an outcome (their leases ran out
    and the sweeper offered it again): the next turn fails it instead of calling again."""
    rt = _runtime(stack, redis_url, tmp_path, job_lease=0.3)
    job_id = _submit(rt, "dies", CORPUS / "good/hopper.png")
    assert pipeline.prepare(job_id, rt)
    for attempt in (1, 2):
        with rt.pacer.turn(MODEL) as turn:  # taken, then its worker "dies" holding it
            assert turn is not None and turn.attempt == attempt
        time.sleep(2 * rt.settings.job_lease)
        rt.pacer.offer(job_id, model=MODEL, tenant="t")  # as the sweeper does
    calls = stack.upstream_calls()
    pipeline.call_upstream(MODEL, rt)
    job = responses.job_object(rt.jobs.get(job_id, tenant="t"))
    assert (job["status"], job["error"]["type"]) == ("failed", "upstream_unavailable")
    assert stack.upstream_calls() == calls


def test_context_window_is_checked_before_the_call(
    stack: Stack, redis_url: str, tmp_path: Path, image_server: str
) -> None:
    rt = _runtime(
        stack,
        redis_url,
        tmp_path,
        model_context={"mimo-v2.5": 100},
        models=("mimo-v2.5",),
        allow_private_urls=True,
    )
    job_id = _submit(rt, "x", CORPUS / "good/hopper.png")  # 128x128: 16 tokens + text
    # Images at URLs are counted only once fetched: the worker refuses the job.
    urls = [f"{image_server}/good/hopper.png", *[f"{image_server}/good/hopper.jpg"] * 6]
    request = JobRequest(prompt="x", images=urls)
    big = (
        Intake(rt.settings, rt.store, rt.jobs, rt.broker, rt.files.records)
        .submit(request, tenant="t")
        .id
    )
    assert pipeline.prepare(job_id, rt)
    assert not pipeline.prepare(big, rt)
    assert (
        responses.job_object(rt.jobs.get(big, tenant="t"))["error"]["type"]
        == "context_length_exceeded"
    )
    # The same images uploaded are counted at submit: refused before anything is stored.
    with pytest.raises(ContextLengthExceeded) as refused:
        _submit(rt, "x", CORPUS / "good/hopper.png", *[CORPUS / "good/hopper.jpg"] * 6)
    assert (refused.value.status, refused.value.param) == (400, "messages")


def test_retry_delay_honours_retry_after() -> None:
    assert retries.retry_delay(1, 7.0) >= 7.0
    assert all(0 <= retries.retry_delay(3, None) <= 4 for _ in range(100))


def test_a_canceled_queued_job_never_reaches_the_upstream(runtime: Runtime, stack: Stack) -> None:
    calls = requests.get(f"{stack.simulator_url}/_sim/stats", timeout=5).json()["requests"]
    job_id = _submit(runtime, "never", CORPUS / "good/hopper.png")
    assert runtime.jobs.cancel(job_id, tenant="t").status == "canceled"
    assert not pipeline.prepare(job_id, runtime)  # the message arrives after the cancel
    pipeline.call_upstream(MODEL, runtime)
    job = responses.job_object(runtime.jobs.get(job_id, tenant="t"))
    assert job["status"] == "canceled"
    assert job["attempts"] == 0
    assert requests.get(f"{stack.simulator_url}/_sim/stats", timeout=5).json()["requests"] == calls


def test_a_job_canceled_after_it_started_is_not_prepared(runtime: Runtime) -> None:
    job_id = _submit(runtime, "x", CORPUS / "good/hopper.png")
    runtime.leases.take(job_id, "prepare")
    runtime.jobs.cancel(job_id, tenant="t")
    assert not pipeline.prepare(job_id, runtime)
    with pytest.raises(FileNotFoundError):
        runtime.store.open_body(job_id)


def test_a_job_whose_prepare_keeps_dying_fails_after_three_tries(
    runtime: Runtime,
) -> None:
    job_id = _submit(runtime, "poison", CORPUS / "good/hopper.png")
    short = Leases(runtime.jobs._redis, lease=0.01)
    for _ in range(pipeline.MAX_PREPARE_ATTEMPTS):
        assert short.take(job_id, "prepare") is not None  # its worker then dies
        time.sleep(0.02)  # and the lease runs out
    assert not pipeline.prepare(job_id, runtime)
    job = responses.job_object(runtime.jobs.get(job_id, tenant="t"))
    assert job["status"] == "failed"
    assert job["error"]["type"] == "internal"


def test_storage_down_during_prepare_hands_the_job_back_uncounted(
    runtime: Runtime, tmp_path: Path
) -> None:
    job_id = _submit(runtime, "outage", CORPUS / "good/hopper.png")
    bodies = tmp_path / "bodies"
    bodies.rmdir()
    bodies.write_bytes(b"")  # the store cannot write a body now: Unavailable, not a bad image
    for _ in range(pipeline.MAX_PREPARE_ATTEMPTS + 1):
        assert pipeline.prepare(job_id, runtime) is None
        raw = runtime.jobs._redis.hmget(
            job_key(job_id), "status", "prepare_attempts", "lease_until"
        )
        assert raw == [b"running", b"0", b"0"]  # released at once, and no attempt counted
    bodies.unlink()  # storage is back: the next try prepares the job
    assert pipeline.prepare(job_id, runtime) == MODEL
    assert runtime.jobs.get(job_id, tenant="t").status == "running"


def test_an_image_removed_during_prepare_is_tried_again_then_fails(
    runtime: Runtime, tmp_path: Path
) -> None:
    job_id = _submit(runtime, "vanished", CORPUS / "good/hopper.png")
    [stored] = (tmp_path / "images").glob("*/*")
    stored.unlink()  # as if another job's removal took it
    for attempt in range(1, pipeline.MAX_PREPARE_ATTEMPTS + 1):
        assert pipeline.prepare(job_id, runtime) is None
        raw = runtime.jobs._redis.hmget(
            job_key(job_id), "status", "prepare_attempts", "lease_until"
        )
        assert raw == [b"running", str(attempt).encode(), b"0"]  # handed back, counted
    assert pipeline.prepare(job_id, runtime) is None
    job = responses.job_object(runtime.jobs.get(job_id, tenant="t"))
    assert job["status"] == "failed"
    assert job["error"]["type"] == "internal"
