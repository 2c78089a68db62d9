"""A batch as its clients see it: OpenAI's batch object, Anthropic's message batch, and
the lines of their result files. Pure functions of the stored records."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, cast

from pydantic import BaseModel

from visionq.models import Batch, MessageBatch
from visionq.state.batches import BatchRecord
from visionq.state.records import JobRecord
from visionq.usage import dollars

#: Anthropic's statuses, from ours.
_ANTHROPIC_STATUS = {
    "validating": "in_progress",
    "in_progress": "in_progress",
    "finalizing": "in_progress",
    "cancelling": "canceling",
}
#: Our job error types as Anthropic's error types, for an errored result.
_ANTHROPIC_ERRORS = {
    "invalid_request": "invalid_request_error",
    "invalid_image": "invalid_request_error",
    "invalid_image_url": "invalid_request_error",
    "unsupported_media_type": "invalid_request_error",
    "payload_too_large": "request_too_large",
    "context_length_exceeded": "invalid_request_error",
    "upstream_bad_request": "invalid_request_error",
    "upstream_auth": "authentication_error",
    "insufficient_balance": "billing_error",
    "content_filter": "invalid_request_error",
    "upstream_unavailable": "overloaded_error",
}


def _usage(record: BatchRecord) -> dict[str, Any]:
    """OpenAI's batch `usage`: summed over finished lines as they finish (prompt and
    completion), and exactly, details included, from the results once the batch ended."""
    prompt, completion = record.count("prompt_tokens"), record.count("completion_tokens")
    usage: dict[str, Any] = {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": record.count("cached_tokens")},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": record.count("reasoning_tokens")},
        "total_tokens": prompt + completion,
    }
    if nanos := record.count("cost_nanos"):
        usage["cost"] = dollars(nanos)  # visionq's: the lines' costs at VISIONQ_PRICES
    return usage


def _webhook(record: BatchRecord) -> dict[str, Any] | None:
    webhook = record.fields.get("webhook")
    return None if webhook is None else {k: v for k, v in webhook.items() if k != "generation"}


def openai_batch(record: BatchRecord) -> dict[str, Any]:
    """OpenAI's batch object; `webhook` and `priority` are visionq's, and `request_counts`
    adds `canceled` (lines a cancel stopped: in the error file, not in `failed`). Built
    through `models.Batch`, which the OpenAPI document is rendered from."""
    f = record.fields
    errors = f.get("errors")
    return _shaped(
        Batch,
        {
            "id": record.id,
            "object": "batch",
            "endpoint": f["endpoint"],
            "errors": None if not errors else {"object": "list", "data": errors},
            "input_file_id": f["input_file_id"],
            "completion_window": f["completion_window"],
            "status": record.status,
            "output_file_id": f.get("output_file_id"),
            "error_file_id": f.get("error_file_id"),
            "created_at": int(f["created_at"]),
            "in_progress_at": _seconds(f.get("in_progress_at")),
            "expires_at": int(f["expires_at"]),
            "finalizing_at": _seconds(f.get("finalizing_at")),
            "completed_at": _seconds(f.get("completed_at")),
            "failed_at": _seconds(f.get("failed_at")),
            "expired_at": _seconds(f.get("expired_at")),
            "cancelling_at": _seconds(f.get("cancelling_at")),
            "cancelled_at": _seconds(f.get("cancelled_at")),
            "request_counts": {
                "total": record.count("total"),
                "completed": record.count("completed"),
                "failed": record.count("failed") + record.count("expired"),
                "canceled": record.count("canceled"),
            },
            "metadata": f.get("metadata"),
            "usage": _usage(record),
            "webhook": _webhook(record),
            "priority": f["priority"],
        },
    )


def anthropic_batch(record: BatchRecord, *, results_url: str) -> dict[str, Any]:
    """Anthropic's message batch object; `results_url` once it has ended (through
    `models.MessageBatch`)."""
    f = record.fields
    ended = record.ended
    total = record.count("total")
    finished = sum(record.count(n) for n in ("completed", "failed", "canceled", "expired"))
    ended_at = _ended_at(record)
    return _shaped(
        MessageBatch,
        {
            "id": record.id,
            "type": "message_batch",
            "processing_status": "ended" if ended else _ANTHROPIC_STATUS[record.status],
            "request_counts": {
                "processing": 0 if ended else max(0, total - finished),
                "succeeded": record.count("completed"),
                "errored": record.count("failed"),
                "canceled": record.count("canceled"),
                "expired": record.count("expired"),
            },
            "ended_at": _iso(ended_at),
            "created_at": _iso(f["created_at"]),
            "expires_at": _iso(f["expires_at"]),
            "cancel_initiated_at": _iso(f.get("cancelling_at")),
            "archived_at": None,
            "results_url": results_url if ended else None,
            "usage": _usage(record),
            "webhook": _webhook(record),
        },
    )


def _shaped(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """`data` checked against its documented model, as JSON-ready data."""
    return model.model_validate(data).model_dump(mode="json")


def anthropic_results_path(batch_id: str) -> str:
    """Where an Anthropic-form batch's results are served (its `results_url`)."""
    return f"/anthropic/v1/messages/batches/{batch_id}/results"


def _ended_at(record: BatchRecord) -> float | None:
    f = record.fields
    for name in ("completed_at", "cancelled_at", "expired_at", "failed_at"):
        value = cast(dict[str, Any], f).get(name)
        if value is not None:
            return float(value)
    return None


def _seconds(value: float | None) -> int | None:
    return None if value is None else int(value)


def _iso(value: float | None) -> str | None:
    """RFC 3339 in UTC, as Anthropic's API writes its times."""
    if value is None:
        return None
    return datetime.fromtimestamp(value, UTC).isoformat().replace("+00:00", "Z")


def request_id(batch_id: str, line: int) -> str:
    """A line's `batch_req_` id: the same on every run of the finalizer."""
    digest = hashlib.sha256(f"{batch_id}:{line}".encode()).hexdigest()[:24]
    return f"batch_req_{digest}"


def openai_line(
    batch_id: str, line: int, custom_id: str, job: JobRecord | None, error: dict[str, Any] | None
) -> tuple[bool, bytes]:
    """A line's output (True) or error (False) file line, in OpenAI's shape."""
    out: dict[str, Any] = {"id": request_id(batch_id, line), "custom_id": custom_id}
    result = job.fields.get("result") if job is not None else None
    if job is not None and job.status == "succeeded" and result is not None:
        out["response"] = {"status_code": 200, "request_id": job.id, "body": result["response"]}
        out["error"] = None
        return True, _dump(out)
    error = error or (job.fields.get("error") if job is not None else None) or {}
    status = error.get("upstream_status")
    out["response"] = (
        None
        if status is None or job is None
        else {"status_code": status, "request_id": job.id, "body": {"error": error}}
    )
    code = {"canceled": "batch_cancelled"}.get(error.get("type", ""), error.get("type", "internal"))
    out["error"] = {"code": code, "message": error.get("message", "")}
    return False, _dump(out)


def anthropic_line(custom_id: str, job: JobRecord | None, error: dict[str, Any] | None) -> bytes:
    """A line of Anthropic's results JSONL."""
    result = job.fields.get("result") if job is not None else None
    if job is not None and job.status == "succeeded" and result is not None:
        return _dump(
            {"custom_id": custom_id, "result": {"type": "succeeded", "message": result["response"]}}
        )
    error = error or (job.fields.get("error") if job is not None else None) or {}
    kind = error.get("type", "internal")
    if kind in ("canceled", "batch_cancelled"):
        return _dump({"custom_id": custom_id, "result": {"type": "canceled"}})
    if kind == "batch_expired":
        return _dump({"custom_id": custom_id, "result": {"type": "expired"}})
    detail = {"type": _ANTHROPIC_ERRORS.get(kind, "api_error"), "message": error.get("message", "")}
    return _dump(
        {
            "custom_id": custom_id,
            "result": {"type": "errored", "error": {"type": "error", "error": detail}},
        }
    )


def batch_event(record: BatchRecord, data: dict[str, Any]) -> bytes:
    """`{type, timestamp, data}` for an ended batch, like a job's event."""
    ended_at = _ended_at(record) or record.fields["created_at"]
    event = {"type": f"batch.{record.status}", "timestamp": int(ended_at), "data": data}
    return json.dumps(event, separators=(",", ":")).encode()


def _dump(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode() + b"\n"
