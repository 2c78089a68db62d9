"""The Python client for the visionq API (API.md); the `visionq` client commands run on it.

    from visionq import Client

    with Client() as client:                # VISIONQ_URL and VISIONQ_KEY
        job = client.submit(["photo.jpg", "https://example.com/b.png"], "compare them")
        job = client.wait(job.id)
        print(job.content)

Every failure is a `ClientError` (the tree is drawn in `_errors`). The package imports
nothing of the server, only `requests` and `standardwebhooks`, so that it can ship alone;
an import-linter contract in pyproject.toml holds it to that.
"""

from __future__ import annotations

from visionq.client._client import DEFAULT_URL, UPDATE_INTERVAL, Client, ImageSource
from visionq.client._errors import (
    ApiError,
    ClientError,
    Unreachable,
    WaitTimeout,
    WebhookVerificationFailed,
)
from visionq.client._types import (
    JOB_STATUSES,
    MAX_PAGE_SIZE,
    MAX_WAIT_SECONDS,
    TERMINAL_STATUSES,
    ImageCount,
    Job,
    JobFailure,
    JobImage,
    JobPage,
    Result,
    TokenCount,
    WebhookEvent,
    WebhookState,
)
from visionq.client.webhooks import verify_webhook

__all__ = [
    "DEFAULT_URL",
    "JOB_STATUSES",
    "MAX_PAGE_SIZE",
    "MAX_WAIT_SECONDS",
    "TERMINAL_STATUSES",
    "UPDATE_INTERVAL",
    "ApiError",
    "Client",
    "ClientError",
    "ImageCount",
    "ImageSource",
    "Job",
    "JobFailure",
    "JobImage",
    "JobPage",
    "Result",
    "TokenCount",
    "Unreachable",
    "WaitTimeout",
    "WebhookEvent",
    "WebhookState",
    "WebhookVerificationFailed",
    "verify_webhook",
]
