"""`client.files`, `client.batches` and `visionq batch` against the real stack: files in and
out, batches from images (deduplicated by content) and from JSONL, waiting with progress,
cancel, list, and the results as typed lines and as a JSONL file."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import CORPUS, KEYS, Stack, data_url
from tests.support.processes import run_on_terminal
from visionq.client import ApiError, Batch, BatchNotEnded, Client, FileObject
from visionq.client._batches import image_line

JPEG = CORPUS / "good" / "hopper.jpg"
PNG = CORPUS / "good" / "hopper.png"
GIF = CORPUS / "good" / "hopper.gif"


@pytest.fixture
def client(stack: Stack) -> Iterator[Client]:
    with Client(stack.base_url, KEYS["alice"]) as http:
        yield http


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Four image paths, three contents: `sub/again.jpg` is a copy of `a.jpg`."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    shutil.copy(JPEG, root / "a.jpg")
    shutil.copy(PNG, root / "b.png")
    shutil.copy(GIF, root / "sub" / "c.gif")
    shutil.copy(JPEG, root / "sub" / "again.jpg")
    (root / "notes.txt").write_text("not an image")
    return root


def _jsonl(tmp_path: Path, lines: list[dict[str, Any]], name: str = "in.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _line(custom_id: str, prompt: str, image: Path = JPEG) -> dict[str, Any]:
    return image_line(custom_id, data_url(image), prompt)


def _cli(stack: Stack, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = dict(stack.env, VISIONQ_URL=stack.base_url, VISIONQ_KEY=KEYS["alice"])
    return subprocess.run(
        [sys.executable, "-m", "visionq", "batch", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_file_goes_up_comes_back_and_goes_away(client: Client) -> None:
    uploaded = client.files.create(PNG, "vision")
    assert isinstance(uploaded, FileObject) and uploaded.id.startswith("file-")
    assert (uploaded.purpose, uploaded.filename, uploaded.bytes) == (
        "vision",
        "hopper.png",
        PNG.stat().st_size,
    )
    assert client.files.get(uploaded.id) == uploaded
    assert uploaded.id in {f.id for f in client.files.list("vision")}
    assert b"".join(client.files.content(uploaded.id)) == PNG.read_bytes()
    client.files.delete(uploaded.id)
    with pytest.raises(ApiError) as missing:
        client.files.get(uploaded.id)
    assert missing.value.status == 404


def test_a_batch_of_images_uploads_each_content_once_and_answers_every_path(
    client: Client, folder: Path, tmp_path: Path
) -> None:
    uploads: list[tuple[int, int]] = []
    batch = client.batches.create_from_images(
        [folder], "describe it", on_upload=lambda done, total: uploads.append((done, total))
    )
    assert uploads[-1] == (3, 3)  # four paths, three contents
    looks: list[Batch] = []
    done = client.batches.wait(batch.id, on_progress=looks.append, interval=0.5, timeout=120)
    assert done.status == "completed", done.raw
    assert looks[-1] == done and done.request_counts.total == 4
    assert (done.request_counts.completed, done.request_counts.failed) == (4, 0)
    results = {r.custom_id: r for r in client.batches.results(batch.id)}
    assert sorted(results) == ["a.jpg", "b.png", "sub/again.jpg", "sub/c.gif"]
    assert all(r.ok and r.content for r in results.values())
    content = results["sub/c.gif"].content or ""
    assert content.startswith("simulator saw 1 image(s): #1 gif") and "describe it" in content
    # The copy's line names the same uploaded file as the original's.
    inputs = [
        json.loads(line) for line in b"".join(client.files.content(done.input_file_id)).splitlines()
    ]
    urls = {
        line["custom_id"]: line["body"]["messages"][-1]["content"][0]["image_url"]["url"]
        for line in inputs
    }
    assert urls["a.jpg"] == urls["sub/again.jpg"] != urls["b.png"]
    assert all(url.startswith("file-") for url in urls.values())
    out = tmp_path / "results.jsonl"
    assert client.batches.download_results(batch.id, out) == 4
    assert {json.loads(line)["custom_id"] for line in out.read_text().splitlines()} == set(urls)


def test_failed_lines_come_after_the_output_lines(client: Client, tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path,
        [_line("good", "fine"), _line("bad", "[sim:status=400]"), _line("also", "fine too")],
    )
    batch = client.batches.create_from_jsonl(path, metadata={"run": "mixed"})
    assert batch.metadata == {"run": "mixed"}
    done = client.batches.wait(batch.id, interval=0.5, timeout=120)
    assert done.status == "completed"
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 1)
    assert done.output_file_id and done.error_file_id
    results = list(client.batches.results(batch.id))
    assert [r.custom_id for r in results] == ["good", "also", "bad"]
    assert results[2].error is not None and results[2].error.code == "upstream_bad_request"
    assert results[0].raw["response"]["body"]["object"] == "chat.completion"


def test_a_file_that_breaks_the_rules_fails_the_batch_with_line_numbers(
    client: Client, tmp_path: Path
) -> None:
    path = _jsonl(tmp_path, [_line("same", "x"), _line("same", "y")])
    done = client.batches.wait(client.batches.create_from_jsonl(path).id, interval=0.5, timeout=60)
    assert done.status == "failed" and done.finished
    assert done.errors and done.errors[0].line == 2
    assert done.reason is not None and "line 2" in done.reason
    assert list(client.batches.results(done.id)) == []


def test_cancel_stops_the_batch_and_its_unfinished_lines(client: Client, tmp_path: Path) -> None:
    path = _jsonl(tmp_path, [_line(f"slow-{n}", "[sim:latency=20]") for n in range(6)])
    batch = client.batches.create_from_jsonl(path)
    with pytest.raises(BatchNotEnded):
        client.batches.results(batch.id)
    deadline = time.monotonic() + 30
    while client.batches.get(batch.id).status == "validating":  # its lines must be running
        assert time.monotonic() < deadline
        time.sleep(0.1)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled")
    done = client.batches.wait(batch.id, interval=0.5, timeout=120)
    assert done.status == "cancelled" and done.cancelled_at is not None
    counts = done.request_counts
    assert counts.done == counts.total == 6 and counts.completed < 6
    stopped = [r for r in client.batches.results(batch.id) if not r.ok]
    assert stopped and {r.error.code for r in stopped if r.error} == {"batch_cancelled"}


def test_batches_are_listed_newest_first(client: Client, tmp_path: Path) -> None:
    ids = [
        client.batches.create_from_jsonl(_jsonl(tmp_path, [_line("one", f"list {n}")])).id
        for n in range(3)
    ]
    listed = [b.id for b in client.batches.list(limit=3, page_size=2)]
    assert listed == ids[::-1]
    for batch_id in ids:
        client.batches.wait(batch_id, interval=0.5, timeout=60)


def test_the_cli_creates_waits_and_writes_the_results(
    stack: Stack, folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    done = _cli(stack, "create", str(folder), "--prompt", "describe", "--wait", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "\x1b" not in done.stderr  # piped: plain lines
    assert re.search(r"\] uploading 3/3 100\.0%", done.stderr), done.stderr
    assert re.search(r"\] completed 4/4 100\.0%", done.stderr), done.stderr
    assert done.stderr.splitlines()[-1] == f"4 results written to {out}"
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(line["custom_id"] for line in lines) == [
        "a.jpg",
        "b.png",
        "sub/again.jpg",
        "sub/c.gif",
    ]
    assert all(line["response"]["status_code"] == 200 for line in lines)


def test_the_cli_get_list_results_and_cancel(stack: Stack, client: Client, tmp_path: Path) -> None:
    created = _cli(stack, "create", str(_jsonl(tmp_path, [_line("x", "cli")])), "--json")
    assert created.returncode == 0, created.stderr
    batch_id = json.loads(created.stdout)["id"]
    client.batches.wait(batch_id, interval=0.5, timeout=60)
    shown = _cli(stack, "get", batch_id)
    assert shown.stdout == f"{batch_id} completed 1/1 lines (1 completed, 0 failed)\n"
    table = _cli(stack, "list", "--limit", "1")
    header, row = table.stdout.splitlines()
    assert header.split() == ["ID", "STATUS", "CREATED", "DONE", "TOTAL", "FAILED"]
    assert row.split()[:2] == [batch_id, "completed"]
    results = _cli(stack, "results", batch_id)
    assert [json.loads(line)["custom_id"] for line in results.stdout.splitlines()] == ["x"]
    slow = _jsonl(tmp_path, [_line("s", "[sim:latency=20]")], "slow.jsonl")
    pending = json.loads(_cli(stack, "create", str(slow), "--json").stdout)["id"]
    early = _cli(stack, "results", pending)
    assert early.returncode == 3 and "results come once it has ended" in early.stderr
    cancel = _cli(stack, "cancel", pending)
    assert cancel.returncode == 0 and cancel.stdout.startswith(f"{pending} cancel")
    watched = _cli(stack, "watch", pending)
    assert watched.returncode == 1
    assert watched.stderr.splitlines()[-1].startswith(f"error: {pending} cancelled")
    missing = _cli(stack, "get", "batch_doesnotexist")
    assert missing.returncode == 3 and missing.stderr.startswith("error: 404 ")


def test_the_cli_draws_a_bar_on_a_terminal(stack: Stack, tmp_path: Path) -> None:
    path = _jsonl(tmp_path, [_line(f"n{n}", "[sim:latency=1]") for n in range(4)])
    env = dict(stack.env, VISIONQ_URL=stack.base_url, VISIONQ_KEY=KEYS["alice"])
    args = [sys.executable, "-m", "visionq", "batch", "create", str(path), "--wait"]
    code, drawn, stdout = run_on_terminal(args, env)
    assert code == 0, drawn
    assert re.search(rb"\r\x1b\[K(validating|in_progress) ", drawn), drawn
    assert b"\r\x1b[Kcompleted [########################] 4/4 100.0%" in drawn, drawn
    assert len(stdout.splitlines()) == 4
