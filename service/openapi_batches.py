"""The bulk routes of the OpenAPI document (files, and batches in both forms), rendered
from `visionq.models` like the rest; `service.openapi` adds them to its paths and these
models to its schemas."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from visionq.models import (
    AnthropicBatchCreate,
    Batch,
    BatchCreate,
    BatchList,
    FileDeleted,
    FileForm,
    FileList,
    FileObject,
    MessageBatch,
    MessageBatchList,
)

#: Request models (validated) and answer models (serialized), for the schemas.
REQUEST_MODELS: list[type[BaseModel]] = [BatchCreate, AnthropicBatchCreate, FileForm]
ANSWER_MODELS: list[type[BaseModel]] = [
    Batch,
    BatchList,
    MessageBatch,
    MessageBatchList,
    FileObject,
    FileList,
    FileDeleted,
]
_FILE_ID = {"name": "file_id", "in": "path", "required": True, "schema": {"type": "string"}}

_BATCH_ID = {"name": "batch_id", "in": "path", "required": True, "schema": {"type": "string"}}
_LIMIT = {"name": "limit", "in": "query", "schema": {"type": "integer", "maximum": 100}}

Json = Callable[[type[BaseModel], str], dict[str, Any]]
Errors = Callable[..., dict[str, Any]]


def batch_paths(
    json: Json, errors: Errors, ref: Callable[[type[BaseModel]], Any]
) -> dict[str, Any]:
    """The paths of `/v1/batches` and `/anthropic/v1/messages/batches`."""

    def body(model: type[BaseModel]) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": ref(model)}}}

    batch = json(Batch, "the batch")
    message_batch = json(MessageBatch, "the message batch")
    file = json(FileObject, "the file")
    return {
        "/v1/files": {
            "post": {
                "summary": "Upload a file: a JSONL batch input, or an image (purpose vision)",
                "requestBody": {
                    "required": True,
                    "content": {"multipart/form-data": {"schema": ref(FileForm)}},
                },
                "responses": {"200": file, **errors(400, 401, 408, 413, 415, 422, 503)},
            },
            "get": {
                "summary": "The tenant's files",
                "parameters": [
                    {"name": "purpose", "in": "query", "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer"}},
                    {"name": "after", "in": "query", "schema": {"type": "string"}},
                    {"name": "order", "in": "query", "schema": {"enum": ["asc", "desc"]}},
                ],
                "responses": {"200": json(FileList, "a page"), **errors(400, 401, 503)},
            },
        },
        "/v1/files/{file_id}": {
            "get": {
                "summary": "Read a file's record",
                "parameters": [_FILE_ID],
                "responses": {"200": file, **errors(401, 404, 503)},
            },
            "delete": {
                "summary": "Delete a file (its bytes go unless a job still uses them)",
                "parameters": [_FILE_ID],
                "responses": {"200": json(FileDeleted, "deleted"), **errors(401, 404, 503)},
            },
        },
        "/v1/files/{file_id}/content": {
            "get": {
                "summary": "The file's bytes, streamed",
                "parameters": [_FILE_ID],
                "responses": {
                    "200": {
                        "description": "the bytes",
                        "content": {"application/octet-stream": {"schema": {"type": "string"}}},
                    },
                    **errors(401, 404, 503),
                },
            }
        },
        "/v1/batches": {
            "post": {
                "summary": "Create a batch from an uploaded JSONL file (OpenAI's Batch API)",
                "requestBody": body(BatchCreate),
                "responses": {"200": batch, **errors(400, 401, 503)},
            },
            "get": {
                "summary": "The tenant's batches, newest first",
                "parameters": [
                    _LIMIT,
                    {"name": "after", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {"200": json(BatchList, "a page"), **errors(400, 401, 503)},
            },
        },
        "/v1/batches/{batch_id}": {
            "get": {
                "summary": "Read a batch",
                "parameters": [_BATCH_ID],
                "responses": {"200": batch, **errors(401, 404, 503)},
            }
        },
        "/v1/batches/{batch_id}/cancel": {
            "post": {
                "summary": "Cancel a batch: cancelling, then cancelled",
                "parameters": [_BATCH_ID],
                "responses": {"200": batch, **errors(401, 404, 409, 503)},
            }
        },
        "/anthropic/v1/messages/batches": {
            "post": {
                "summary": "Create a message batch (Anthropic's Message Batches API)",
                "requestBody": body(AnthropicBatchCreate),
                "responses": {"200": message_batch, **errors(400, 401, 413, 503)},
            },
            "get": {
                "summary": "The tenant's message batches, newest first",
                "parameters": [
                    _LIMIT,
                    {"name": "after_id", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {"200": json(MessageBatchList, "a page"), **errors(400, 401, 503)},
            },
        },
        "/anthropic/v1/messages/batches/{batch_id}": {
            "get": {
                "summary": "Read a message batch",
                "parameters": [_BATCH_ID],
                "responses": {"200": message_batch, **errors(401, 404, 503)},
            },
            "delete": {
                "summary": "Delete an ended message batch and its files",
                "parameters": [_BATCH_ID],
                "responses": {
                    "200": {"description": "`{id, type: message_batch_deleted}`"},
                    **errors(401, 404, 409, 503),
                },
            },
        },
        "/anthropic/v1/messages/batches/{batch_id}/cancel": {
            "post": {
                "summary": "Cancel a message batch: canceling, then ended",
                "parameters": [_BATCH_ID],
                "responses": {"200": message_batch, **errors(401, 404, 409, 503)},
            }
        },
        "/anthropic/v1/messages/batches/{batch_id}/results": {
            "get": {
                "summary": "An ended message batch's results, one JSON object a line",
                "parameters": [_BATCH_ID],
                "responses": {
                    "200": {
                        "description": "JSONL: {custom_id, result: {type, ...}} a line",
                        "content": {"application/binary": {"schema": {"type": "string"}}},
                    },
                    **errors(401, 404, 409, 503),
                },
            }
        },
    }
