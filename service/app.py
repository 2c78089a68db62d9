"""The Flask application factory: wiring, authentication and the one error handler."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

import redis
from flask import Flask, Response, g, jsonify, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from service import batches_api, files_api, jobs_api, ops_api, usage_api
from service.auth import authenticate
from service.deps import Services, services
from service.uploads import BODY_KEY, BodyInput, UploadRequest, body_deadline, buffered_uploads
from visionq.errors import (
    InvalidRequest,
    PayloadTooLarge,
    RateLimited,
    Unavailable,
    VisionqError,
    type_for_status,
)
from visionq.ops import logs, metrics
from visionq.settings import Settings
from visionq.state.redis import redis_errors
from visionq.state.storewrites import refusal_reason

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> Flask:
    app = Flask("visionq")
    app.request_class = UploadRequest
    app.wsgi_app = body_deadline(  # type: ignore[method-assign, assignment]
        buffered_uploads(app.wsgi_app), settings.body_read_timeout
    )
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        # Form fields (the `request` JSON of a multipart body may carry data URLs) share the cap.
        MAX_FORM_MEMORY_SIZE=settings.max_request_bytes,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["visionq"] = Services(settings)

    # First, so that a request refused by authentication is timed and named too.
    app.before_request(_begin)
    app.before_request(authenticate)
    app.before_request(_limit_rate)
    app.before_request(_limit_uploads)
    app.after_request(_count)
    app.teardown_request(_end)
    app.register_error_handler(Exception, _render_error)
    app.register_blueprint(jobs_api.blueprint)
    app.register_blueprint(batches_api.blueprint)
    app.register_blueprint(files_api.blueprint)
    app.register_blueprint(ops_api.blueprint)
    app.register_blueprint(usage_api.blueprint)
    return app


#: A client's own request id is kept when it is a plain token; anything else is replaced,
#: since it ends up in every log line of the job.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Requests whose handlers only read the store: they need not be refused when it refuses
#: writes (see `TenantLimits.hit`). Counting tokens stores nothing, whatever its method.
_READS = frozenset({"GET", "HEAD"})
_READ_ENDPOINTS = frozenset({"jobs.count_tokens"})


def _begin() -> None:
    g.started = time.perf_counter()
    given = request.headers.get("X-Request-Id", "")
    g.request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    g.log_context = logs.bind(request_id=g.request_id)


def _limit_rate() -> None:
    """Counted per tenant after authentication, so a stranger's bad key costs nobody."""
    if "tenant" in g:
        logs.bind(tenant=g.tenant)
        reads = request.method in _READS or request.endpoint in _READ_ENDPOINTS
        services().tenant_limits.hit(g.tenant, writes=not reads)


def _limit_uploads() -> None:
    """Checked before the body is read, so a refused upload costs no more than its headers;
    the slot is given back as soon as the body is in."""
    body: BodyInput | None = request.environ.get(BODY_KEY)
    if "tenant" not in g or body is None or body.received:
        return
    try:
        slot = services().upload_slots.take(g.tenant)
    except RateLimited:
        metrics.UPLOADS_REFUSED.labels("tenant_cap").inc()
        raise
    if slot is not None:
        g.upload_slot = slot
        body.when_received(_release_upload_slot)


def _release_upload_slot() -> None:
    slot = g.pop("upload_slot", None)
    if slot is None:
        return
    try:
        slot.release()
    except Unavailable:
        # Its lease frees it when it ends.
        log.warning("could not give back an upload slot", exc_info=True)


def _count(response: Response) -> Response:
    # Bounded labels: the route's rule, not the path (which holds job ids); odd methods as one.
    method = request.method if request.method in _METHODS else "other"
    endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
    metrics.HTTP_REQUESTS.labels(method, endpoint, str(response.status_code)).inc()
    elapsed = time.perf_counter() - g.started
    metrics.HTTP_REQUEST_SECONDS.labels(method, endpoint).observe(elapsed)
    response.headers["X-Request-Id"] = g.request_id
    return response


def _end(_exc: BaseException | None) -> None:
    _release_upload_slot()
    # gunicorn's threads serve one request after another: leave nothing to the next one.
    logs.reset(g.log_context)


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
                "type": type_for_status(status),
                "message": exc.description or exc.name,
                "param": None,
            }
        }
        # Keep what the exception says besides its HTML body, e.g. a 405's `Allow`.
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
        return jsonify(body), status, headers
    elif isinstance(exc, redis.RedisError):
        exc = _mapped_redis_error(exc)
    if not isinstance(exc, VisionqError):
        log.exception("unhandled error on %s %s", request.method, request.path)
        body = {"error": {"type": "internal", "message": "internal error", "param": None}}
        return jsonify(body), 500
    if isinstance(exc, Unavailable) and (reason := refusal_reason(exc)) is not None:
        services().write_refusals.record(reason)
    response = jsonify({"error": exc.to_dict()})
    response.status_code = exc.status
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None and exc.status in (429, 503):
        response.headers["Retry-After"] = str(int(retry_after))
    return response


def _mapped_redis_error(exc: redis.RedisError) -> Exception:
    """A Redis error that reached us raw (not through `redis_errors`: the rate limiter's
    library, say) as `redis_errors` maps it, so every path answers an outage or a full
    store with the same 503 and message; one it does not map stays what it is."""
    try:
        with redis_errors():
            raise exc
    except Unavailable as mapped:
        return mapped
    except redis.RedisError:
        return exc
