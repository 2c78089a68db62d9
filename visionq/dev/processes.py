"""Stopping a child process of the dev tooling or the tests."""

from __future__ import annotations

import subprocess
from typing import Any


def stop_process(popen: subprocess.Popen[Any], grace: float) -> None:
    """SIGTERM, then SIGKILL if it has not ended within `grace` seconds: a child that hangs
    on its way out must not hang whoever started it."""
    if popen.poll() is not None:
        return
    popen.terminate()
    try:
        popen.wait(grace)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait()
