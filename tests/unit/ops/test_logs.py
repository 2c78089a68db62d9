"""The log format and the context that names a line's job, without a running stack."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator

import pytest

from visionq.ops import logs
from visionq.settings import Settings


@pytest.fixture
def root() -> Iterator[None]:
    """`configure` replaces the root logger's handlers: put pytest's back afterwards."""
    logger = logging.getLogger()
    handlers, level = logger.handlers[:], logger.level
    yield
    logger.handlers, logger.level = handlers, level
    logging.captureWarnings(False)


def _emit(capsys: pytest.CaptureFixture[str], log_format: str, *calls: object) -> list[str]:
    logs.configure(Settings(log_format=log_format, log_level="info"))
    for call in calls:
        call()  # type: ignore[operator]
    return capsys.readouterr().err.splitlines()


def test_a_line_is_one_json_object_with_its_context(
    root: None, capsys: pytest.CaptureFixture[str]
) -> None:
    log = logging.getLogger("visionq.test")

    def inside() -> None:
        with logs.context(job_id="job_1", stage="prepare", tenant=None):
            logs.bind(attempt=2)
            log.info("step %s", "done", extra={"images": 3})
            log.info("own", extra={"stage": "mine"})
        log.info("after")

    first, second, after = (json.loads(line) for line in _emit(capsys, "json", inside))
    assert first["message"] == "step done"
    assert (first["level"], first["logger"], first["images"]) == ("INFO", "visionq.test", 3)
    assert (first["job_id"], first["stage"], first["attempt"]) == ("job_1", "prepare", 2)
    assert "tenant" not in first  # None is left out
    assert first["time"].endswith("+00:00")
    assert second["stage"] == "mine"  # a line's own extra wins
    assert not {"job_id", "stage", "attempt"} & set(after)  # the block's end clears all


def test_below_the_level_nothing_is_written(root: None, capsys: pytest.CaptureFixture[str]) -> None:
    log = logging.getLogger("visionq.test")
    assert _emit(capsys, "json", lambda: log.debug("hidden")) == []


def test_threads_do_not_see_each_others_context(
    root: None, capsys: pytest.CaptureFixture[str]
) -> None:
    log = logging.getLogger("visionq.test")
    inside, release = threading.Event(), threading.Event()

    def holder() -> None:
        with logs.context(job_id="job_a"):
            inside.set()
            release.wait(5)

    def other() -> None:
        thread = threading.Thread(target=holder)
        thread.start()
        inside.wait(5)
        log.info("from another thread")
        release.set()
        thread.join()

    (line,) = (json.loads(line) for line in _emit(capsys, "json", other))
    assert "job_id" not in line


def test_the_text_format_shows_the_context(root: None, capsys: pytest.CaptureFixture[str]) -> None:
    log = logging.getLogger("visionq.test")

    def inside() -> None:
        with logs.context(request_id="r1", job_id="job_1"):
            log.warning("slow")

    (line,) = _emit(capsys, "text", inside)
    assert line.endswith("WARNING visionq.test: slow [request_id=r1 job_id=job_1]")
