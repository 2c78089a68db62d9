"""Operations endpoints: liveness, readiness, metrics and the OpenAPI document.

None of them needs a client key: load balancers and Prometheus call them, and nothing
they answer is a tenant's (nor a secret: `/metrics` has counts and durations only).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request
from prometheus_client.exposition import choose_encoder

from service.deps import services
from service.openapi import openapi_document
from visionq.errors import Unavailable
from visionq.state.storewrites import refusal_reason

blueprint = Blueprint("ops", __name__)


@blueprint.get("/healthz")
def healthz() -> Any:
    return jsonify({"status": "ok", "checks": {}})


@blueprint.get("/readyz")
def readyz() -> Any:
    """Ready when Redis and storage answer; a load balancer stops sending traffic otherwise.

    Redis is asked for a write, not a PING, so that a Redis at maxmemory (which answers
    PING and refuses every submit) is reported: `degraded`, with the reason in `checks`,
    but still 200. Every replica shares that Redis, so taking them all out of the load
    balancer would stop the reads that still work and turn the submits' 503, with its
    Retry-After, into connection errors; the metric and the log line are the alarm.
    """
    svc = services()
    checks: dict[str, str] = {}
    degraded = False
    for name, ping in (("redis", svc.write_probe.probe), ("storage", svc.store.ping)):
        try:
            ping()
            checks[name] = "ok"
        except Unavailable as exc:
            checks[name] = exc.message
            if (reason := refusal_reason(exc)) is not None:
                svc.write_refusals.record(reason)
                degraded = True
    ready = all(value == "ok" for value in checks.values()) or (
        degraded and checks["storage"] == "ok"
    )
    status = "degraded" if degraded and ready else "ok" if ready else "unavailable"
    response = jsonify({"status": status, "checks": checks})
    response.status_code = 200 if ready else 503
    if not ready:
        response.headers["Retry-After"] = "5"
    return response


@blueprint.get("/metrics")
def metrics() -> Any:
    """Prometheus text format (or OpenMetrics, when the scraper asks for it)."""
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encode(services().metrics), content_type=content_type)


@blueprint.get("/openapi.json")
def openapi() -> Any:
    return jsonify(openapi_document())
