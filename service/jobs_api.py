"""`/v1/jobs`: submit (JSON or multipart) and read, with long-polling."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Collection
from typing import Any, get_args

from flask import Blueprint, g, jsonify, request

from service.deps import services
from visionq import responses, retention
from visionq.errors import InvalidRequest, PayloadTooLarge
from visionq.models import JobForm, JobRequest, JobStatus, whole_number
from visionq.ops import metrics
from visionq.state.records import JobRecord

blueprint = Blueprint("jobs", __name__)
log = logging.getLogger(__name__)

MAX_WAIT_SECONDS = 60.0
MAX_LIST_LIMIT = 100
MAX_JSON_DEPTH = 32
JOB_STATUSES = get_args(JobStatus)
_FORM_FIELDS = JobForm.plain_fields()
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait=(\d+(?:\.\d+)?)")


_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?")


def cancel_after(raw: str | None) -> float | None:
    """`Cancel-After` (Replicate's header: `90s`, `5m`, `1h30m`, `500ms`, or seconds) as
    the deadline it sets, in Unix seconds from now."""
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    try:
        seconds = float(text)
    except ValueError:
        match = _DURATION.fullmatch(text)
        if match is None or not any(match.groups()):
            raise InvalidRequest(
                "Cancel-After must be a duration such as 90s, 5m, 1h30m or 500ms",
                param="Cancel-After",
            ) from None
        h, m, s, ms = (int(part or 0) for part in match.groups())
        seconds = h * 3600 + m * 60 + s + ms / 1000
    if not 0 < seconds <= 7 * 86400:
        raise InvalidRequest(
            "Cancel-After must be above 0 and at most 7 days", param="Cancel-After"
        )
    return time.time() + seconds


def _wait_seconds(raw: str | None, *, param: str) -> float:
    if raw is None:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise InvalidRequest("wait must be a number of seconds", param=param) from None
    if not 0 <= value <= MAX_WAIT_SECONDS:
        raise InvalidRequest(f"wait must be between 0 and {MAX_WAIT_SECONDS:g}", param=param)
    return value


def _json_object(text: str | bytes, what: str, *, param: str | None = None) -> dict[str, Any]:
    """A JSON object no deeper than `MAX_JSON_DEPTH`: deeper nesting serves no request and
    would hit Python's recursion limit here or, a little shallower, in a worker."""
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise InvalidRequest(f"{what} is not a JSON object", param=param)
    if _depth(body) > MAX_JSON_DEPTH:
        raise InvalidRequest(f"{what} nests deeper than {MAX_JSON_DEPTH} levels", param=param)
    return body


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item)
    return deepest


def _first(names: Collection[str | None]) -> str:
    """The first of some form field names, for the error's `param`; a part whose name
    Werkzeug could not read has None."""
    return sorted(name or "" for name in names)[0]


def json_body() -> dict[str, Any]:
    """The request's JSON object (`application/json`), within the body cap and depth."""
    if request.mimetype != "application/json":
        raise InvalidRequest("send application/json")
    data = request.get_data(cache=True)
    # Werkzeug cuts a chunked body (no Content-Length) at the cap without a word; a body
    # that fills the cap exactly is taken as one that went over it.
    cap = request.max_content_length
    if request.content_length is None and cap is not None and len(data) >= cap:
        raise PayloadTooLarge("the request body is over the configured cap")
    return _json_object(data, "the body")


def parse_job_request() -> tuple[JobRequest, list[Any]]:
    """The request model and uploaded files from any of the three body forms of API.md."""
    mimetype = request.mimetype
    if mimetype == "application/json":
        return JobRequest.model_validate(json_body()), []
    if mimetype == "multipart/form-data":
        unknown_files = set(request.files) - {"image"}
        if unknown_files:
            raise InvalidRequest(
                "upload files in fields named `image`", param=_first(unknown_files)
            )
        uploads = [f.stream for f in request.files.getlist("image")]
        form = request.form
        if "request" in form:
            if set(form) - {"request"}:
                raise InvalidRequest(
                    "give either a `request` field or plain fields, not both",
                    param=_first(set(form) - {"request"}),
                )
            body = _json_object(form["request"], "the `request` field", param="request")
            return JobRequest.model_validate(body), uploads
        unknown = set(form) - _FORM_FIELDS
        if unknown:
            raise InvalidRequest(f"unknown field {_first(unknown)!r}", param=_first(unknown))
        fields: dict[str, Any] = {
            k: form[k] for k in _FORM_FIELDS & set(form) if k != "webhook_url"
        }
        if "webhook_url" in form:
            fields["webhook"] = {"url": form["webhook_url"]}
        if not uploads and "prompt" not in fields:
            raise InvalidRequest("a multipart job needs `image` files", param="image")
        fields.setdefault("images", [])
        return JobRequest.model_validate(fields), uploads
    raise InvalidRequest("send application/json or multipart/form-data")


@blueprint.post("/v1/jobs")
def create_job() -> Any:
    prefer = _PREFER_WAIT.search(request.headers.get("Prefer", ""))
    wait = _wait_seconds(prefer.group(1) if prefer else None, param="Prefer")
    job_request, uploads = parse_job_request()
    deadline = cancel_after(request.headers.get("Cancel-After"))
    svc = services()
    idempotency_key = request.headers.get("Idempotency-Key")
    if idempotency_key is None:
        record = svc.intake.submit(
            job_request,
            tenant=g.tenant,
            uploads=uploads,
            request_id=g.request_id,
            deadline=deadline,
        )
        _accepted(record)
        status = 202
    else:
        record, created = svc.intake.submit_once(
            svc.idempotency,
            idempotency_key,
            job_request,
            tenant=g.tenant,
            uploads=uploads,
            request_id=g.request_id,
            deadline=deadline,
        )
        if created:
            _accepted(record)
        status = 202 if created else 200
    if wait > 0 and status == 202:
        record = svc.jobs.wait(record.id, tenant=g.tenant, timeout=wait)
        status = 201 if record.finished else 202
    response = jsonify(responses.job_object(record))
    response.status_code = status
    response.headers["Location"] = f"/v1/jobs/{record.id}"
    return response


def _accepted(record: JobRecord) -> None:
    """Count and log a new job (its first stage was queued with its record)."""
    model = record.model
    metrics.JOBS_SUBMITTED.labels(model).inc()
    log.info(
        "job accepted",
        extra={"job_id": record.id, "model": model, "images": len(record.images)},
    )


@blueprint.get("/v1/jobs/<job_id>")
def get_job(job_id: str) -> Any:
    wait = _wait_seconds(request.args.get("wait"), param="wait")
    record = services().jobs.wait(job_id, tenant=g.tenant, timeout=wait)
    return jsonify(responses.job_object(record))


@blueprint.post("/v1/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> Any:
    return jsonify(responses.job_object(services().jobs.cancel(job_id, tenant=g.tenant)))


@blueprint.post("/v1/tokens")
def count_tokens() -> Any:
    job_request, uploads = parse_job_request()
    return jsonify(services().intake.count_tokens(job_request, tenant=g.tenant, uploads=uploads))


@blueprint.get("/v1/jobs")
def list_jobs() -> Any:
    status = request.args.get("status")
    if status is not None and status not in JOB_STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(JOB_STATUSES)}", param="status")
    limit = whole_number(request.args.get("limit", "20"))
    if limit is None or not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidRequest(f"limit must be 1 to {MAX_LIST_LIMIT}", param="limit")
    after = request.args.get("after")
    if after is not None and not after.startswith("job_"):
        raise InvalidRequest("after must be a job id from `next`", param="after")
    records, next_cursor = services().jobs.list_jobs(
        tenant=g.tenant, status=status, limit=limit, after=after
    )
    return jsonify(responses.job_page(records, next_cursor))


@blueprint.delete("/v1/jobs/<job_id>")
def delete_job(job_id: str) -> Any:
    svc = services()
    retention.delete_job(svc.jobs, svc.store, job_id, tenant=g.tenant)
    return "", 204


@blueprint.post("/v1/jobs/<job_id>/webhook/redeliver")
def redeliver_webhook(job_id: str) -> Any:
    svc = services()
    response = jsonify(
        responses.job_object(svc.outbox.redeliver(svc.jobs, job_id, tenant=g.tenant))
    )
    response.status_code = 202
    return response
