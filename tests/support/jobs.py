"""Job records written straight into Redis, for tests of what happens to a job later."""

from __future__ import annotations

from typing import Any

from visionq.state.jobs import JobStore
from visionq.state.records import JobRecord


def bare_job(jobs: JobStore, **fields: Any) -> JobRecord:
    """A queued job straight in Redis, with no image and nothing queued for it."""
    defaults: dict[str, Any] = {
        "tenant": "t",
        "model": "mimo-v2.5",
        "api": "openai",
        "request": {"messages": []},
        "images": [],
        "webhook_url": None,
        "metadata": None,
    }
    return jobs.create(**(defaults | fields))
