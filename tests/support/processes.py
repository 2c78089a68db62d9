"""Child processes of a test: started with their output in a log file, stopped politely."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

from visionq.dev import ports
from visionq.dev.processes import stop_process


class Process:
    """A `python -m visionq` child whose output goes to a log file, shown when a test fails."""

    def __init__(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        logs: Path,
        log_name: str | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.args = args
        self.log_path = logs / f"{log_name or name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "visionq", *args],
            env=env,
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        stop_process(self.popen, grace=20)
        self._log.close()

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def wait_for_http(url: str, process: Process, timeout: float = 30.0) -> None:
    """Return once `url` answers; if the process ends first, raise with its last lines."""
    try:
        ports.wait_for_http(url, process.popen, timeout)
    except RuntimeError as exc:
        raise RuntimeError(f"{process.name}: {exc}\n{process.tail()}") from None


def run_on_terminal(args: list[str], env: dict[str, str]) -> tuple[int, bytes, bytes]:
    """Run a command with its stderr on a pseudo-terminal (as a person at a terminal sees
    it) and its stdout piped; its exit status, what it drew, and what it printed."""
    controller, terminal = pty.openpty()
    with subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=terminal, stdin=subprocess.DEVNULL
    ) as child:
        os.close(terminal)
        drawn = bytearray()
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the child closed the terminal's last end
                break
            if not chunk:
                break
            drawn += chunk
        stdout = child.stdout.read() if child.stdout else b""
    os.close(controller)
    return child.returncode, bytes(drawn), stdout
