"""The client commands of `visionq` against the real stack, run as a user would run them.

Each subcommand with its human and `--json` output, each exit code of `visionq submit
--help`, and the progress line: on stderr only when stderr is a terminal (a pty here).
The server commands' help is checked too, because it is where an operator reads what
each process does.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support import CORPUS, KEYS, Stack, data_url
from tests.support.processes import run_on_terminal
from visionq.broker import default_concurrency
from visionq.client import Client
from visionq.dev.ports import free_port

JPEG = str(CORPUS / "good" / "hopper.jpg")
PNG = str(CORPUS / "good" / "hopper.png")


def _env(stack: Stack, key: str) -> dict[str, str]:
    return dict(stack.env, VISIONQ_URL=stack.base_url, VISIONQ_KEY=key)


def _cli(stack: Stack, *args: str, key: str = KEYS["alice"]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "visionq", *args],
        env=_env(stack, key),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def client(stack: Stack) -> Iterator[Client]:
    with Client(stack.base_url, KEYS["alice"]) as http:
        yield http


def _finished_job(client: Client, prompt: str = "done") -> str:
    return client.wait(client.submit([data_url(CORPUS / "good" / "hopper.jpg")], prompt).id).id


def test_submit_wait_prints_the_answer(stack: Stack) -> None:
    done = _cli(stack, "submit", JPEG, PNG, "--prompt", "describe both", "--wait")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("simulator saw 2 image(s): #1 jpeg")
    assert "text: describe both" in done.stdout
    assert done.stderr == ""  # no progress line: stderr is not a terminal


def test_submit_without_wait_prints_the_queued_job(stack: Stack) -> None:
    done = _cli(stack, "submit", str(CORPUS / "good/hopper.gif"), "--prompt", "x", "--json")
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["status"] in ("queued", "running", "succeeded")
    assert stack.wait(job["id"])["status"] == "succeeded"
    human = _cli(stack, "submit", JPEG, "--prompt", "x")
    assert re.fullmatch(r"job_\w+ (queued|running|succeeded)\n", human.stdout), human.stdout


def test_a_failed_job_exits_1(stack: Stack) -> None:
    done = _cli(stack, "submit", str(CORPUS / "bad/truncated_jpeg.jpg"), "--prompt", "x", "--wait")
    assert done.returncode == 1
    assert re.match(r"job_\w+ failed: invalid_image: ", done.stderr), done.stderr
    assert done.stdout == ""


def test_a_refused_request_exits_3(stack: Stack) -> None:
    done = _cli(stack, "submit", str(CORPUS / "other/hopper.tif"), "--prompt", "x")
    assert done.returncode == 3
    assert done.stderr.startswith("error: 415 unsupported_media_type: ")


def test_a_wrong_key_exits_3_and_is_not_printed(stack: Stack) -> None:
    done = _cli(stack, "submit", JPEG, "--prompt", "x", key="nope-secret-key")
    assert done.returncode == 3
    assert done.stderr.startswith("error: 401 unauthorized: ")
    assert "nope-secret-key" not in done.stdout + done.stderr


def test_usage_errors_exit_2(stack: Stack) -> None:
    assert _cli(stack, "submit", JPEG).returncode == 2  # no --prompt
    assert _cli(stack, "list", "--limit", "0").returncode == 2
    missing = _cli(stack, "submit", str(CORPUS / "good/missing.png"), "--prompt", "x")
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: ") and "missing.png" in missing.stderr


def test_no_service_exits_4(stack: Stack) -> None:
    done = _cli(stack, "get", "job_x", "--url", f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 4
    assert done.stderr.startswith("error: unreachable: cannot connect to http://127.0.0.1:")


def test_waiting_too_long_exits_5(stack: Stack, client: Client) -> None:
    done = _cli(stack, "submit", JPEG, "--prompt", "[sim:latency=15]", "--wait", "--timeout", "1")
    assert done.returncode == 5
    found = re.match(
        r"error: timed out after 1s waiting for (job_\w+) (queued|running)", done.stderr
    )
    assert found, done.stderr
    client.cancel(found[1])


def test_get_human_json_and_not_found(stack: Stack, client: Client) -> None:
    job_id = _finished_job(client, "get me")
    human = _cli(stack, "get", job_id)
    assert human.returncode == 0, human.stderr
    assert human.stdout.startswith("simulator saw 1 image(s)") and "text: get me" in human.stdout
    as_json = _cli(stack, "get", job_id, "--json")
    assert json.loads(as_json.stdout) == client.get(job_id).raw
    missing = _cli(stack, "get", "job_doesnotexist")
    assert missing.returncode == 3
    assert missing.stderr.startswith("error: 404 not_found: ")


def test_get_wait_follows_the_job(stack: Stack, client: Client) -> None:
    job = client.submit([data_url(CORPUS / "good" / "hopper.png")], "[sim:latency=1] later")
    done = _cli(stack, "get", job.id, "--wait", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "succeeded"


def test_list_table_json_and_status(stack: Stack, client: Client) -> None:
    newest = _finished_job(client, "listed")
    table = _cli(stack, "list", "--limit", "3")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["ID", "STATUS", "MODEL", "CREATED", "IMAGES", "TOKENS"]
    assert len(rows) == 3
    assert rows[0].split()[:3] == [newest, "succeeded", "mimo-v2.5"]
    as_json = _cli(stack, "list", "--status", "succeeded", "--limit", "2", "--json")
    jobs = json.loads(as_json.stdout)
    assert len(jobs) == 2 and {job["status"] for job in jobs} == {"succeeded"}


def test_cancel_then_get_exits_1_and_a_finished_job_is_a_conflict(
    stack: Stack, client: Client
) -> None:
    job = client.submit([data_url(CORPUS / "good" / "hopper.png")], "[sim:latency=15]")
    canceled = _cli(stack, "cancel", job.id)
    assert (canceled.returncode, canceled.stdout) == (0, f"{job.id} canceled\n")
    shown = _cli(stack, "get", job.id)
    assert shown.returncode == 1
    assert shown.stderr == f"{job.id} canceled: canceled by the client\n"
    finished = _finished_job(client)
    conflict = _cli(stack, "cancel", finished, "--json")
    assert conflict.returncode == 3
    assert conflict.stderr.startswith("error: 409 conflict: ")


def test_delete_human_and_json(stack: Stack, client: Client) -> None:
    first, second = _finished_job(client), _finished_job(client)
    deleted = _cli(stack, "delete", first)
    assert (deleted.returncode, deleted.stdout) == (0, f"{first} deleted\n")
    assert _cli(stack, "get", first).returncode == 3
    as_json = _cli(stack, "delete", second, "--json")
    assert json.loads(as_json.stdout) == {"id": second, "object": "job", "deleted": True}
    assert _cli(stack, "delete", second).stderr.startswith("error: 404 not_found: ")


def test_watch_shows_each_job_finish_and_exits_1_if_one_failed(
    stack: Stack, client: Client
) -> None:
    good = client.submit([data_url(CORPUS / "good" / "hopper.png")], "[sim:latency=1]")
    bad = client.submit([data_url(CORPUS / "good" / "hopper.png")], "[sim:status=400]")
    done = _cli(stack, "watch", good.id, bad.id)
    assert done.returncode == 1, done.stderr
    lines = [line.split(None, 1)[1] for line in done.stdout.splitlines()]
    assert f"{good.id} succeeded" in lines
    assert any(line.startswith(f"{bad.id} failed: upstream_bad_request: ") for line in lines)
    as_json = _cli(stack, "watch", good.id, "--json")
    assert as_json.returncode == 0
    assert [job["id"] for job in json.loads(as_json.stdout)] == [good.id]


def test_tokens_per_image_and_total(stack: Stack, client: Client) -> None:
    human = _cli(stack, "tokens", JPEG, PNG)
    assert human.returncode == 0, human.stderr
    count = client.count_tokens([JPEG, PNG])
    lines = human.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [JPEG, PNG, "total"]
    assert [int(line.split()[-2]) for line in lines] == [
        *(i.image_tokens for i in count.images),
        count.image_tokens,
    ]
    assert json.loads(_cli(stack, "tokens", JPEG, PNG, "--json").stdout) == count.raw
    refused = _cli(stack, "tokens", "https://example.com/a.png")
    assert refused.returncode == 3
    assert refused.stderr.startswith("error: 400 invalid_request: ")


def test_the_progress_line_is_drawn_only_on_a_terminal(stack: Stack) -> None:
    args = [sys.executable, "-m", "visionq", "submit", JPEG, "--prompt", "[sim:latency=2]"]
    code, drawn, stdout = run_on_terminal([*args, "--wait"], _env(stack, KEYS["alice"]))
    assert code == 0, drawn
    assert stdout.startswith(b"simulator saw 1 image(s)")
    assert re.search(rb"\r\x1b\[Kjob_\w+ (queued|running)  \d+\.\ds", drawn), drawn
    assert drawn.endswith(b"\r\x1b[K")  # the line is cleared before the answer


def _help(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "visionq", *args, "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return " ".join(done.stdout.split())


def test_the_server_commands_help_names_every_queue_and_sweeper_duty() -> None:
    worker = _help("worker")
    for queue, size in default_concurrency().items():
        assert f"{queue} {size}" in worker
    sweeper = _help()
    for duty in ("queues due webhooks", "lease ran out", "tickets", "removes expired files"):
        assert duty in sweeper
