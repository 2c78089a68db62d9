"""Every file of shared/corpus reaches its expected outcome, uploaded and as a data URL.

`expected.tsv` gives `accepted` or `STATUS type` (`a|b` where either is right). A file
found bad only by a worker must end `failed` with that type instead of an HTTP error.
In every case: no 5xx, and the stack keeps serving (the last test checks that).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from tests.support import CORPUS, Stack, data_url

EXPECTED = [
    tuple(line.split("\t"))
    for line in (CORPUS / "expected.tsv").read_text().splitlines()[1:]
    if line.strip()
]


def _submit(stack: Stack, path: Path, how: str) -> requests.Response:
    if how == "upload":
        return stack.upload([path], {"prompt": "what is this"})
    # Every file is declared image/png, wrongly for most: the service judges from the bytes.
    return stack.submit({"prompt": "what is this", "images": [data_url(path, "image/png")]})


@pytest.fixture(scope="module")
def prepare_log_before(stack: Stack) -> int:
    """Where the prepare worker's log stood before the corpus (earlier tests kill children)."""
    return _prepare_log(stack).stat().st_size


def _prepare_log(stack: Stack) -> Path:
    return next(p for p in stack.processes if p.name == "worker-prepare").log_path


@pytest.fixture(scope="module")
def outcomes(stack: Stack, prepare_log_before: int) -> dict[tuple[str, str], str]:
    """Submit everything first, then collect, so the corpus runs through the queue at once."""
    started = time.monotonic()
    submitted: dict[tuple[str, str], requests.Response] = {}
    for rel, _ in EXPECTED:
        for how in ("upload", "data_url"):
            submitted[(rel, how)] = _submit(stack, CORPUS / rel, how)
    results = {}
    for key, response in submitted.items():
        assert response.status_code < 500, (key, response.text)
        if response.status_code == 202:
            job = stack.wait(response.json()["id"], timeout=120)
            assert job["status"] in ("succeeded", "failed"), (key, job)
            results[key] = (
                "accepted" if job["status"] == "succeeded" else f"job {job['error']['type']}"
            )

        else:
            results[key] = f"{response.status_code} {response.json()['error']['type']}"
    print(
        f"\ncorpus: {len(results)} submissions, every outcome in {time.monotonic() - started:.1f} s"
    )
    return results


@pytest.mark.parametrize("how", ["upload", "data_url"])
@pytest.mark.parametrize(("rel", "expected"), EXPECTED, ids=[rel for rel, _ in EXPECTED])
def test_corpus_file(outcomes: dict, rel: str, expected: str, how: str) -> None:
    got = outcomes[(rel, how)]
    if expected == "accepted":
        assert got == "accepted"
        return
    allowed = set()
    for option in expected.split("|"):
        status, type_ = option.split()
        allowed |= {f"{status} {type_}", f"job {type_}"}
    assert got in allowed


def test_stack_still_serves_after_the_corpus(
    stack: Stack, outcomes: dict, prepare_log_before: int
) -> None:
    assert len(outcomes) == 2 * len(EXPECTED)
    job = stack.run({"prompt": "still there?", "images": [data_url(CORPUS / "good/hopper.png")]})
    assert job["status"] == "succeeded"
    assert all(p.popen.poll() is None for p in stack.processes)
    # Nor was a pool child lost on the way (the parent would have replaced it silently).
    with _prepare_log(stack).open("rb") as log:
        log.seek(prepare_log_before)
        assert b"WorkerLostError" not in log.read()
