"""The intake's own prepare message (`CeleryRedis.prepare_push`), pushed in the job's
transaction instead of through Celery's publisher: it must be the message Celery would
send, a real worker must run it, and the sweeper must still read it when it is stranded."""

from __future__ import annotations

import json
from pathlib import Path

import redis
from celery import Celery

from tests.support import CORPUS, Stack, bare_job, data_url
from visionq.broker import PREPARE_QUEUE, PREPARE_TASK
from visionq.broker.celery_redis import CeleryRedis
from visionq.intake import Intake
from visionq.models import JobRequest
from visionq.settings import Settings
from visionq.state.files import FileStore
from visionq.state.jobs import JobStore
from visionq.storage import open_store
from workers.app import create_celery

#: Per message: its own ids, and where it was made; Celery adds a reply queue nobody reads.
_OWN = {"id", "root_id", "origin", "argsrepr", "correlation_id", "delivery_tag", "reply_to"}


def _without_own(message: dict) -> dict:
    return {
        "body": message["body"],
        **{k: v for k, v in message.items() if k not in ("body", "headers", "properties")},
        "headers": {k: v for k, v in message["headers"].items() if k not in _OWN},
        "properties": {k: v for k, v in message["properties"].items() if k not in _OWN},
    }


def _app(redis_url: str, tmp_path: Path) -> Celery:
    return create_celery(Settings(redis_url=redis_url, storage_url=f"file://{tmp_path}"))


def test_the_message_is_the_one_celery_sends(
    redis_url: str, redis_db: redis.Redis, tmp_path: Path
) -> None:
    _app(redis_url, tmp_path).send_task(PREPARE_TASK, args=["job_x"], queue=PREPARE_QUEUE)
    celerys = json.loads(redis_db.rpop(PREPARE_QUEUE))
    queue, payload = CeleryRedis(redis_db).prepare_push("job_x")
    ours = json.loads(payload)

    assert queue == PREPARE_QUEUE
    assert _without_own(ours) == _without_own(celerys)
    assert set(ours["headers"]) == set(celerys["headers"])
    assert ours["headers"]["argsrepr"] == celerys["headers"]["argsrepr"]
    assert (
        ours["headers"]["root_id"] == ours["headers"]["id"] == ours["properties"]["correlation_id"]
    )
    # Each message its own task id and delivery tag (the key of kombu's unacknowledged set).
    again = json.loads(CeleryRedis(redis_db).prepare_push("job_x")[1])
    assert again["headers"]["id"] != ours["headers"]["id"]
    assert again["properties"]["delivery_tag"] != ours["properties"]["delivery_tag"]


def test_a_stranded_fast_path_message_is_claimed_by_the_sweeper(
    redis_url: str, redis_db: redis.Redis, tmp_path: Path
) -> None:
    broker = CeleryRedis(redis_db)
    job = bare_job(JobStore(redis_db, ttl=600, queued_grace=300), message=broker.prepare_push)
    assert redis_db.llen(PREPARE_QUEUE) == 1  # written with the job, in its transaction

    with _app(redis_url, tmp_path).connection_for_read() as connection:
        prepare = connection.SimpleQueue(PREPARE_QUEUE)
        message = prepare.get(timeout=5)  # taken by a kombu consumer and never acknowledged
        assert message.headers["task"] == PREPARE_TASK
        assert message.payload[0] == [job.id]
        assert broker.claim_stranded(PREPARE_QUEUE, older_than=0) == [job.id]
        prepare.close()
    assert redis_db.llen(PREPARE_QUEUE) == 0


def test_a_job_queued_by_the_fast_path_runs_on_a_real_worker(stack: Stack) -> None:
    settings = Settings.from_env(stack.env)
    client = redis.Redis.from_url(stack.redis_url)
    jobs = JobStore(client, ttl=600, queued_grace=300)
    intake = Intake(
        settings,
        open_store(settings.storage_url),
        jobs,
        CeleryRedis(client),
        FileStore(client, ttl=600),
    )
    request = JobRequest.model_validate(
        {"prompt": "what is it", "images": [data_url(CORPUS / "good" / "hopper.jpg")]}
    )

    record = intake.submit(request, tenant="alice")

    job = stack.wait(record.id)
    assert job["status"] == "succeeded", job
    assert job["result"]["content"].startswith("simulator saw 1 image(s)")
    client.close()
