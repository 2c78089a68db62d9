"""`GET /v1/usage`: a tenant's usage and cost per bucket (API.md, "Usage, cost and quotas")."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from flask import Blueprint, g, jsonify, request
from flask.typing import ResponseReturnValue

from service.deps import services
from visionq.errors import InvalidRequest
from visionq.usage_report import DAY, GROUPS, usage_report

blueprint = Blueprint("usage", __name__)

#: Tenant-hours one answer may read (a year of one tenant's hours is 8,760).
MAX_TENANT_HOURS = 100_000
DEFAULT_DAYS = 7


@blueprint.get("/v1/usage")
def get_usage() -> ResponseReturnValue:
    svc = services()
    now = time.time()
    end = _when(request.args.get("end"), "end", default=now)
    start = _when(request.args.get("start"), "start", default=end - DEFAULT_DAYS * DAY)
    if start >= end:
        raise InvalidRequest("start must be before end", param="start")
    retention = svc.settings.usage_retention_days * DAY
    start = max(start, now - retention)
    group_by = _group_by(request.args.get("group_by", "day"))
    tenant = request.args.get("tenant")
    if (tenant is not None or "tenant" in group_by) and not g.admin:
        raise InvalidRequest(
            "tenant= and group_by=tenant need an admin key (VISIONQ_ADMIN_KEYS)", param="tenant"
        )
    if tenant is not None:
        tenants = [tenant]
    elif "tenant" in group_by:
        tenants = svc.usage.tenants()
    else:
        tenants = [g.tenant]
    if len(tenants) * (end - start) / 3600 > MAX_TENANT_HOURS:
        raise InvalidRequest(
            f"the range covers more than {MAX_TENANT_HOURS} tenant-hours; narrow start and end",
            param="start",
        )
    rows = svc.usage.rows(tenants, start=start, end=end)
    priced = bool(svc.settings.prices)
    return jsonify(usage_report(rows, start=start, end=end, group_by=group_by, priced=priced))


def _when(raw: str | None, param: str, *, default: float) -> float:
    """Unix seconds, or an ISO 8601 date or time (UTC unless it says otherwise)."""
    if raw is None or not raw.strip():
        return default
    raw = raw.strip()
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest(
            f"{param} must be Unix seconds or an ISO 8601 date or time", param=param
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _group_by(raw: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(p.strip() for p in raw.split(",") if p.strip()))
    unknown = [n for n in names if n not in GROUPS]
    if unknown or not names or {"hour", "day"} <= set(names):
        raise InvalidRequest(
            f"group_by takes one or more of {', '.join(GROUPS)} (hour or day, not both)",
            param="group_by",
        )
    return names
