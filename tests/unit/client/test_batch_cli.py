"""`visionq batch` run as a user runs it, against the recording stand-in API of
test_batches: the progress on stderr (a bar redrawn on a terminal, plain lines piped),
results written at the end, and the exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import run_on_terminal
from tests.support.servers import serving, wsgi_server
from tests.unit.client.test_batches import StandIn, _batch

COUNTS = {"total": 2, "completed": 0, "failed": 0}
LINE = {
    "id": "batch_req_1",
    "custom_id": "a.png",
    "response": {"status_code": 200, "request_id": "job_1", "body": {"choices": []}},
    "error": None,
}


@pytest.fixture
def api() -> Iterator[tuple[StandIn, dict[str, str]]]:
    stand_in = StandIn()
    with serving(wsgi_server(stand_in.app)) as url:
        yield stand_in, dict(os.environ, VISIONQ_URL=url, VISIONQ_KEY="k")


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "visionq", "batch", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _images(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"\x89PNG a")
    (folder / "b.png").write_bytes(b"\x89PNG b")
    return folder


def _runs_then(stand_in: StandIn, last: dict[str, Any]) -> None:
    stand_in.contents["file-out"] = json.dumps(LINE).encode() + b"\n"
    stand_in.states = [
        _batch("in_progress", request_counts=COUNTS),
        _batch("in_progress", request_counts=COUNTS | {"completed": 1}),
        last,
    ]


def test_create_wait_piped_writes_plain_progress_and_the_results(
    api: tuple[StandIn, dict[str, str]], tmp_path: Path
) -> None:
    stand_in, env = api
    _runs_then(
        stand_in,
        _batch("completed", request_counts=COUNTS | {"completed": 2}, output_file_id="file-out"),
    )
    out = tmp_path / "results.jsonl"
    done = _run(env, "create", str(_images(tmp_path)), "--prompt", "x", "--wait", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "\x1b" not in done.stderr
    lines = done.stderr.splitlines()
    # Piped, the 1/2 two seconds in waits for the next 5 s mark; the end is a line at once.
    steps = [line.split("] ")[1].split(" ")[:2] for line in lines[:-1]]
    assert steps == [
        ["uploading", "0/2"],
        ["uploading", "2/2"],
        ["in_progress", "0/2"],
        ["completed", "2/2"],
    ], done.stderr
    assert "completed 2/2 100.0%" in lines[-2] and lines[-1] == f"1 results written to {out}"
    assert [json.loads(line) for line in out.read_text().splitlines()] == [LINE]
    assert done.stdout == ""


def test_on_a_terminal_the_bar_is_redrawn_and_results_go_to_stdout(
    api: tuple[StandIn, dict[str, str]], tmp_path: Path
) -> None:
    stand_in, env = api
    _runs_then(
        stand_in,
        _batch("completed", request_counts=COUNTS | {"completed": 2}, output_file_id="file-out"),
    )
    args = [sys.executable, "-m", "visionq", "batch", "watch", "batch_1"]
    code, drawn, stdout = run_on_terminal(args, env)
    assert code == 0, drawn
    assert b"\r\x1b[Kin_progress [############............] 1/2 50.0%" in drawn, drawn
    assert b"\r\x1b[Kcompleted [########################] 2/2 100.0%" in drawn, drawn
    assert drawn.endswith(b"\r\n")  # the bar's line is ended before the process ends
    assert [json.loads(line) for line in stdout.splitlines()] == [LINE]


def test_a_cancelled_batch_exits_1_with_the_reason_after_its_results(
    api: tuple[StandIn, dict[str, str]],
) -> None:
    stand_in, env = api
    counts = COUNTS | {"completed": 1, "canceled": 1}
    _runs_then(stand_in, _batch("cancelled", request_counts=counts, output_file_id="file-out"))
    done = _run(env, "watch", "batch_1")
    assert done.returncode == 1
    assert [json.loads(line) for line in done.stdout.splitlines()] == [LINE]
    assert done.stderr.splitlines()[-1] == (
        "error: batch_1 cancelled 2/2 lines (1 completed, 0 failed, 1 canceled): "
        "cancelled with 2 of 2 lines done"
    )


def test_results_of_a_running_batch_exit_3_and_bad_arguments_exit_2(
    api: tuple[StandIn, dict[str, str]], tmp_path: Path
) -> None:
    stand_in, env = api
    stand_in.states = [_batch("in_progress", request_counts=COUNTS)]
    early = _run(env, "results", "batch_1")
    assert early.returncode == 3
    assert early.stderr == "error: batch_1 is in_progress: its results come once it has ended\n"
    shown = _run(env, "get", "batch_1")
    assert (shown.returncode, shown.stdout) == (
        0,
        "batch_1 in_progress 0/2 lines (0 completed, 0 failed)\n",
    )
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("{}\n")
    mixed = _run(env, "create", str(jsonl), "--prompt", "x")
    assert mixed.returncode == 2 and "--prompt" in mixed.stderr
    assert _run(env, "create", str(_images(tmp_path))).returncode == 2  # no --prompt
    assert _run(env, "create", str(tmp_path / "nothing")).returncode == 2
    assert stand_in.uploads == []  # nothing was sent for any of them
