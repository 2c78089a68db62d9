"""The Flask application factory: wiring, authentication and the one error handler."""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Flask, g, jsonify, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from service import jobs_api, ops_api
from service.auth import authenticate
from service.deps import Services, services
from visionq.errors import (
    InvalidRequest,
    PayloadTooLarge,
    Unavailable,
    VisionqError,
)
from visionq.settings import Settings

log = logging.getLogger(__name__)

_HTTP_TYPES = {
    400: "invalid_request",
    401: "unauthorized",
    404: "not_found",
    405: "invalid_request",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "unavailable",
}


def create_app(settings: Settings) -> Flask:
    app = Flask("visionq")
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        # Form fields (the `request` JSON of a multipart body may carry data URLs) share the cap.
        MAX_FORM_MEMORY_SIZE=settings.max_request_bytes,
        JSON_SORT_KEYS=False,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["visionq"] = Services(settings)

    app.before_request(authenticate)
    app.before_request(_limit_rate)
    app.register_error_handler(Exception, _render_error)
    app.register_blueprint(jobs_api.blueprint)
    app.register_blueprint(ops_api.blueprint)
    return app


def _limit_rate() -> None:
    """Counted per tenant after authentication, so a stranger's bad key costs nobody."""
    if "tenant" in g:
        services().tenant_limits.hit(g.tenant)


def _param(loc: tuple[int | str, ...]) -> str | None:
    """pydantic's ("messages", 0, "content") as "messages[0].content", like the intake's."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or None


def _render_error(exc: Exception) -> Any:
    """The one place an exception becomes a response: always JSON, never a traceback."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        exc = InvalidRequest(first["msg"], param=_param(first["loc"]))
    elif isinstance(exc, RequestEntityTooLarge):
        exc = PayloadTooLarge("the request body is over the configured cap")
    elif isinstance(exc, HTTPException):
        status = exc.code or 500
        body = {
            "error": {
                "type": _HTTP_TYPES.get(status, "internal"),
                "message": exc.description or exc.name,
                "param": None,
            }
        }
        # Keep what the exception says besides its HTML body, e.g. a 405's `Allow`.
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
        return jsonify(body), status, headers
    elif isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        exc = Unavailable("the job store (Redis) is unreachable", retry_after=5)
    elif not isinstance(exc, VisionqError):
        log.exception("unhandled error on %s %s", request.method, request.path)
        body = {"error": {"type": "internal", "message": "internal error", "param": None}}
        return jsonify(body), 500
    response = jsonify({"error": exc.to_dict()})
    response.status_code = exc.status
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None and exc.status in (429, 503):
        response.headers["Retry-After"] = str(int(retry_after))
    return response
