"""The Python client for the visionq API (API.md); the `visionq` client commands run on it.

    from visionq import Client

    with Client() as client:                # VISIONQ_URL and VISIONQ_KEY
        job = client.submit(["photo.jpg", "https://example.com/b.png"], "compare them")
        job = client.wait(job.id)
        print(job.content)

        batch = client.batches.create_from_images(["photos/"], prompt="describe it")
        batch = client.batches.wait(batch.id)
        for line in client.batches.results(batch.id):
            print(line.custom_id, line.content or line.error)

Every failure is a `ClientError` (the tree is drawn in `_errors`). The package imports
nothing of the server, only `requests` and `standardwebhooks`, so that it can ship alone;
an import-linter contract in pyproject.toml holds it to that.
"""

from __future__ import annotations

from visionq.client._batches import IMAGE_SUFFIXES, Batches, Files, find_images
from visionq.client._client import DEFAULT_URL, UPDATE_INTERVAL, Client, ImageSource
from visionq.client._errors import (
    ApiError,
    BatchNotEnded,
    BatchWaitTimeout,
    ClientError,
    Unreachable,
    WaitTimeout,
    WebhookVerificationFailed,
)
from visionq.client._types import (
    BATCH_STATUSES,
    BATCH_TERMINAL_STATUSES,
    FILE_PURPOSES,
    JOB_STATUSES,
    MAX_PAGE_SIZE,
    MAX_WAIT_SECONDS,
    TERMINAL_STATUSES,
    Batch,
    BatchError,
    BatchLineFailure,
    BatchPage,
    BatchRequestCounts,
    BatchResult,
    FileObject,
    FilePage,
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
    "BATCH_STATUSES",
    "BATCH_TERMINAL_STATUSES",
    "DEFAULT_URL",
    "FILE_PURPOSES",
    "IMAGE_SUFFIXES",
    "JOB_STATUSES",
    "MAX_PAGE_SIZE",
    "MAX_WAIT_SECONDS",
    "TERMINAL_STATUSES",
    "UPDATE_INTERVAL",
    "ApiError",
    "Batch",
    "BatchError",
    "BatchLineFailure",
    "BatchNotEnded",
    "BatchPage",
    "BatchRequestCounts",
    "BatchResult",
    "BatchWaitTimeout",
    "Batches",
    "Client",
    "ClientError",
    "FileObject",
    "FilePage",
    "Files",
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
    "find_images",
    "verify_webhook",
]
