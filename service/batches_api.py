"""`/v1/batches` (OpenAI's Batch API) and `/anthropic/v1/messages/batches` (Anthropic's
Message Batches API): thin routes over `visionq.batches`, answering in each provider's
shapes so that their official SDKs work unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

from flask import Blueprint, Response, g, jsonify, request

from service.deps import services
from service.jobs_api import json_body
from service.pages import cursor_page
from visionq import batch_objects
from visionq.errors import Conflict, InvalidRequest
from visionq.models import AnthropicBatchCreate, BatchCreate, whole_number
from visionq.state.batches import BatchRecord

blueprint = Blueprint("batches", __name__)

#: OpenAI's page size bounds for `GET /v1/batches`, and Anthropic's.
DEFAULT_LIMIT, MAX_LIMIT = 20, 100
CHUNK_BYTES = 1024 * 1024


def _limit() -> int:
    raw = request.args.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    value = whole_number(raw)
    if value is None or not 1 <= value <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be 1 to {MAX_LIMIT}", param="limit")
    return value


def _openai(record: BatchRecord) -> dict[str, Any]:
    return batch_objects.openai_batch(record)


def _anthropic(record: BatchRecord) -> dict[str, Any]:
    return batch_objects.anthropic_batch(
        record,
        results_url=request.host_url.rstrip("/") + batch_objects.anthropic_results_path(record.id),
    )


@blueprint.post("/v1/batches")
def create_batch() -> Any:
    body = BatchCreate.model_validate(json_body())
    record = services().batches.create(
        tenant=g.tenant,
        api="openai",
        input_file_id=body.input_file_id,
        metadata=body.metadata,
        webhook_url=body.webhook.url if body.webhook else None,
        priority=body.priority,
    )
    return jsonify(_openai(record))


@blueprint.get("/v1/batches/<batch_id>")
def get_batch(batch_id: str) -> Any:
    return jsonify(_openai(services().batches.get(batch_id, tenant=g.tenant, api="openai")))


@blueprint.get("/v1/batches")
def list_batches() -> Any:
    page, more = services().batches.list_page(
        tenant=g.tenant, limit=_limit(), after=request.args.get("after"), api="openai"
    )
    return jsonify(cursor_page([_openai(b) for b in page], more))


@blueprint.post("/v1/batches/<batch_id>/cancel")
def cancel_batch(batch_id: str) -> Any:
    return jsonify(_openai(services().batches.cancel(batch_id, tenant=g.tenant, api="openai")))


@blueprint.post("/anthropic/v1/messages/batches")
def create_message_batch() -> Any:
    body = AnthropicBatchCreate.model_validate(json_body())
    record = services().batches.create_anthropic(
        tenant=g.tenant,
        requests=body.requests,
        webhook_url=body.webhook.url if body.webhook else None,
        priority=body.priority,
    )
    return jsonify(_anthropic(record))


@blueprint.get("/anthropic/v1/messages/batches/<batch_id>")
def get_message_batch(batch_id: str) -> Any:
    return jsonify(_anthropic(services().batches.get(batch_id, tenant=g.tenant, api="anthropic")))


@blueprint.get("/anthropic/v1/messages/batches")
def list_message_batches() -> Any:
    """Anthropic's page: `data`, `has_more`, `first_id`, `last_id`, cursor `after_id`."""
    page, more = services().batches.list_page(
        tenant=g.tenant, limit=_limit(), after=request.args.get("after_id"), api="anthropic"
    )
    return jsonify(cursor_page([_anthropic(b) for b in page], more, openai=False))


@blueprint.post("/anthropic/v1/messages/batches/<batch_id>/cancel")
def cancel_message_batch(batch_id: str) -> Any:
    record = services().batches.cancel(batch_id, tenant=g.tenant, api="anthropic")
    return jsonify(_anthropic(record))


@blueprint.delete("/anthropic/v1/messages/batches/<batch_id>")
def delete_message_batch(batch_id: str) -> Any:
    services().batches.delete(batch_id, tenant=g.tenant)
    return jsonify({"id": batch_id, "type": "message_batch_deleted"})


@blueprint.get("/anthropic/v1/messages/batches/<batch_id>/results")
def message_batch_results(batch_id: str) -> Any:
    found = services().batches.results(batch_id, tenant=g.tenant, api="anthropic")
    if found is None:
        raise Conflict(f"batch {batch_id} has not ended: its results come when it has")
    stream, length = found
    return Response(
        _chunks(stream),
        mimetype="application/binary",
        headers={"Content-Length": str(length)},
    )


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    with stream:
        while chunk := stream.read(CHUNK_BYTES):
            yield chunk
