"""What a worker does on Celery's signals: its logging, a Redis durability check and its
readiness file when it is ready (cleared as it stops), a memory bound in each prefork
child, and a note on each prepare it receives.

`connect` is called by every `create_celery`; Celery connects a module-level receiver
once however often it is asked, so a process that makes several apps (the tests do) still
runs each receiver once per signal. Celery's signals are global, so each receiver finds
its app's settings from what the signal carries: the consumer that sent it, or, for the
two that carry none, the app Celery made current for the worker process or pool child.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from celery import current_app, signals

from visionq.broker import PREPARE_TASK
from visionq.errors import Unavailable
from visionq.media import guards
from visionq.ops import logs, readiness
from visionq.ops.durability import durability_warnings
from visionq.settings import Settings
from visionq.state.connection import open_redis
from workers.tasks import runtime

log = logging.getLogger(__name__)


def connect() -> None:
    signals.setup_logging.connect(_configure_logging)
    signals.worker_ready.connect(_check_redis)
    signals.worker_ready.connect(_mark_ready)
    signals.worker_shutting_down.connect(_clear_ready)
    signals.worker_shutdown.connect(_clear_ready)
    signals.worker_process_init.connect(_bound_memory)
    signals.task_received.connect(_received)


def _current_settings() -> Settings:
    settings: Settings = current_app.conf.visionq_settings
    return settings


def _configure_logging(loglevel: int | None = None, **_: Any) -> None:
    # A receiver here tells Celery to leave logging alone: our JSON lines, at the level
    # the worker was started with.
    logs.configure(_current_settings(), level=loglevel or None)


def _check_redis(sender: Any = None, **_: Any) -> None:
    client = open_redis(sender.app.conf.visionq_settings.redis_url)
    try:
        for warning in durability_warnings(client):
            log.warning("%s", warning)
    finally:
        client.close()


def _mark_ready(sender: Any = None, **_: Any) -> None:
    # Sent once the pool is up and the consumer consumes (visionq.ops.readiness).
    if (path := sender.app.conf.get("visionq_ready_file")) is not None:
        readiness.mark(path)


def _clear_ready(sender: Any = None, **_: Any) -> None:
    # As a warm shutdown begins (no sender's app then), and again as the worker ends.
    app = getattr(sender, "app", None) or current_app
    if (path := app.conf.get("visionq_ready_file")) is not None:
        readiness.clear(path)


def _bound_memory(**_: Any) -> None:
    # In each prefork child (the prepare queue's): one image cannot take the host down.
    guards.limit_memory(_current_settings().prepare_memory_limit)


def _received(sender: Any = None, request: Any = None, **_: Any) -> None:
    # In the worker's main process, as a message is taken from the broker.
    if request is not None and request.name == PREPARE_TASK and request.args:
        with contextlib.suppress(Unavailable):  # then the sweeper finds it unacknowledged
            runtime(sender.app).leases.received(request.args[0])
