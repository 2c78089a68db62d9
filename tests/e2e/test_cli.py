"""`visionq submit` against the real stack, as a user would run it."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import CORPUS, KEYS, Stack


def _submit(stack: Stack, *args: str, key: str = KEYS["alice"]) -> subprocess.CompletedProcess:
    env = dict(stack.env, VISIONQ_URL=stack.base_url, VISIONQ_KEY=key)
    return subprocess.run(
        [sys.executable, "-m", "visionq", "submit", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_submit_wait_prints_the_answer(stack: Stack) -> None:
    done = _submit(
        stack,
        str(CORPUS / "good/hopper.jpg"),
        str(CORPUS / "good/hopper.png"),
        "--prompt",
        "describe both",
        "--wait",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("simulator saw 2 image(s): #1 jpeg")
    assert "text: describe both" in done.stdout


def test_submit_without_wait_prints_the_queued_job(stack: Stack) -> None:
    done = _submit(stack, str(CORPUS / "good/hopper.gif"), "--prompt", "x", "--json")
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["status"] in ("queued", "running", "succeeded")
    assert stack.wait(job["id"])["status"] == "succeeded"


def test_submit_failed_job_exits_non_zero(stack: Stack) -> None:
    done = _submit(stack, str(CORPUS / "bad/truncated_jpeg.jpg"), "--prompt", "x", "--wait")
    assert done.returncode == 1
    assert "invalid_image" in done.stderr


def test_submit_refused_request_exits_non_zero(stack: Stack) -> None:
    done = _submit(stack, str(CORPUS / "other/hopper.tif"), "--prompt", "x")
    assert done.returncode == 1
    assert "415 unsupported_media_type" in done.stderr


def test_submit_with_a_wrong_key_exits_non_zero(stack: Stack) -> None:
    done = _submit(stack, str(CORPUS / "good/hopper.jpg"), "--prompt", "x", key="nope")
    assert done.returncode == 1
    assert "401 unauthorized" in done.stderr
