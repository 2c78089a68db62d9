"""`/v1/files` (OpenAI's Files API): upload, list, read, download streamed, delete."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

from flask import Blueprint, Response, g, jsonify, request

from service.deps import services
from service.pages import cursor_page
from visionq import retention
from visionq.errors import InvalidRequest
from visionq.models import FileObject, whole_number
from visionq.state.files import FileRecord

blueprint = Blueprint("files", __name__)

#: OpenAI's bounds for a page of files.
DEFAULT_LIMIT, MAX_LIMIT = 10_000, 10_000
CHUNK_BYTES = 1024 * 1024
_TYPES = {"batch": "application/jsonl", "batch_output": "application/jsonl"}


def file_object(record: FileRecord) -> dict[str, Any]:
    f = record.fields
    extra = {k: f.get(k) for k in ("format", "width", "height", "image_tokens") if k in f}
    return FileObject.model_validate(
        {
            "id": record.id,
            "object": "file",
            "bytes": f["bytes"],
            "created_at": f["created_at"],
            "expires_at": f["expires_at"],
            "filename": f["filename"],
            "purpose": f["purpose"],
            "status": "processed",
            **extra,
        }
    ).model_dump(mode="json", exclude_none=True)


@blueprint.post("/v1/files")
def upload_file() -> Any:
    if request.mimetype != "multipart/form-data":
        raise InvalidRequest("send multipart/form-data with `file` and `purpose`")
    unknown = (set(request.files) - {"file"}) | (set(request.form) - {"purpose"})
    if unknown:
        name = sorted(n or "" for n in unknown)[0]
        raise InvalidRequest(f"unknown field {name!r}", param=name)
    uploads = request.files.getlist("file")
    if len(uploads) != 1:
        raise InvalidRequest("send one file in the field `file`", param="file")
    if "purpose" not in request.form:
        raise InvalidRequest("purpose is required", param="purpose")
    record = services().files.create(
        uploads[0].stream,
        tenant=g.tenant,
        purpose=request.form["purpose"],
        filename=uploads[0].filename or "upload",
    )
    return jsonify(file_object(record))


@blueprint.get("/v1/files")
def list_files() -> Any:
    raw = request.args.get("limit")
    limit = DEFAULT_LIMIT if raw is None else whole_number(raw)
    if limit is None or not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be 1 to {MAX_LIMIT}", param="limit")
    order = request.args.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("order is asc or desc", param="order")
    page, more = services().files.records.list_files(
        tenant=g.tenant,
        purpose=request.args.get("purpose"),
        limit=limit,
        after=request.args.get("after"),
        newest_first=order == "desc",
    )
    return jsonify(cursor_page([file_object(r) for r in page], more))


@blueprint.get("/v1/files/<file_id>")
def get_file(file_id: str) -> Any:
    return jsonify(file_object(services().files.get(file_id, tenant=g.tenant)))


@blueprint.get("/v1/files/<file_id>/content")
def file_content(file_id: str) -> Any:
    svc = services()
    record = svc.files.get(file_id, tenant=g.tenant)
    stream, length = svc.files.open_content(file_id, tenant=g.tenant)
    mimetype = _TYPES.get(record.purpose) or f"image/{record.fields.get('format', 'png')}"
    return Response(_chunks(stream), mimetype=mimetype, headers={"Content-Length": str(length)})


@blueprint.delete("/v1/files/<file_id>")
def delete_file(file_id: str) -> Any:
    svc = services()
    retention.delete_file(svc.files, svc.jobs, svc.store, file_id, tenant=g.tenant)
    return jsonify({"id": file_id, "object": "file", "deleted": True})


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    with stream:
        while chunk := stream.read(CHUNK_BYTES):
            yield chunk
