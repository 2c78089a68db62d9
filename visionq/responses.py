"""The API's answers about jobs, built as the pydantic models of `visionq.models`.

Those models also produce the OpenAPI document (`service/openapi.py`), so building every
answer through them means the document cannot drift from what clients receive: a record
that no longer fits its documented shape fails here, in a test, rather than in a client.
The webhook's event body is the same job object, so it is built here too.
"""

from __future__ import annotations

from typing import Any

from visionq.models import Job, JobList
from visionq.state.records import JobRecord

#: What a job's image reports; until a worker validated it, all but index and source are null.
_IMAGE_FIELDS = ("format", "width", "height", "bytes", "sha256", "image_tokens")


def job(record: JobRecord) -> Job:
    """The job object of API.md, from its stored record."""
    f = record.fields
    images = [
        {k: v for k, v in image.items() if k != "blob"} | {n: image.get(n) for n in _IMAGE_FIELDS}
        for image in f["images"]
    ]
    tokens = [image["image_tokens"] for image in images]
    webhook = f.get("webhook")
    batch = {n: f[n] for n in ("batch_id", "custom_id") if n in f}
    return Job.model_validate(
        {
            **batch,
            "id": record.id,
            "object": "job",
            "status": record.status,
            "model": f["model"],
            "api": f["api"],
            "created_at": f["created_at"],
            "started_at": f.get("started_at"),
            "completed_at": f.get("completed_at"),
            "images": images,
            "usage_estimate": {
                "image_tokens": sum(tokens) if tokens and None not in tokens else None
            },
            "result": f.get("result"),
            "error": f.get("error"),
            "attempts": int(f.get("attempts") or 0),
            "account": f.get("account"),
            **({"cost": f["cost"]} if "cost" in f else {}),
            **({"deadline": f["deadline"]} if "deadline" in f else {}),
            # `generation` orders the outbox's writes; it is not the client's business.
            "webhook": None
            if webhook is None
            else {k: v for k, v in webhook.items() if k != "generation"},
            "metadata": f.get("metadata") or {},
        }
    )


def job_object(record: JobRecord) -> dict[str, Any]:
    """`job(record)` as JSON-ready data, with exactly the keys the record has."""
    return job(record).model_dump(mode="json", exclude_unset=True)


def job_page(records: list[JobRecord], next_cursor: str | None) -> dict[str, Any]:
    """One page of `GET /v1/jobs`."""
    page = JobList(
        object="list",
        data=[job(r) for r in records],
        has_more=next_cursor is not None,
        next=next_cursor,
    )
    return page.model_dump(mode="json", exclude_unset=True)
