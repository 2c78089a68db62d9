"""The OpenAPI 3.1 document, rendered from the pydantic models that validate requests.

Only the list of routes is written here; every schema comes from `visionq.models` through
pydantic's own JSON Schema generator, so the document cannot drift from the validation.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from visionq import __version__
from visionq.models import ErrorResponse, Health, Job, JobRequest, TokenCount

_REF = "#/components/schemas/{model}"
_MODELS: list[type[BaseModel]] = [JobRequest, Job, ErrorResponse, Health, TokenCount]


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": _REF.format(model=model.__name__)}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): _json(ErrorResponse, "error") for s in statuses}


def _job_body() -> dict[str, Any]:
    multipart = {
        "type": "object",
        "properties": {
            "image": {"type": "array", "items": {"type": "string", "format": "binary"}},
            "request": {
                "type": "string",
                "description": "a JobRequest as JSON; parts may use "
                "the URL `upload:<n>` for the n-th uploaded file",
            },
            "prompt": {"type": "string"},
            "system": {"type": "string"},
            "model": {"type": "string"},
            "max_completion_tokens": {"type": "integer"},
            "webhook_url": {"type": "string"},
            "api": {"type": "string"},
        },
    }
    return {
        "required": True,
        "content": {
            "application/json": {"schema": _ref(JobRequest)},
            "multipart/form-data": {"schema": multipart},
        },
    }


@cache
def openapi_document() -> dict[str, Any]:
    _, schema = models_json_schema(
        [
            (model, "serialization" if model is not JobRequest else "validation")
            for model in _MODELS
        ],
        ref_template=_REF,
    )
    job_id = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
    wait = {"name": "wait", "in": "query", "schema": {"type": "number", "maximum": 60}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "visionq", "version": __version__},
        "components": {
            "schemas": schema.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/jobs": {
                "post": {
                    "summary": "Submit a job",
                    "requestBody": _job_body(),
                    "responses": {
                        "202": _json(Job, "accepted"),
                        "201": _json(Job, "finished within Prefer: wait=N"),
                        **_errors(400, 401, 413, 415, 422, 503),
                    },
                }
            },
            "/v1/jobs/{job_id}": {
                "get": {
                    "summary": "Read a job, optionally waiting for it to finish",
                    "parameters": [job_id, wait],
                    "responses": {"200": _json(Job, "the job"), **_errors(400, 401, 404, 503)},
                }
            },
            "/healthz": {"get": {"security": [], "responses": {"200": _json(Health, "alive")}}},
            "/readyz": {
                "get": {
                    "security": [],
                    "responses": {"200": _json(Health, "ready"), "503": _json(Health, "not ready")},
                }
            },
            "/openapi.json": {
                "get": {"security": [], "responses": {"200": {"description": "this document"}}}
            },
        },
    }
