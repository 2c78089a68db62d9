"""`/v1/jobs`: submit (JSON or multipart) and read, with long-polling."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Blueprint, g, jsonify, request

from service.deps import services
from visionq.errors import InvalidRequest
from visionq.models import JobRequest

blueprint = Blueprint("jobs", __name__)

MAX_WAIT_SECONDS = 60.0
_FORM_FIELDS = {
    "prompt",
    "system",
    "model",
    "max_completion_tokens",
    "webhook_url",
    "api",
    "resize",
}
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait=(\d+(?:\.\d+)?)")


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


def parse_job_request() -> tuple[JobRequest, list[Any]]:
    """The request model and uploaded files from any of the three body forms of API.md."""
    mimetype = request.mimetype
    if mimetype == "application/json":
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise InvalidRequest("the body is not a JSON object")
        return JobRequest.model_validate(body), []
    if mimetype == "multipart/form-data":
        unknown_files = set(request.files) - {"image"}
        if unknown_files:
            raise InvalidRequest(
                "upload files in fields named `image`", param=sorted(unknown_files)[0]
            )
        uploads = [f.stream for f in request.files.getlist("image")]
        form = request.form
        if "request" in form:
            if set(form) - {"request"}:
                raise InvalidRequest(
                    "give either a `request` field or plain fields, not both",
                    param=sorted(set(form) - {"request"})[0],
                )
            try:
                body = json.loads(form["request"])
            except ValueError:
                raise InvalidRequest("the `request` field is not JSON", param="request") from None
            if not isinstance(body, dict):
                raise InvalidRequest("the `request` field is not a JSON object", param="request")
            return JobRequest.model_validate(body), uploads
        unknown = set(form) - _FORM_FIELDS
        if unknown:
            raise InvalidRequest(f"unknown field {sorted(unknown)[0]!r}", param=sorted(unknown)[0])
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
    svc = services()
    record = svc.intake.submit(job_request, tenant=g.tenant, uploads=uploads)
    svc.enqueue_prepare(record.id)
    status = 202
    if wait > 0:
        record = svc.jobs.wait(record.id, tenant=g.tenant, timeout=wait)
        status = 201 if record.finished else 202
    response = jsonify(record.public())
    response.status_code = status
    response.headers["Location"] = f"/v1/jobs/{record.id}"
    return response


@blueprint.get("/v1/jobs/<job_id>")
def get_job(job_id: str) -> Any:
    wait = _wait_seconds(request.args.get("wait"), param="wait")
    record = services().jobs.wait(job_id, tenant=g.tenant, timeout=wait)
    return jsonify(record.public())
