"""The Celery adapter's shape, which no end-to-end test would notice going wrong: each
task is routed to its queue and carries its time limits, and the signal receivers are
connected once however many apps a process makes."""

from __future__ import annotations

from pathlib import Path

from celery import signals

from visionq.broker import (
    BATCH_TASK,
    PREPARE_QUEUE,
    PREPARE_TASK,
    UPSTREAM_QUEUE,
    UPSTREAM_TASK,
    WEBHOOK_QUEUE,
    WEBHOOK_TASK,
    time_limits,
)
from visionq.settings import Settings
from workers.app import create_celery

_SIGNALS = (
    signals.setup_logging,
    signals.worker_ready,
    signals.worker_process_init,
    signals.task_received,
)


def test_each_task_has_its_queue_and_time_limits(tmp_path: Path) -> None:
    # A slower upstream than the default's, so that its limit is seen to follow it.
    settings = Settings(storage_url=f"file://{tmp_path}", upstream_timeout=900.0)
    app = create_celery(settings)
    app.loader.import_default_modules()
    app.finalize()
    queues = {
        PREPARE_TASK: PREPARE_QUEUE,
        BATCH_TASK: PREPARE_QUEUE,
        UPSTREAM_TASK: UPSTREAM_QUEUE,
        WEBHOOK_TASK: WEBHOOK_QUEUE,
    }

    for name, limit in time_limits(settings).items():
        task = app.tasks[name]
        assert app.amqp.router.route({}, name)["queue"].name == queues[name]
        assert (task.time_limit, task.soft_time_limit) == (limit, limit - 10)
    assert time_limits(settings)[UPSTREAM_TASK] == 970
    assert app.tasks[UPSTREAM_TASK].max_retries is None


def test_the_signal_receivers_are_connected_once(tmp_path: Path) -> None:
    settings = Settings(storage_url=f"file://{tmp_path}")
    create_celery(settings)
    connected = [len(signal.receivers) for signal in _SIGNALS]
    create_celery(settings)
    create_celery(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/2"}))

    assert [len(signal.receivers) for signal in _SIGNALS] == connected
