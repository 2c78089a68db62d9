"""Workers SIGKILLed while a 2,000-line batch runs: every line ends once, the counts match
the files, and no line is lost or written twice."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.support import Stack

LINES = 2000
KILLS = ("worker-upstream", "worker-prepare", "worker-upstream", "worker-prepare")


def _batch(stack: Stack, image_url: str) -> str:
    body: dict[str, Any] = {
        "model": "mimo-v2.5",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": image_url}},
                    {"type": "text", "text": "[sim:latency=0.3] describe"},
                ],
            }
        ],
    }
    data = b"".join(
        json.dumps(
            {
                "custom_id": f"line-{n}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": body,
            }
        ).encode()
        + b"\n"
        for n in range(LINES)
    )
    with stack.session() as http:
        file = http.post(
            f"{stack.base_url}/v1/files",
            files={"file": ("big.jsonl", data)},
            data={"purpose": "batch"},
            timeout=60,
        ).json()
        batch = http.post(
            f"{stack.base_url}/v1/batches",
            json={
                "input_file_id": file["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
            timeout=60,
        ).json()
    return str(batch["id"])


def _get(stack: Stack, batch_id: str) -> dict[str, Any]:
    with stack.session() as http:
        return dict(http.get(f"{stack.base_url}/v1/batches/{batch_id}", timeout=30).json())


def test_sigkill_of_the_workers_during_a_batch(stack: Stack, image_server: str) -> None:
    batch_id = _batch(stack, f"{image_server}/good/hopper.jpg")
    killed = 0
    deadline = time.monotonic() + 600
    while True:
        batch = _get(stack, batch_id)
        done = batch["request_counts"]["completed"] + batch["request_counts"]["failed"]
        if batch["status"] in ("completed", "failed", "expired", "cancelled"):
            break
        # Kill at a quarter, a half, ... of the way, while lines are in every stage.
        if killed < len(KILLS) and done >= (killed + 1) * LINES // (len(KILLS) + 2):
            stack.kill_and_replace(KILLS[killed])
            killed += 1
        assert time.monotonic() < deadline, f"{batch}\n{stack.logs()}"
        time.sleep(0.2)
    assert killed == len(KILLS), batch
    assert batch["status"] == "completed", batch
    assert batch["request_counts"] == {
        "total": LINES,
        "completed": LINES,
        "failed": 0,
        "canceled": 0,
    }
    with stack.session() as http:
        raw = http.get(
            f"{stack.base_url}/v1/files/{batch['output_file_id']}/content", timeout=60
        ).content
    lines = [json.loads(item) for item in raw.splitlines()]
    assert sorted(line["custom_id"] for line in lines) == sorted(f"line-{n}" for n in range(LINES))
    assert len({line["response"]["request_id"] for line in lines}) == LINES
    assert batch["error_file_id"] is None
