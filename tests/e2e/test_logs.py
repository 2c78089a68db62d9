"""JSON log lines from the running stack, each naming its request, job, tenant, stage and
attempt; and the request id the API takes, makes and echoes."""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

import requests

from tests.support import CORPUS, Receiver, Stack, data_url

#: The stack's processes whose output is ours from the first line (the simulator's is not).
OURS = ("api", "worker-prepare", "worker-upstream", "worker-webhooks", "sweeper")


#: The one thing a worker prints outside logging: Celery's signal handler writes this
#: straight to stdout (after an empty line) when a worker is stopped, as chaos tests do.
CELERY_SHUTDOWN = re.compile(r"(worker: (Warm|Cold) shutdown \(MainProcess\))?")


def _lines(stack: Stack, name: str) -> list[dict[str, Any]]:
    process = next(p for p in stack.processes if p.name == name)
    text = process.log_path.read_text()
    return [json.loads(line) for line in text.splitlines() if not CELERY_SHUTDOWN.fullmatch(line)]


def _carrying(stack: Stack, name: str, request_id: str, stage: str | None) -> list[dict]:
    return [
        line
        for line in _lines(stack, name)
        if line.get("request_id") == request_id and line.get("stage") == stage
    ]


def test_every_line_of_a_job_names_its_request(stack: Stack, receiver: Receiver) -> None:
    request_id = f"test-{uuid.uuid4()}"
    with stack.session() as http:
        response = http.post(
            f"{stack.base_url}/v1/jobs",
            json={
                "prompt": "describe",
                "images": [data_url(CORPUS / "good" / "hopper.jpg")],
                "webhook": {"url": receiver.url},
            },
            headers={"X-Request-Id": request_id},
            timeout=60,
        )
    assert response.status_code == 202, response.text
    assert response.headers["X-Request-Id"] == request_id
    job_id = response.json()["id"]
    assert stack.wait(job_id)["status"] == "succeeded"

    expected = {
        "api": None,
        "worker-prepare": "prepare",
        "worker-upstream": "upstream",
        "worker-webhooks": "webhook",
    }
    found: dict[str, list[dict]] = {}
    deadline = time.monotonic() + 30  # the webhook goes out after the job is finished
    while set(found) != set(expected) and time.monotonic() < deadline:
        for name, stage in expected.items():
            if lines := _carrying(stack, name, request_id, stage):
                found[name] = lines
        time.sleep(0.2)
    assert set(found) == set(expected), stack.logs()

    accepted = [line for line in found["api"] if line["message"] == "job accepted"]
    assert accepted and accepted[0]["job_id"] == job_id and accepted[0]["tenant"] == "alice"
    for name in ("worker-prepare", "worker-upstream", "worker-webhooks"):
        for line in found[name]:
            assert line["job_id"] == job_id and line["tenant"] == "alice", line
            assert line["attempt"] == 1, line
            assert line["level"] in ("INFO", "WARNING", "ERROR"), line
            assert line["logger"].startswith("visionq."), line
            assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", line["time"]), line
    messages = {name: " | ".join(line["message"] for line in found[name]) for name in found}
    assert "prepared 1 images" in messages["worker-prepare"]
    assert "upstream answered 200" in messages["worker-upstream"]
    assert "job succeeded" in messages["worker-upstream"]
    assert "webhook answered 200" in messages["worker-webhooks"]


def test_every_line_of_ours_is_json(stack: Stack) -> None:
    for name in OURS:
        lines = _lines(stack, name)  # raises on a line that is not JSON
        assert lines or name == "sweeper", name  # the sweeper may have had nothing to say
        for line in lines:
            assert {"time", "level", "logger", "message"} <= set(line), (name, line)


def test_the_api_makes_a_request_id_when_none_or_a_strange_one_is_sent(stack: Stack) -> None:
    made = requests.get(f"{stack.base_url}/healthz", timeout=10).headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    for strange in ("has spaces", "x" * 129, "semi;colon", '{"json": 1}'):
        answered = requests.get(
            f"{stack.base_url}/healthz", headers={"X-Request-Id": strange}, timeout=10
        ).headers["X-Request-Id"]
        assert answered != strange and re.fullmatch(r"[0-9a-f]{32}", answered)
    # on an error too
    refused = requests.get(f"{stack.base_url}/v1/jobs", headers={"X-Request-Id": "r-1"}, timeout=10)
    assert refused.status_code == 401
    assert refused.headers["X-Request-Id"] == "r-1"
