"""Which tenant a request is: each way of sending a key names its own tenant, and a job
is seen only by the tenant whose key made it."""

from __future__ import annotations

import pytest
import redis
from flask.testing import FlaskClient

from tests.support import CORPUS, KEYS, bearer, data_url
from visionq.state.keys import job as job_key

JOB = {"prompt": "x", "images": [data_url(CORPUS / "good" / "hopper.jpg")]}


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {KEYS['bob']}"},
        {"Authorization": f"bearer {KEYS['bob']}"},
        {"api-key": KEYS["bob"]},
    ],
    ids=["bearer", "bearer-lowercase", "api-key"],
)
def test_every_form_of_bobs_key_makes_bobs_job(
    client: FlaskClient, redis_db: redis.Redis, headers: dict[str, str]
) -> None:
    response = client.post("/v1/jobs", json=JOB, headers=headers)
    assert response.status_code == 202, response.text
    job_id = response.json["id"]
    assert redis_db.hget(job_key(job_id), "tenant") == b"bob"
    assert client.get(f"/v1/jobs/{job_id}", headers={"api-key": KEYS["bob"]}).status_code == 200
    assert client.get(f"/v1/jobs/{job_id}", headers=bearer("bob")).status_code == 200
    assert client.get(f"/v1/jobs/{job_id}", headers=bearer("alice")).status_code == 404
    assert client.get(f"/v1/jobs/{job_id}", headers={"api-key": KEYS["alice"]}).status_code == 404


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": f"Bearer {KEYS['bob']}-not"},
        {"Authorization": KEYS["bob"]},  # a key with no scheme is no key
        {"api-key": ""},
    ],
    ids=["none", "wrong", "no-scheme", "empty"],
)
def test_a_missing_or_wrong_key_is_401_and_never_echoed(
    client: FlaskClient, redis_db: redis.Redis, headers: dict[str, str]
) -> None:
    response = client.post("/v1/jobs", json=JOB, headers=headers)
    assert response.status_code == 401
    assert response.json["error"]["type"] == "unauthorized"
    assert KEYS["bob"] not in response.text
    assert redis_db.dbsize() == 0  # refused before anything was counted or stored


def test_the_operations_endpoints_need_no_key(client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json["checks"] == {"redis": "ok", "storage": "ok"}
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/metrics").status_code == 200
