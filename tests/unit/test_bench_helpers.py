"""The pure parts of benchmarks B3 and B4: reading the workers' log lines into a per-job
timeline, and per-process CPU and memory from /proc."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from bench.e2e import STAGES, _log_times, _stages
from bench.scaleout import _children, _cpu_seconds, _rss_mib


def _line(at: float, message: str, **extra: object) -> str:
    when = datetime.fromtimestamp(at, tz=UTC).isoformat()
    return json.dumps({"time": when, "level": "INFO", "message": message, **extra})


def test_log_times_and_stages_make_one_timeline(tmp_path: Path) -> None:
    t = 1_700_000_000.0
    (tmp_path / "worker-prepare-0.log").write_text(
        "a plain line Celery printed\n"
        + _line(t + 0.010, "prepared 1 images, 300 image tokens", job_id="j1")
        + "\n"
        + _line(t + 0.011, "no job here")
        + "\n"
    )
    (tmp_path / "worker-upstream-0.log").write_text(
        _line(t + 0.020, "upstream answered 200 in 0.005 s", job_id="j1", duration=0.005)
        + "\n"
        + _line(t + 0.021, "job succeeded", job_id="j1")
        + "\n"
    )
    logged = _log_times(tmp_path)
    assert set(logged) == {"j1"}
    assert abs(logged["j1"]["prepared"] - (t + 0.010)) < 1e-5
    assert abs(logged["j1"]["call_start"] - (t + 0.015)) < 1e-5
    sample = {
        "submitted": t,
        "done": t + 0.030,
        "job": {"created_at": t + 0.002, "started_at": t + 0.004, "completed_at": t + 0.022},
    }
    stages = _stages(sample, logged["j1"])
    assert list(stages) == list(STAGES)
    expected = [0.002, 0.002, 0.006, 0.005, 0.005, 0.002, 0.008]
    assert [round(v, 4) for v in stages.values()] == expected
    assert abs(sum(stages.values()) - 0.030) < 1e-6  # the stages cover the whole time


def test_proc_figures_of_a_child_process() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time\nwhile time.process_time() < 0.3: pass\ninput()"],
        stdin=subprocess.PIPE,
    )
    try:
        while _cpu_seconds(child.pid) < 0.25:
            pass
        assert child.pid in _children(os.getpid())
        assert _rss_mib(child.pid) > 1
    finally:
        child.communicate(b"\n", timeout=10)
    assert _cpu_seconds(child.pid) == 0.0  # gone: nothing to read
    assert _rss_mib(child.pid) == 0.0
