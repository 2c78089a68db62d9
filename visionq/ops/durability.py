"""Whether the Redis a worker is given keeps what it is given: a production check, run by
every worker at start-up, which warns rather than refuses because a managed Redis may
hide its configuration."""

from __future__ import annotations

import redis


def durability_warnings(client: redis.Redis) -> list[str]:
    """What about this Redis could lose jobs: eviction, or no persistence at all.

    Managed services often refuse CONFIG; then we say so rather than guess.
    """
    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy", "")
        save = client.config_get("save").get("save", "")
        aof = client.info("persistence").get("aof_enabled", 0)
    except redis.ResponseError:
        return [
            "cannot read the Redis configuration (CONFIG refused): check by hand that "
            "maxmemory-policy is noeviction and that AOF or RDB persistence is on"
        ]
    warnings = []
    if policy != "noeviction":
        warnings.append(
            f"Redis maxmemory-policy is {policy!r}: under memory pressure it "
            "may evict queued messages and job records; set noeviction"
        )
    if not aof and not save:
        warnings.append(
            "Redis keeps nothing on disk (no AOF, no RDB): a restart loses every "
            "queued job; run it with --appendonly yes"
        )
    return warnings
