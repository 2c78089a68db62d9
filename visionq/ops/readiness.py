"""Whether a worker consumes yet: one file per queue's worker, holding its pid.

A worker that has started its pool and its consumer writes its file (Celery's
`worker_ready`); one that stops removes it. The process serving the worker's metrics port
answers `/readyz` from those files, so a Kubernetes readiness probe, `visionq dev` or a
test sends load only once every queue it was asked for has a consumer, not while a
prefork pool is still forking. The pid makes a file left by a killed worker count as not
ready, without anyone having to clean it up first.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path


def mark(path: Path) -> None:
    """This process consumes now."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(str(os.getpid()))
    partial.replace(path)


def clear(path: Path) -> None:
    """This process no longer consumes (a file another process wrote is left alone)."""
    with contextlib.suppress(OSError, ValueError):
        if int(path.read_text()) == os.getpid():
            path.unlink()


def consuming(path: Path) -> bool:
    """Whether the process that wrote `path` still runs."""
    try:
        pid = int(path.read_text())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


def report(files: Mapping[str, Path]) -> dict[str, bool]:
    """Each queue's readiness, by its worker's file."""
    return {queue: consuming(path) for queue, path in files.items()}
