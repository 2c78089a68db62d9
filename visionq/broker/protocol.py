"""Celery's task protocol 2, built by hand: what `send_task(task, args=args)` would send,
for the brokers that queue a message without Celery's publisher (`celery_redis`,
`celery_amqp`). tests/workers/test_enqueue.py checks it against Celery's own and a real
worker."""

from __future__ import annotations

import functools
import os
import socket
import uuid
from typing import Any


@functools.cache
def _origin() -> str:
    return f"visionq-intake-{os.getpid()}@{socket.gethostname()}"


def task_message(task: str, args: list[str]) -> tuple[dict[str, Any], list[Any]]:
    """The headers and the body `[args, kwargs, embed]` of a new task message."""
    task_id = str(uuid.uuid4())
    body = [args, {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    headers: dict[str, Any] = {
        "lang": "py",
        "task": task,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": repr(args),
        "kwargsrepr": "{}",
        "origin": _origin(),
        "ignore_result": None,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    return headers, body
