"""What a submit writes and what the listing answers, with no worker to move a job on."""

from __future__ import annotations

import base64
import json

import redis
from flask.testing import FlaskClient

from tests.support import CORPUS, bearer, data_url
from visionq.broker import PREPARE_QUEUE, PREPARE_TASK
from visionq.models import Job, JobList
from visionq.state.keys import job as job_key

IMAGE = data_url(CORPUS / "good" / "hopper.jpg")


def _submit(client: FlaskClient, prompt: str, tenant: str = "alice") -> str:
    response = client.post(
        "/v1/jobs", json={"prompt": prompt, "images": [IMAGE]}, headers=bearer(tenant)
    )
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == f"/v1/jobs/{response.json['id']}"
    return str(response.json["id"])


def test_a_submit_queues_exactly_one_prepare_message_for_its_job(
    client: FlaskClient, redis_db: redis.Redis
) -> None:
    job_id = _submit(client, "x")
    lists = sorted(k for k in redis_db.scan_iter() if redis_db.type(k) == b"list")
    assert lists == [PREPARE_QUEUE.encode()]  # nothing for the upstream or webhooks yet
    [raw] = redis_db.lrange(PREPARE_QUEUE, 0, -1)
    message = json.loads(raw)
    assert message["headers"]["task"] == PREPARE_TASK
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert (args, kwargs) == ([job_id], {})
    assert redis_db.hget(job_key(job_id), "status") == b"queued"
    job = client.get(f"/v1/jobs/{job_id}", headers=bearer("alice")).json
    Job.model_validate(job)
    assert (job["status"], job["attempts"], job["result"]) == ("queued", 0, None)


def test_the_listing_pages_a_tenants_own_jobs_newest_first(client: FlaskClient) -> None:
    mine = [_submit(client, f"a{i}") for i in range(3)]
    theirs = _submit(client, "b", tenant="bob")
    first = client.get("/v1/jobs?limit=2", headers=bearer("alice")).json
    JobList.model_validate(first)
    assert set(first) == {"object", "data", "has_more", "next"}
    assert first["object"] == "list"
    assert [j["id"] for j in first["data"]] == [mine[2], mine[1]]
    assert first["has_more"] is True and first["next"]
    rest = client.get(f"/v1/jobs?limit=2&after={first['next']}", headers=bearer("alice")).json
    assert [j["id"] for j in rest["data"]] == [mine[0]]
    assert (rest["has_more"], rest["next"]) == (False, None)
    bobs = client.get("/v1/jobs", headers=bearer("bob")).json
    assert [j["id"] for j in bobs["data"]] == [theirs]
    queued = client.get("/v1/jobs?status=queued", headers=bearer("alice")).json
    done = client.get("/v1/jobs?status=succeeded", headers=bearer("alice")).json
    assert [j["id"] for j in queued["data"]] == mine[::-1]
    assert done["data"] == []
