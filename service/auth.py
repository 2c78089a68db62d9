"""Client authentication: a key names a tenant, and the tenant scopes every job it sees."""

from __future__ import annotations

import hmac

from flask import g, request

from service.deps import services
from visionq.errors import Unauthorized
from visionq.settings import Settings


def tenant_for_key(settings: Settings, key: str) -> tuple[str, bool] | None:
    """The tenant owning `key`, and whether the key is an admin's (`VISIONQ_ADMIN_KEYS`),
    comparing against every key in constant time."""
    found = None
    for admin, pairs in ((False, settings.api_keys), (True, settings.admin_keys)):
        for tenant, candidate in pairs:
            if hmac.compare_digest(candidate.get_secret_value().encode(), key.encode()):
                found = (tenant, admin)
    return found


def authenticate() -> None:
    """Every /v1 and /anthropic route needs a client key (`Authorization: Bearer` or
    `api-key`; on /anthropic also `x-api-key`, as the Anthropic SDK sends it)."""
    anthropic = request.path.startswith("/anthropic/")
    if not (request.path.startswith("/v1/") or anthropic):
        return
    settings = services().settings
    if settings.auth_disabled:
        g.tenant, g.admin = "default", True
        return
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        key = header[7:].strip()
    else:
        key = request.headers.get("api-key", "")
    if not key and anthropic:
        key = request.headers.get("x-api-key", "")
    found = tenant_for_key(settings, key) if key else None
    if found is None:
        raise Unauthorized("missing or unknown API key")
    g.tenant, g.admin = found
