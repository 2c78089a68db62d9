"""The OpenAPI 3.1 document, rendered from the pydantic models that validate requests.

Only the list of routes is written here; every schema comes from `visionq.models` through
pydantic's own JSON Schema generator, so the document cannot drift from the validation.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from service.openapi_batches import ANSWER_MODELS, REQUEST_MODELS, batch_paths
from visionq import __version__
from visionq.models import (
    ErrorResponse,
    Health,
    Job,
    JobForm,
    JobList,
    JobRequest,
    TokenCount,
    UsageReport,
)

_REF = "#/components/schemas/{model}"
_MODELS: list[type[BaseModel]] = [
    JobRequest,
    JobForm,
    Job,
    JobList,
    ErrorResponse,
    Health,
    TokenCount,
    UsageReport,
    *REQUEST_MODELS,
    *ANSWER_MODELS,
]
_REQUEST_EXAMPLE = {
    "model": "mimo-v2.5",
    "messages": [
        {"role": "system", "content": "You are MiMo, an AI assistant developed by Xiaomi."},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                {"type": "text", "text": "please describe the content of the image"},
            ],
        },
    ],
    "max_completion_tokens": 1024,
    "webhook": {"url": "https://client.example.com/hooks/visionq"},
    "metadata": {"order": "42"},
}
_JOB_EXAMPLE = {
    "id": "job_019ab3c4d5e6f7a8b9c0d1e2f3a4",
    "object": "job",
    "status": "succeeded",
    "model": "mimo-v2.5",
    "api": "openai",
    "created_at": 1764000000.123,
    "started_at": 1764000000.140,
    "completed_at": 1764000003.902,
    "images": [
        {
            "index": 0,
            "source": "url",
            "url": "https://example.com/a.png",
            "format": "png",
            "width": 1024,
            "height": 1024,
            "bytes": 123456,
            "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "image_tokens": 1024,
            "resized": False,
        }
    ],
    "usage_estimate": {"image_tokens": 1024},
    "result": {
        "content": "A forest stream at golden hour...",
        "reasoning_content": "...",
        "finish_reason": "stop",
        "usage": {
            "prompt_tokens": 1085,
            "completion_tokens": 574,
            "total_tokens": 1659,
            "prompt_tokens_details": {"image_tokens": 1024},
        },
        "response": {"object": "chat.completion"},
    },
    "error": None,
    "attempts": 1,
    "webhook": {
        "url": "https://client.example.com/hooks/visionq",
        "status": "delivered",
        "attempts": 1,
        "last_status_code": 200,
    },
    "metadata": {"order": "42"},
}


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": _REF.format(model=model.__name__)}


def _json(model: type[BaseModel], description: str, example: Any = None) -> dict[str, Any]:
    content: dict[str, Any] = {"schema": _ref(model)}
    if example is not None:
        content["example"] = example
    return {"description": description, "content": {"application/json": content}}


#: What any /v1 operation can answer besides its own errors: the tenant's request limit,
#: and the server's refusal of an over-long request line or header fields.
_EVERY_V1_OPERATION = (414, 429, 431)


def _errors(*statuses: int) -> dict[str, Any]:
    """The error responses of a /v1 operation."""
    statuses = tuple(sorted({*statuses, *_EVERY_V1_OPERATION}))
    return {
        str(s): _json(
            ErrorResponse,
            "error",
            {"error": {"type": "invalid_request", "message": "...", "param": None}},
        )
        for s in statuses
    }


def _body() -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "application/json": {"schema": _ref(JobRequest), "example": _REQUEST_EXAMPLE},
            "multipart/form-data": {
                "schema": _ref(JobForm),
                "example": {"image": "(a file)", "prompt": "describe"},
            },
        },
    }


_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}


@cache
def openapi_document() -> dict[str, Any]:
    _, schema = models_json_schema(
        [
            (m, "validation" if m in (JobRequest, JobForm, *REQUEST_MODELS) else "serialization")
            for m in _MODELS
        ],
        ref_template=_REF,
    )
    wait = {
        "name": "wait",
        "in": "query",
        "schema": {"type": "number", "maximum": 60},
        "description": "hold the answer until the job is finished or this many seconds pass",
    }
    job = _json(Job, "the job", _JOB_EXAMPLE)
    paths = {
        "/v1/jobs": {
            "post": {
                "summary": "Submit a job (JSON or multipart)",
                "parameters": [
                    {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string"}},
                    {
                        "name": "Cancel-After",
                        "in": "header",
                        "schema": {"type": "string"},
                        "example": "5m",
                        "description": "still waiting for a worker or the upstream budget "
                        "after this long (90s, 5m, 1h30m, 500ms), the job ends canceled with "
                        "deadline_exceeded, unsent",
                    },
                    {
                        "name": "Prefer",
                        "in": "header",
                        "schema": {"type": "string"},
                        "example": "wait=30",
                    },
                ],
                "requestBody": _body(),
                "responses": {
                    "202": _json(Job, "accepted", {**_JOB_EXAMPLE, "status": "queued"}),
                    "201": _json(Job, "finished within Prefer: wait=N", _JOB_EXAMPLE),
                    "200": _json(Job, "the job made earlier with this Idempotency-Key"),
                    # 408: the body did not arrive within VISIONQ_BODY_READ_TIMEOUT.
                    **_errors(400, 401, 408, 409, 413, 415, 422, 503),
                },
            },
            "get": {
                "summary": "The tenant's jobs, newest first",
                "parameters": [
                    {"name": "status", "in": "query", "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "maximum": 100}},
                    {
                        "name": "after",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "the `next` of the previous page",
                    },
                ],
                "responses": {
                    "200": _json(
                        JobList,
                        "a page",
                        {
                            "object": "list",
                            "data": [_JOB_EXAMPLE],
                            "has_more": True,
                            "next": _JOB_EXAMPLE["id"],
                        },
                    ),
                    **_errors(400, 401, 503),
                },
            },
        },
        "/v1/jobs/{job_id}": {
            "get": {
                "summary": "Read a job, optionally waiting for it to finish",
                "parameters": [_JOB_ID, wait],
                "responses": {"200": job, **_errors(400, 401, 404, 503)},
            },
            "delete": {
                "summary": "Delete a job and the images no other job uses",
                "parameters": [_JOB_ID],
                "responses": {"204": {"description": "deleted"}, **_errors(401, 404, 503)},
            },
        },
        "/v1/jobs/{job_id}/cancel": {
            "post": {
                "summary": "Cancel an unfinished job",
                "parameters": [_JOB_ID],
                "responses": {
                    "200": _json(Job, "canceled", {**_JOB_EXAMPLE, "status": "canceled"}),
                    **_errors(401, 404, 409, 503),
                },
            }
        },
        "/v1/jobs/{job_id}/webhook/redeliver": {
            "post": {
                "summary": "Send a finished job's event again (same webhook-id)",
                "parameters": [_JOB_ID],
                "responses": {"202": job, **_errors(401, 404, 409, 503)},
            }
        },
        "/v1/tokens": {
            "post": {
                "summary": "Count image tokens without making a job",
                "requestBody": _body(),
                "responses": {
                    "200": _json(
                        TokenCount,
                        "the counts",
                        {
                            "images": [
                                {
                                    "index": 0,
                                    "format": "png",
                                    "width": 1024,
                                    "height": 1024,
                                    "image_tokens": 1024,
                                }
                            ],
                            "image_tokens": 1024,
                            "input_tokens": 1031,
                            "input_cost": 0.000412,
                        },
                    ),
                    **_errors(400, 401, 408, 413, 415, 422, 503),
                },
            }
        },
        "/v1/usage": {
            "get": {
                "summary": "The tenant's usage and cost per bucket",
                "parameters": [
                    {
                        "name": name,
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": description,
                    }
                    for name, description in (
                        ("start", "Unix seconds or ISO 8601 (default: 7 days before end)"),
                        ("end", "Unix seconds or ISO 8601 (default: now)"),
                        (
                            "group_by",
                            "one or more of hour, day, model, account, tenant, comma-separated "
                            "(default day); tenant needs an admin key",
                        ),
                        ("tenant", "another tenant's usage (admin keys only)"),
                    )
                ],
                "responses": {
                    "200": _json(UsageReport, "the buckets and their total"),
                    **_errors(400, 401, 503),
                },
            }
        },
        "/healthz": {
            "get": {
                "security": [],
                "summary": "Alive",
                "responses": {"200": _json(Health, "alive")},
            }
        },
        "/readyz": {
            "get": {
                "security": [],
                "summary": "Redis and storage answer",
                "responses": {"200": _json(Health, "ready"), "503": _json(Health, "not ready")},
            }
        },
        "/metrics": {
            "get": {
                "security": [],
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "security": [],
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1"}},
            }
        },
    }
    paths.update(batch_paths(_json, _errors, _ref))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "visionq",
            "version": __version__,
            "description": "Jobs of image understanding in front of Xiaomi MiMo.",
        },
        "components": {
            "schemas": schema.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }
