"""Secrets never leave: not in logs, job records, webhook bodies or recorded errors."""

from __future__ import annotations

import base64

import pytest
import redis

from tests.support import CORPUS, KEYS, SIM_KEY, WEBHOOK_BODIES, WEBHOOK_SECRET, Stack, data_url
from tests.support.databases import Databases

SECRETS = {
    "MIMO_API_KEY": SIM_KEY,
    **{f"client key of {tenant}": key for tenant, key in KEYS.items()},
    "webhook secret": WEBHOOK_SECRET,
    "webhook secret, decoded": base64.b64decode(WEBHOOK_SECRET.removeprefix("whsec_")).decode(),
}


def test_an_upstream_error_that_echoes_our_key_is_scrubbed(stack: Stack) -> None:
    job = stack.run(
        {
            "prompt": "[sim:status=400,echo_headers]",
            "images": [data_url(CORPUS / "good" / "hopper.png")],
        }
    )
    assert job["status"] == "failed"
    assert job["error"]["type"] == "upstream_bad_request"
    assert "request headers:" in job["error"]["message"]  # the echo did come back
    assert "[redacted]" in job["error"]["message"]
    assert SIM_KEY not in job["error"]["message"]


@pytest.mark.last
def test_no_secret_in_any_log_redis_value_or_webhook_body(
    stack: Stack, redis_databases: Databases, tmp_path_factory: pytest.TempPathFactory
) -> None:
    logs = sorted(tmp_path_factory.getbasetemp().rglob("*.log"))
    places: dict[str, bytes] = {str(path): path.read_bytes() for path in logs}
    for db in range(redis_databases.count):
        client = redis.Redis.from_url(redis_databases.url(db))
        for key in client.scan_iter(count=1000):
            kind = client.type(key)
            if kind == b"string":
                places[f"redis {db} {key!r}"] = client.get(key) or b""
            elif kind == b"hash":
                places[f"redis {db} {key!r}"] = b" ".join(client.hvals(key))
        client.close()
    places.update({f"webhook body {i}": body for i, body in enumerate(WEBHOOK_BODIES)})
    assert len(logs) >= 6 and WEBHOOK_BODIES  # the session did produce what is searched
    leaks = [
        f"{name} in {where}"
        for name, secret in SECRETS.items()
        for where, text in places.items()
        if secret.encode() in text
    ]
    print(f"\nsecret check: {len(SECRETS)} secrets, {len(places)} places searched, 0 expected")
    assert leaks == []
